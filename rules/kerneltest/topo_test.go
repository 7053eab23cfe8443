package kerneltest

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpnfw/vpnfw/rules/netnstest"
)

// The topology of every test, all on documentation addresses:
//
//	host ns (the protected machine)            peer ns (VPN server and "internet")
//	eth0 192.0.2.2/24 2001:db8:1::2/64  <-->  h-eth0 192.0.2.1/24 2001:db8:1::1/64
//	tun0 198.51.100.2/30 2001:db8:2:0::2 <-->  h-tun0 198.51.100.1/30 2001:db8:2:0::1  (addTunnel(0))
//	tun1 198.51.100.6/30 2001:db8:2:1::2 <-->  h-tun1 198.51.100.5/30 2001:db8:2:1::1  (addTunnel(1))
//	                                           lo     203.0.113.10, 203.0.113.20, 2001:db8:3::10
//
// The host's default routes point at the peer over eth0, the physical link;
// 203.0.113.0/24 and 2001:db8:3::/64 go through tun0, 203.0.113.20 through
// tun1, while they exist. The tunnels are veth pairs named and behaving like
// tun devices: what the firewall sees of a tunnel is its name. The peer counts, in its raw PREROUTING chain,
// what arrives from the host on each link, and echoes UDP and TCP.

const (
	hostIP   = "192.0.2.2"
	serverIP = "192.0.2.1"
	hostIP6  = "2001:db8:1::2"
	server6  = "2001:db8:1::1"
	inetTun0 = "203.0.113.10"   // routed through tun0
	inetTun1 = "203.0.113.20"   // routed through tun1
	inet6    = "2001:db8:3::10" // routed through tun0
	vpnMark  = "119"
	vpnUID   = "4242"
)

// flavour is a backend the scenarios run on: one of the iptables flavours,
// or the nftables table.
type flavour struct {
	name string // of the subtest
	// backend is VPNFW_BACKEND in the scenarios' configurations; "" leaves
	// it out, so the default, auto, picks.
	backend string
	// shows is the backend as logs, check and status name it.
	shows string
	// nft: vpnfw's rules are its nftables table, not iptables chains.
	nft bool
	// The iptables tools: for an iptables flavour those that hold vpnfw's
	// chains; for nftables those other software's rules are made with
	// (iptables-nft, as on a current Debian or Ubuntu host).
	ipt, ip6t, save, save6 string
}

// nftShows is how the nftables backend names itself; auto picks it on
// every kernel these tests run on, since they need nftables anyway.
const nftShows = "nftables (table inet vpnfw)"

var (
	nfTablesFlavour = flavour{"nf_tables", "iptables", "iptables (nf_tables)", false,
		"iptables-nft", "ip6tables-nft", "iptables-nft-save", "ip6tables-nft-save"}
	legacyFlavour = flavour{"legacy", "iptables", "iptables (legacy)", false,
		"iptables-legacy", "ip6tables-legacy", "iptables-legacy-save", "ip6tables-legacy-save"}
	// The nftables flavour leaves VPNFW_BACKEND out: every scenario on it
	// also proves that the default, auto, picks nftables. The switching
	// scenario of the iptables flavours names nftables explicitly.
	nftFlavour = flavour{"nftables", "", nftShows, true,
		"iptables-nft", "ip6tables-nft", "iptables-nft-save", "ip6tables-nft-save"}
)

var flavours = []flavour{nfTablesFlavour, legacyFlavour, nftFlavour}

// explicit is fl with VPNFW_BACKEND set to its backend, never left to auto.
func (fl flavour) explicit() flavour {
	if fl.backend == "" {
		fl.backend = "nftables"
	}
	return fl
}

// tools every kernel test needs.
var tools = []string{"ip", "env", "nft", "iptables", "ip6tables", "iptables-save", "ip6tables-save",
	"iptables-nft", "ip6tables-nft", "iptables-nft-save", "ip6tables-nft-save",
	"iptables-legacy", "ip6tables-legacy", "iptables-legacy-save", "ip6tables-legacy-save"}

