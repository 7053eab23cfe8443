package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
	ipt     *goipt.IPTables
	restore string // absolute path of iptables-restore or ip6tables-restore
}

// Backend drives one iptables flavour for both address families.
type Backend struct {
	flavour Flavour
	fams    [2]family
}

// NewFlavour sets up the backend for one flavour.
func NewFlavour(fl Flavour) (*Backend, error) {
	suffix := "-nft"
	if fl == Legacy {
		suffix = "-legacy"
	}
	b := &Backend{flavour: fl}
	for i, f := range []struct {
		cmd   string
		proto goipt.Protocol
	}{{"iptables", goipt.ProtocolIPv4}, {"ip6tables", goipt.ProtocolIPv6}} {
		bin, err := FindTool(f.cmd + suffix)
		if err != nil {
			return nil, err
		}
		restore, err := FindTool(f.cmd + suffix + "-restore")
		if err != nil {
			return nil, err
		}
		ipt, err := goipt.New(goipt.IPFamily(f.proto), goipt.Path(bin), goipt.Timeout(10))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", bin, err)
		}
		b.fams[i] = family{ipt: ipt, restore: restore}
	}
	return b, nil
}

// Detect picks the flavour this host uses: the one already holding our
// chains, else the only one holding other software's chains, else the one
// the system's `iptables` command uses. Mixing flavours would leave two
// firewalls that disagree, so the choice follows what is already there.
func Detect() (*Backend, error) {
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
		if b.flavour == Legacy && !legacyTablesLoaded() {
			continue
		}
		chains, err := b.fams[0].ipt.ListChains("filter")
		if err != nil {
			continue
		}
		if slices.Contains(chains, chainNames[rules.Output]) {
			return b, nil
		}
		if len(chains) > len(builtinNames) {
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
// iptables table.
func legacyTablesLoaded() bool {
	for _, f := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		if b, err := os.ReadFile(f); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return true
		}
	}
	return false
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

// Name implements rules.Backend.
func (b *Backend) Name() string { return fmt.Sprintf("iptables (%s)", b.flavour) }

// Flavour is the flavour this backend drives.
func (b *Backend) Flavour() Flavour { return b.flavour }

// Render implements rules.Backend.
func (b *Backend) Render(rs *rules.Ruleset) string { return Render(rs) }

// Apply implements rules.Backend: one iptables-restore --noflush per family.
func (b *Backend) Apply(ctx context.Context, rs *rules.Ruleset) error {
	for i, t := range rs.Tables {
		fam := b.fams[i]
		var jumps [len(rules.Hooks)]jumpState
		for _, h := range rules.Hooks {
			lines, err := fam.ipt.List("filter", builtinNames[h])
			if err != nil {
				return fmt.Errorf("%s: listing %s: %w", t.Family, builtinNames[h], err)
			}
			jumps[h] = findJumps(h, lines)
		}
		if err := b.restore(ctx, fam, restoreText(t, jumps)); err != nil {
			return fmt.Errorf("%s: %w", t.Family, err)
		}
	}
	return nil
}

// findJumps reads `iptables -S BUILTIN` output, whose first line is the policy.
func findJumps(h rules.Hook, lines []string) jumpState {
	want := "-A " + builtinNames[h] + " " + jumpSpec(h)
	var j jumpState
	for i, l := range lines {
		if l == want {
			j.count++
			j.first = j.first || i == 1
		}
	}
	return j
}

func (b *Backend) restore(ctx context.Context, fam family, text string) error {
	cmd := exec.CommandContext(ctx, fam.restore, "--noflush", "--wait=10")
	cmd.Stdin = strings.NewReader(text)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s --noflush failed, nothing of this family was changed: %v: %s",
			filepath.Base(fam.restore), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

var tunnelRule = regexp.MustCompile(`^-A VPNFW-OUTPUT -o (\S+) -m comment --comment "vpnfw: tunnel (\S+) out" -j ACCEPT$`)

// Tunnels implements rules.Backend, reading the IPv4 output chain: IPv4
// always carries every allowed tunnel.
func (b *Backend) Tunnels(ctx context.Context) ([]string, error) {
	ipt := b.fams[0].ipt
	ok, err := ipt.ChainExists("filter", chainNames[rules.Output])
	if err != nil || !ok {
		return nil, err
	}
	lines, err := ipt.List("filter", chainNames[rules.Output])
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", chainNames[rules.Output], err)
	}
	var devs []string
	for _, l := range lines {
		m := tunnelRule.FindStringSubmatch(l)
		if m == nil || m[1] != m[2] || rules.ValidIfaceName(m[1]) != nil {
			continue
		}
		devs = append(devs, m[1])
	}
	return devs, nil
}

// Check implements rules.Backend.
func (b *Backend) Check(ctx context.Context, rs *rules.Ruleset) error {
	for i, t := range rs.Tables {
		ipt := b.fams[i].ipt
		for _, h := range rules.Hooks {
			builtin, own := builtinNames[h], chainNames[h]
			lines, err := ipt.List("filter", builtin)
			if err != nil {
				return fmt.Errorf("%s: listing %s: %w", t.Family, builtin, err)
			}
			if len(lines) == 0 || lines[0] != "-P "+builtin+" DROP" {
				return fmt.Errorf("%s: %s policy is not DROP (%s); run vpnfw-hook baseline", t.Family, builtin, strings.Join(lines[:min(1, len(lines))], ""))
			}
			if len(lines) < 2 || lines[1] != "-A "+builtin+" "+jumpSpec(h) {
				return fmt.Errorf("%s: the first rule of %s is not the jump to %s; run vpnfw-hook baseline", t.Family, builtin, own)
			}
			exists, err := ipt.ChainExists("filter", own)
			if err != nil {
				return fmt.Errorf("%s: probing %s: %w", t.Family, own, err)
			}
			if !exists {
				return fmt.Errorf("%s: chain %s is missing; run vpnfw-hook baseline", t.Family, own)
			}
			live, err := ipt.List("filter", own)
			if err != nil {
				return fmt.Errorf("%s: listing %s: %w", t.Family, own, err)
			}
			want := append([]string{"-N " + own}, ChainRules(t.Family, t.Chains[h])...)
			if err := firstDifference(live, want); err != nil {
				return fmt.Errorf("%s: %s: %w", t.Family, own, err)
			}
		}
	}
	return nil
}

func firstDifference(live, want []string) error {
	for i := range max(len(live), len(want)) {
		switch {
		case i >= len(live):
			return fmt.Errorf("rule %d is missing: %s", i, want[i])
		case i >= len(want):
			return fmt.Errorf("unexpected rule %d: %s", i, live[i])
		case live[i] != want[i]:
			return fmt.Errorf("rule %d is %s, expected %s", i, live[i], want[i])
		}
	}
	return nil
}

var commentRE = regexp.MustCompile(`/\* vpnfw: (.*?) \*/`)

// Status implements rules.Backend.
func (b *Backend) Status(ctx context.Context) (*rules.Status, error) {
	st := &rules.Status{Backend: b.Name(), Armed: true, Tunnels: []string{}, Rules: []rules.Counter{}}
	for i, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
		ipt := b.fams[i].ipt
		for _, h := range rules.Hooks {
			own := chainNames[h]
			exists, err := ipt.ChainExists("filter", own)
			if err != nil {
				return nil, fmt.Errorf("%s: probing %s: %w", fam, own, err)
			}
			if !exists {
				st.Armed = false
				continue
			}
			stats, err := ipt.StructuredStats("filter", own)
			if err != nil {
				return nil, fmt.Errorf("%s: counters of %s: %w", fam, own, err)
			}
			for _, s := range stats {
				purpose := "(not ours)"
				if m := commentRE.FindStringSubmatch(s.Options); m != nil {
					purpose = m[1]
				}
				st.Rules = append(st.Rules, rules.Counter{Family: fam.String(), Chain: own, Purpose: purpose,
					Verdict: s.Target, Packets: s.Packets, Bytes: s.Bytes})
			}
		}
	}
	tunnels, err := b.Tunnels(ctx)
	if err != nil {
		return nil, err
	}
	st.Tunnels = append(st.Tunnels, tunnels...)
	st.State = rules.Blocked
	if len(tunnels) > 0 {
		st.State = rules.Connected
	}
	return st, nil
}

