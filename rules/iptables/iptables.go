package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	goipt "github.com/coreos/go-iptables/iptables"

	"github.com/vpnfw/vpnfw/rules"
)

// Flavour is the kernel API an iptables build drives.
type Flavour string

const (
	NFTables Flavour = "nf_tables"
	Legacy   Flavour = "legacy"
)

// toolDirs is where the binary looks for iptables: OpenVPN runs scripts
// without PATH, and a PATH from the environment is not to be trusted anyway.
var toolDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"}

// FindTool returns the absolute path of a system tool.
func FindTool(name string) (string, error) {
	for _, d := range toolDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s; install it (Debian/Ubuntu: apt-get install iptables)", name, strings.Join(toolDirs, ", "))
}

// family holds the tools of one address family.
type family struct {
	fam     rules.Family
	bin     string // iptables or ip6tables of the flavour
	save    string
	restore string
}

// Backend drives one iptables flavour for both address families.
type Backend struct {
	flavour Flavour
	fams    [2]family
	// read caches the last table read of each family until the next write:
	// one invocation reads each table once (detection, tunnels and the jump
	// probe share it), keeping the hook close to the cost of the restore
	// itself. Callers serialise invocations (the hook holds a lock).
	read [2]*snapshot
}

// NewFlavour sets up the backend for one flavour; it runs nothing yet.
func NewFlavour(fl Flavour) (*Backend, error) {
	suffix := "-nft"
	if fl == Legacy {
		suffix = "-legacy"
	}
	b := &Backend{flavour: fl}
	for i, cmd := range []string{"iptables", "ip6tables"} {
		f := family{fam: rules.Family(i)}
		for _, t := range []struct {
			dst  *string
			name string
		}{{&f.bin, cmd + suffix}, {&f.save, cmd + suffix + "-save"}, {&f.restore, cmd + suffix + "-restore"}} {
			p, err := FindTool(t.name)
			if err != nil {
				return nil, err
			}
			*t.dst = p
		}
		b.fams[i] = f
	}
	return b, nil
}

// Detect picks the flavour this host uses: the one already holding our
// chains, else the only one holding other software's chains, else the one
// the system's `iptables` command uses. Mixing flavours would leave two
// firewalls that disagree, so the choice follows what is already there.
func Detect(ctx context.Context) (*Backend, error) {
	var avail []*Backend
	var errs []error
	for _, fl := range []Flavour{NFTables, Legacy} {
		b, err := NewFlavour(fl)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		avail = append(avail, b)
	}
	if len(avail) == 0 {
		return nil, fmt.Errorf("no usable iptables: %w", errors.Join(errs...))
	}
	var inUse []*Backend
	for _, b := range avail {
		// Listing legacy tables creates them, which makes iptables-nft warn
		// about legacy tables forever after; the kernel's list of loaded
		// legacy tables tells without touching anything.
		if b.flavour == Legacy {
			loaded, known := legacyTablesLoaded()
			if !known {
				// Without root (the VPN client's user with CAP_NET_ADMIN) the
				// list is unreadable, and so are the tables: the legacy
				// flavour may hold our chains. Choosing blind could leave two
				// firewalls that disagree; the nf_tables flavour, tried
				// first, did not hold them.
				return nil, errors.New("vpnfw's chains are not in the nf_tables flavour, and whether legacy iptables holds them cannot be told without root (/proc/net/ip_tables_names is unreadable); run vpnfw-hook baseline as root first, or use the nf_tables flavour")
			}
			if !loaded {
				continue
			}
		}
		s, err := b.snapshot(ctx, rules.IPv4)
		if err != nil {
			if b.flavour == Legacy {
				// Its tables are loaded, so they may hold our chains: the
				// same as above.
				return nil, fmt.Errorf("legacy iptables tables are loaded but cannot be read, so the flavour in use cannot be told: %w", err)
			}
			continue
		}
		if _, ok := s.chains[chainNames[rules.Output]]; ok {
			return b, nil
		}
		if len(s.chains) > len(builtinNames) {
			inUse = append(inUse, b)
		}
	}
	if len(inUse) == 1 {
		return inUse[0], nil
	}
	if def := systemFlavour(); def != "" {
		for _, b := range avail {
			if b.flavour == def {
				return b, nil
			}
		}
	}
	return avail[0], nil
}

// legacyTablesLoaded reports whether this network namespace has any legacy
// iptables table; known is false when that cannot be told (the lists are
// readable by root only).
func legacyTablesLoaded() (loaded, known bool) {
	known = true
	for _, f := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		b, err := os.ReadFile(f)
		switch {
		case err == nil && len(bytes.TrimSpace(b)) > 0:
			return true, true
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			known = false
		}
	}
	return false, known
}