// counter is a rule in the peer's raw PREROUTING that only counts.
type counter struct{ name, match string }

var counters4 = []counter{
	{"phys-all", "-i h-eth0 -s " + hostIP},
	{"phys-udp-1194", "-i h-eth0 -s " + hostIP + " -p udp --dport 1194"},
	{"phys-tcp-1194", "-i h-eth0 -s " + hostIP + " -p tcp --dport 1194"},
	{"phys-tcp-443", "-i h-eth0 -s " + hostIP + " -p tcp --dport 443"},
	{"phys-icmp", "-i h-eth0 -s " + hostIP + " -p icmp"},
	// Any source: a flow opened through a tunnel keeps the tunnel's address.
	{"phys-inet", "-i h-eth0 -d 203.0.113.0/24"},
	{"phys-tcp-8080", "-i h-eth0 -p tcp --dport 8080"},
	{"phys-tcp-1723", "-i h-eth0 -s " + hostIP + " -p tcp --dport 1723"},
	{"phys-gre", "-i h-eth0 -s " + hostIP + " -p gre"},
	{"tun0-all", "-i h-tun0"},
	{"tun1-all", "-i h-tun1"},
}

var counters6 = []counter{
	{"phys6-all", "-i h-eth0 -s " + hostIP6},
	{"phys6-nonicmp", "-i h-eth0 ! -p ipv6-icmp"},
	{"tun0-all6", "-i h-tun0"},
}

// topo is one test's pair of namespaces.
type topo struct {
	t          *testing.T
	fl         flavour
	host, peer *netnstest.NS
	bin, probe string
	cfg        string
}

// newTopo builds the namespaces, the links, the peer's counters and echo
// servers, and writes cfg (dotenv lines) and the flavour's VPNFW_BACKEND as
// a 0600 file only root can read.
// For the legacy flavour a chain of another tool exists before vpnfw-hook
// first runs, which is how the binary tells the host uses legacy iptables;
// with nothing there it takes nf_tables, the default of the system's iptables.
func newTopo(t *testing.T, fl flavour, cfg ...string) *topo {
	t.Helper()
	tp := &topo{t: t, fl: fl, bin: hookBinary(t), probe: self(t)}
	tp.host = netnstest.New(t, "host")
	tp.peer = netnstest.New(t, "peer")
	netnstest.Veth(t, tp.host, "eth0", tp.peer, "h-eth0")
	tp.host.IP("addr", "add", hostIP+"/24", "dev", "eth0")
	tp.host.IP("-6", "addr", "add", hostIP6+"/64", "dev", "eth0", "nodad")
	tp.host.IP("route", "add", "default", "via", serverIP)
	tp.host.IP("-6", "route", "add", "default", "via", server6)
	tp.peer.IP("addr", "add", serverIP+"/24", "dev", "h-eth0")
	tp.peer.IP("-6", "addr", "add", server6+"/64", "dev", "h-eth0", "nodad")
	tp.peer.IP("addr", "add", inetTun0+"/32", "dev", "lo")
	tp.peer.IP("addr", "add", inetTun1+"/32", "dev", "lo")
	tp.peer.IP("-6", "addr", "add", inet6+"/128", "dev", "lo")
	for _, c := range counters4 {
		tp.peer.MustRun(append([]string{"iptables", "-t", "raw", "-A", "PREROUTING"}, append(strings.Fields(c.match), "-m", "comment", "--comment", c.name)...)...)
	}
	for _, c := range counters6 {
		tp.peer.MustRun(append([]string{"ip6tables", "-t", "raw", "-A", "PREROUTING"}, append(strings.Fields(c.match), "-m", "comment", "--comment", c.name)...)...)
	}
	srv := tp.peer.Start([]string{helperEnv + "=1"}, 3*time.Minute, tp.probe, "serve", "-timeout", "3m",
		"-addrs", strings.Join([]string{serverIP, server6, inetTun0, inetTun1, inet6}, ","),
		"-gre", serverIP, "-gre-decoy", inetTun0)
	if l := srv.Line(t, 10*time.Second); l != "ready" {
		t.Fatalf("peer echo server: %q", l)
	}
	switch {
	case fl.nft:
		// Nothing: auto must pick nftables on a host without other rules.
	case fl.name == "legacy":
		tp.host.MustRun(fl.ipt, "-N", "LEGACY-TOOL")
	case !strings.Contains(tp.host.MustRun("iptables", "--version"), "nf_tables"):
		// A host whose `iptables` is legacy by default gets nf_tables only
		// where that is already in use.
		tp.host.MustRun(fl.ipt, "-N", "NFT-TOOL")
	}
	tp.cfg = filepath.Join(t.TempDir(), "vpnfw.env")
	tp.configure(fl, cfg...)
	return tp
}