// Disarm implements rules.Backend: policies ACCEPT, jumps and chains gone.
func (b *Backend) Disarm(ctx context.Context) error {
	for i, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
		var t strings.Builder
		t.WriteString("*filter\n")
		for _, h := range rules.Hooks {
			fmt.Fprintf(&t, ":%s ACCEPT [0:0]\n", builtinNames[h])
		}
		for _, h := range rules.Hooks {
			// Declaring creates a missing chain, so the -X below always has one.
			fmt.Fprintf(&t, ":%s - [0:0]\n", chainNames[h])
		}
		for _, h := range rules.Hooks {
			lines, err := b.fams[i].ipt.List("filter", builtinNames[h])
			if err != nil {
				return fmt.Errorf("%s: listing %s: %w", fam, builtinNames[h], err)
			}
			for range findJumps(h, lines).count {
				fmt.Fprintf(&t, "-D %s %s\n", builtinNames[h], jumpSpec(h))
			}
		}
		for _, h := range rules.Hooks {
			fmt.Fprintf(&t, "-X %s\n", chainNames[h])
		}
		t.WriteString("COMMIT\n")
		if err := b.restore(ctx, b.fams[i], t.String()); err != nil {
			return fmt.Errorf("%s: %w", fam, err)
		}
	}
	return nil
}