// systemFlavour is the flavour of the `iptables` command the administrator
// gets (Debian's alternatives), or "" if it cannot be told.
func systemFlavour() Flavour {
	bin, err := FindTool("iptables")
	if err != nil {
		return ""
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return ""
	}
	if bytes.Contains(out, []byte("nf_tables")) {
		return NFTables
	}
	return Legacy
}

// snapshot is the filter table of one family as iptables-save prints it.
type snapshot struct {
	policies map[string]string   // built-in chain -> policy
	chains   map[string][]string // every chain -> its rules as `iptables -S` lines
}

// snapshot returns the family's filter table, read at most once until the
// next write.
func (b *Backend) snapshot(ctx context.Context, fam rules.Family) (*snapshot, error) {
	if s := b.read[fam]; s != nil {
		return s, nil
	}
	f := b.fams[fam]
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, f.save, "-t", "filter")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: reading the filter table: %v: %s", filepath.Base(f.save), err, strings.TrimSpace(stderr.String()))
	}
	s, err := parseSave(string(out))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(f.save), err)
	}
	b.read[fam] = s
	return s, nil
}

// parseSave reads `iptables-save -t filter` output. Its rule lines are
// printed exactly as `iptables -S` prints them.
func parseSave(text string) (*snapshot, error) {
	s := &snapshot{policies: map[string]string{}, chains: map[string][]string{}}
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("unexpected chain line %q", line)
			}
			s.chains[f[0]] = []string{}
			if f[1] != "-" {
				s.policies[f[0]] = f[1]
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if len(f) < 2 {
				return nil, fmt.Errorf("unexpected rule line %q", line)
			}
			s.chains[f[1]] = append(s.chains[f[1]], line)
		}
	}
	return s, nil
}

// Name implements rules.Backend.
func (b *Backend) Name() string { return fmt.Sprintf("iptables (%s)", b.flavour) }

// Apply implements rules.Backend: one iptables-restore --noflush per family.
// A family that fails does not stop the other: at boot, IPv6 must still be
// closed when IPv4 could not be.
func (b *Backend) Apply(ctx context.Context, rs *rules.Ruleset) error {
	var errs []error
	for _, t := range rs.Tables {
		if err := b.applyTable(ctx, t, rs.Tunnels); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Family, err))
		}
	}
	return errors.Join(errs...)
}

func (b *Backend) applyTable(ctx context.Context, t rules.Table, tunnels []string) error {
	s, err := b.snapshot(ctx, t.Family)
	if err != nil {
		return err
	}
	var jumps [len(rules.Hooks)]jumpState
	for _, h := range rules.Hooks {
		jumps[h] = findJumps(h, s.chains[builtinNames[h]])
	}
	return b.restore(ctx, t.Family, restoreText(t, tunnels, jumps))
}

// findJumps counts our jump among the rules of a built-in chain.
func findJumps(h rules.Hook, lines []string) jumpState {
	want := "-A " + builtinNames[h] + " " + jumpSpec(h)
	var j jumpState
	for i, l := range lines {
		if l == want {
			j.count++
			j.first = j.first || i == 0
		}
	}
	return j
}