// configure rewrites the configuration: lines, and VPNFW_BACKEND as fl
// sets it. From now on the topo expects fl's backend in logs, check and
// status.
func (tp *topo) configure(fl flavour, lines ...string) {
	tp.t.Helper()
	tp.fl = fl
	if fl.backend != "" {
		lines = append(slices.Clone(lines), "VPNFW_BACKEND="+fl.backend)
	}
	writeConfig(tp.t, tp.cfg, lines...)
}

// addTunnel creates tun<n> in the host and routes its share of
// 203.0.113.0/24 (and of 2001:db8:3::/64) through it. Like a real tun device
// the link resolves no neighbours: both ends are NOARP and share one MAC
// address, so frames sent to "ourselves" are the peer's.
func (tp *topo) addTunnel(n int) {
	tp.t.Helper()
	tp.addTunnelDev(n, fmt.Sprintf("tun%d", n))
}

// addTunnelDev is addTunnel with the host's end named dev (ppp0, wg0); the
// peer's end is still h-tun<n>, counted as tun<n>.
func (tp *topo) addTunnelDev(n int, dev string) {
	tp.t.Helper()
	peerDev := fmt.Sprintf("h-tun%d", n)
	netnstest.Veth(tp.t, tp.host, dev, tp.peer, peerDev)
	mac := fmt.Sprintf("02:76:70:6e:00:%02x", n)
	tp.host.IP("link", "set", dev, "address", mac, "arp", "off")
	tp.peer.IP("link", "set", peerDev, "address", mac, "arp", "off")
	tp.host.IP("addr", "add", fmt.Sprintf("198.51.100.%d/30", 4*n+2), "dev", dev)
	tp.peer.IP("addr", "add", fmt.Sprintf("198.51.100.%d/30", 4*n+1), "dev", peerDev)
	tp.host.IP("-6", "addr", "add", fmt.Sprintf("2001:db8:2:%d::2/64", n), "dev", dev, "nodad")
	tp.peer.IP("-6", "addr", "add", fmt.Sprintf("2001:db8:2:%d::1/64", n), "dev", peerDev, "nodad")
	dst, dst6 := "203.0.113.0/24", "2001:db8:3::/64"
	if n > 0 {
		dst, dst6 = fmt.Sprintf("203.0.113.%d/32", 10*(n+1)), fmt.Sprintf("2001:db8:3::%d/128", 10*(n+1))
	}
	tp.host.IP("route", "add", dst, "dev", dev)
	tp.host.IP("-6", "route", "add", dst6, "dev", dev)
}

// hook runs vpnfw-hook in the host with the test's configuration.
func (tp *topo) hook(args ...string) netnstest.Result {
	tp.t.Helper()
	return tp.host.Run(append([]string{tp.bin, "--config", tp.cfg, "--log-format", "json"}, args...)...)
}

// apply runs a state change that must succeed, be logged with the
// flavour's backend, and leave `check` exiting 0.
func (tp *topo) apply(args ...string) {
	tp.t.Helper()
	r := tp.hook(args...)
	if r.Code != 0 {
		tp.t.Fatalf("vpnfw-hook %s: %s", strings.Join(args, " "), r)
	}
	tp.wantApplied(r)
	tp.wantCheck(0)
}

// wantApplied finds the "applied" log line and checks the backend it names.
func (tp *topo) wantApplied(r netnstest.Result) {
	tp.t.Helper()
	want := tp.fl.shows
	for _, l := range strings.Split(r.Stderr, "\n") {
		var e struct{ Message, Backend string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Message == "applied" {
			if e.Backend != want {
				tp.t.Fatalf("applied with backend %q, want %q: %s", e.Backend, want, l)
			}
			return
		}
	}
	tp.t.Fatalf("no \"applied\" log line: %s", r)
}

// wantCheck runs `check` and wants its exit code.
func (tp *topo) wantCheck(code int) {
	tp.t.Helper()
	r := tp.hook("check")
	if r.Code != code {
		tp.t.Fatalf("check: want exit %d: %s\nthe live ruleset:\n%s", code, r, tp.ruleset())
	}
	if code == 0 && !strings.Contains(r.Stdout, tp.fl.shows) {
		tp.t.Fatalf("check ran with the wrong backend: %s", r)
	}
}

// ipt runs the flavour's iptables (or ip6tables with -6 first) in the host.
func (tp *topo) ipt(args ...string) string {
	tp.t.Helper()
	tool := tp.fl.ipt
	if len(args) > 0 && args[0] == "-6" {
		tool, args = tp.fl.ip6t, args[1:]
	}
	return tp.host.MustRun(append([]string{tool}, args...)...)
}

var (
	saveComment  = regexp.MustCompile(`(?m)^#.*\n`)
	saveCounters = regexp.MustCompile(`\[\d+:\d+\]`)
)

// ruleset is everything the host's netfilter holds that vpnfw could
// change, without counters and the comments that carry dates: for an
// iptables flavour its iptables-save and ip6tables-save, and for every
// flavour the whole nftables ruleset (vpnfw's table, and for nf_tables the
// tables iptables-nft keeps there), so that a scenario also sees the
// backend it did not choose.
func (tp *topo) ruleset() string {
	tp.t.Helper()
	s := ""
	if !tp.fl.nft {
		s = tp.iptSave()
	}
	return s + "## nftables\n" + tp.nftRuleset()
}

// iptSave is the iptables-save and ip6tables-save of the flavour's
// iptables tools, without counters and dates.
func (tp *topo) iptSave() string {
	tp.t.Helper()
	return tp.iptSaveOf(tp.fl)
}

// iptSaveOf is iptSave with the iptables tools of fl.
func (tp *topo) iptSaveOf(fl flavour) string {
	tp.t.Helper()
	s := "## ipv4\n" + tp.host.MustRun(fl.save) + "## ipv6\n" + tp.host.MustRun(fl.save6)
	return saveCounters.ReplaceAllString(saveComment.ReplaceAllString(s, ""), "[0:0]")
}

// nftRuleset is `nft list ruleset` without counters (-s, stateless).
func (tp *topo) nftRuleset() string {
	tp.t.Helper()
	return tp.host.MustRun("nft", "-s", "list", "ruleset")
}

// nft runs nft in the host, as another tool or an administrator would.
func (tp *topo) nft(args ...string) string {
	tp.t.Helper()
	return tp.host.MustRun(append([]string{"nft"}, args...)...)
}

// nftTable is one table of an `nft list ruleset`, from its "table" line to
// its closing brace, or "" when there is none.
func nftTable(ruleset, name string) string {
	head := "table " + name + " {\n"
	start := 0
	if !strings.HasPrefix(ruleset, head) {
		if start = strings.Index(ruleset, "\n"+head); start < 0 {
			return ""
		}
		start++
	}
	end := strings.Index(ruleset[start:], "\n}\n")
	if end < 0 {
		return ruleset[start:]
	}
	return ruleset[start : start+end+3]
}

// hasNFTable reports whether the host's nftables holds vpnfw's table.
func (tp *topo) hasNFTable() bool {
	tp.t.Helper()
	return nftTable(tp.nftRuleset(), "inet vpnfw") != ""
}

// holds reports whether fl's backend holds any rule of vpnfw: the table,
// or for an iptables flavour any chain or jump of ours in either family.
func (tp *topo) holds(fl flavour) bool {
	tp.t.Helper()
	if fl.nft {
		return tp.hasNFTable()
	}
	return strings.Contains(tp.iptSaveOf(fl), "VPNFW-")
}

var counterLine = regexp.MustCompile(`^\[(\d+):\d+\] -A PREROUTING .*--comment "?([a-z0-9-]+)"?`)

// counts reads the peer's counters by name.
func (tp *topo) counts() map[string]uint64 {
	tp.t.Helper()
	m := map[string]uint64{}
	out := tp.peer.MustRun("iptables-save", "-c", "-t", "raw") + tp.peer.MustRun("ip6tables-save", "-c", "-t", "raw")
	for _, l := range strings.Split(out, "\n") {
		if s := counterLine.FindStringSubmatch(l); s != nil {
			n, _ := strconv.ParseUint(s[1], 10, 64)
			m[s[2]] = n
		}
	}
	if len(m) != len(counters4)+len(counters6) {
		tp.t.Fatalf("peer counters: found %v in:\n%s", m, out)
	}
	return m
}

// zero resets the peer's counters.
func (tp *topo) zero() {
	tp.t.Helper()
	tp.peer.MustRun("iptables", "-t", "raw", "-Z", "PREROUTING")
	tp.peer.MustRun("ip6tables", "-t", "raw", "-Z", "PREROUTING")
}

// wantZero wants the peer to have counted nothing on the named counters.
func (tp *topo) wantZero(names ...string) {
	tp.t.Helper()
	c := tp.counts()
	for _, n := range names {
		if c[n] != 0 {
			tp.t.Errorf("peer counter %s = %d, want 0 (all: %v)", n, c[n], c)
		}
	}
}

// wantSome wants the peer to have counted something on each named counter.
func (tp *topo) wantSome(names ...string) {
	tp.t.Helper()
	c := tp.counts()
	for _, n := range names {
		if c[n] == 0 {
			tp.t.Errorf("peer counter %s = 0, want > 0 (all: %v)", n, c)
		}
	}
}

// send runs a probe in ns: udp, tcp or ping to `to`, with flags such as
// -mark N, -uid N, -timeout D.
func (tp *topo) send(ns *netnstest.NS, mode, to string, flags ...string) probeResult {
	tp.t.Helper()
	argv := append([]string{tp.probe, mode, "-to", to}, flags...)
	r := ns.RunEnv([]string{helperEnv + "=1"}, argv...)
	var pr probeResult
	if r.Code != 0 || json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &pr) != nil {
		tp.t.Fatalf("probe %s: %s", strings.Join(argv[1:], " "), r)
	}
	return pr
}