// restore runs one transaction and forgets the family's cached read.
func (b *Backend) restore(ctx context.Context, fam rules.Family, text string) error {
	b.read[fam] = nil
	f := b.fams[fam]
	cmd := exec.CommandContext(ctx, f.restore, "--noflush", "--wait=10")
	cmd.Stdin = strings.NewReader(text)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s --noflush failed, nothing of this family was changed: %v: %s",
			filepath.Base(f.restore), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

var tunnelRule = regexp.MustCompile(`^-A VPNFW-OUTPUT -o (\S+) -m comment --comment "vpnfw: tunnel (\S+) out" -j ACCEPT$`)

// Tunnels implements rules.Backend, reading the IPv4 output chain: IPv4
// always carries every allowed tunnel.
func (b *Backend) Tunnels(ctx context.Context) ([]string, error) {
	s, err := b.snapshot(ctx, rules.IPv4)
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, l := range s.chains[chainNames[rules.Output]] {
		m := tunnelRule.FindStringSubmatch(l)
		if m == nil || m[1] != m[2] || rules.ValidIfaceName(m[1]) != nil {
			continue
		}
		devs = append(devs, m[1])
	}
	return devs, nil
}

// Present implements rules.Backend: any chain or jump of ours, in either
// family.
func (b *Backend) Present(ctx context.Context) (bool, error) {
	for _, f := range b.fams {
		s, err := b.snapshot(ctx, f.fam)
		if err != nil {
			return false, fmt.Errorf("%s: %w", f.fam, err)
		}
		for _, h := range rules.Hooks {
			if _, ok := s.chains[chainNames[h]]; ok || findJumps(h, s.chains[builtinNames[h]]).count > 0 {
				return true, nil
			}
		}
	}
	return false, nil
}

// Check implements rules.Backend.
func (b *Backend) Check(ctx context.Context, rs *rules.Ruleset) error {
	for _, t := range rs.Tables {
		s, err := b.snapshot(ctx, t.Family)
		if err != nil {
			return fmt.Errorf("%s: %w", t.Family, err)
		}
		for _, h := range rules.Hooks {
			builtin, own := builtinNames[h], chainNames[h]
			if p := s.policies[builtin]; p != "DROP" {
				return fmt.Errorf("%s: %s policy is %s, expected DROP; run vpnfw-hook baseline", t.Family, builtin, p)
			}
			if r := s.chains[builtin]; len(r) == 0 || r[0] != "-A "+builtin+" "+jumpSpec(h) {
				return fmt.Errorf("%s: the first rule of %s is not the jump to %s; run vpnfw-hook baseline", t.Family, builtin, own)
			}
			live, ok := s.chains[own]
			if !ok {
				return fmt.Errorf("%s: chain %s is missing; run vpnfw-hook baseline", t.Family, own)
			}
			if err := firstDifference(live, ChainRules(t.Family, t.Chains[h], rs.Tunnels)); err != nil {
				return fmt.Errorf("%s: %s: %w; run vpnfw-hook baseline", t.Family, own, err)
			}
		}
	}
	return nil
}

func firstDifference(live, want []string) error {
	for i := range max(len(live), len(want)) {
		switch {
		case i >= len(live):
			return fmt.Errorf("rule %d is missing: %s", i+1, want[i])
		case i >= len(want):
			return fmt.Errorf("unexpected rule %d: %s", i+1, live[i])
		case live[i] != want[i]:
			return fmt.Errorf("rule %d is %s, expected %s", i+1, live[i], want[i])
		}
	}
	return nil
}

var commentRE = regexp.MustCompile(`/\* vpnfw: (.*?) \*/`)

// Status implements rules.Backend, with go-iptables' counters.
func (b *Backend) Status(ctx context.Context) (*rules.Status, error) {
	st := &rules.Status{Backend: b.Name(), Armed: true, Tunnels: []string{}, Rules: []rules.Counter{}}
	// Armed means every packet meets our chains: policies DROP, the jumps
	// first and the chains there, in both families.
	for _, f := range b.fams {
		s, err := b.snapshot(ctx, f.fam)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.fam, err)
		}
		for _, h := range rules.Hooks {
			r := s.chains[builtinNames[h]]
			_, own := s.chains[chainNames[h]]
			if s.policies[builtinNames[h]] != "DROP" || len(r) == 0 || r[0] != "-A "+builtinNames[h]+" "+jumpSpec(h) || !own {
				st.Armed = false
			}
		}
	}
	for i, f := range b.fams {
		proto := goipt.ProtocolIPv4
		if f.fam == rules.IPv6 {
			proto = goipt.ProtocolIPv6
		}
		ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Path(f.bin), goipt.Timeout(10))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.bin, err)
		}
		for _, h := range rules.Hooks {
			own := chainNames[h]
			exists, err := ipt.ChainExists("filter", own)
			if err != nil {
				return nil, fmt.Errorf("%s: probing %s: %w", f.fam, own, err)
			}
			if !exists {
				continue
			}
			stats, err := ipt.StructuredStats("filter", own)
			if err != nil {
				return nil, fmt.Errorf("%s: counters of %s: %w", f.fam, own, err)
			}
			for _, s := range stats {
				purpose := "(not ours)"
				if m := commentRE.FindStringSubmatch(s.Options); m != nil {
					purpose = m[1]
				}
				st.Rules = append(st.Rules, rules.Counter{Family: rules.Family(i).String(), Chain: own, Purpose: purpose,
					Verdict: s.Target, Packets: s.Packets, Bytes: s.Bytes})
			}
		}
	}
	tunnels, err := b.Tunnels(ctx)
	if err != nil {
		return nil, err
	}
	st.Tunnels = append(st.Tunnels, tunnels...)
	st.State = rules.LiveState(st.Armed, tunnels)
	return st, nil
}

// Disarm implements rules.Backend: policies ACCEPT, jumps and chains gone.
func (b *Backend) Disarm(ctx context.Context) error {
	for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
		s, err := b.snapshot(ctx, fam)
		if err != nil {
			return fmt.Errorf("%s: %w", fam, err)
		}
		var t strings.Builder
		// Declaring creates a missing chain, so the -X below always has one.
		declareChains(&t, "ACCEPT")
		for _, h := range rules.Hooks {
			for range findJumps(h, s.chains[builtinNames[h]]).count {
				fmt.Fprintf(&t, "-D %s %s\n", builtinNames[h], jumpSpec(h))
			}
		}
		for _, h := range rules.Hooks {
			fmt.Fprintf(&t, "-X %s\n", chainNames[h])
		}
		t.WriteString("COMMIT\n")
		if err := b.restore(ctx, fam, t.String()); err != nil {
			return fmt.Errorf("%s: %w", fam, err)
		}
	}
	return nil
}