// pass sends from the host and wants the echo back.
func (tp *topo) pass(mode, to string, flags ...string) {
	tp.t.Helper()
	if r := tp.send(tp.host, mode, to, flags...); !r.OK {
		tp.t.Errorf("%s to %s %v: want the reply, got %v", mode, to, flags, r)
	}
}

// rejected sends from the host and wants the send itself to fail fast, as
// the REJECT rules make it: no waiting for a timeout.
func (tp *topo) rejected(mode, to string, flags ...string) {
	tp.t.Helper()
	r := tp.send(tp.host, mode, to, flags...)
	if r.OK || (r.Stage != "dial" && r.Stage != "write") || r.Ms > 1000 {
		tp.t.Errorf("%s to %s %v: want a fast failure to send, got %v", mode, to, flags, r)
	}
}

// unreachableFromPeer wants a new TCP connection from the peer to the host
// to go unanswered: dropped, not even refused.
func (tp *topo) unreachableFromPeer(to string) {
	tp.t.Helper()
	r := tp.send(tp.peer, "tcp", to, "-timeout", "700ms")
	if r.OK || r.Stage != "dial" || !strings.Contains(r.Err, "timeout") {
		tp.t.Errorf("tcp from the peer to %s: want a timeout (dropped), got %v", to, r)
	}
}
