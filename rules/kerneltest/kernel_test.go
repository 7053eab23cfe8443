package kerneltest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vpnfw/vpnfw/rules/netnstest"
)

// TestKernel runs every scenario on each flavour (both iptables flavours and
// nftables), each in its own fresh pair of namespaces; the scenarios about
// nftables alone (other firewalls beside its table, a batch the kernel
// refuses) run on the nftables flavour only.
func TestKernel(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireTools(t, tools...)
	hookBinary(t)
	scenarios := []struct {
		name    string
		run     func(*testing.T, flavour)
		nftOnly bool
	}{
		{"BlockedMark", testBlockedMark, false},
		{"BlockedUser", testBlockedUser, false},
		{"BlockedMarkAndUser", testBlockedMarkAndUser, false},
		{"Tunnels", testTunnels, false},
		{"TunnelDeathNoLeak", testTunnelDeath, false},
		{"NoInjectionOnPhysicalLink", testInjection, false},
		{"Idempotent", testIdempotent, false},
		{"ForeignRulesSurvive", testForeignRules, false},
		{"Check", testCheck, false},
		{"OpenVPNHookMode", testOpenVPNHook, false},
		{"ConcurrentHooks", testConcurrentHooks, false},
		{"Disarm", testDisarm, false},
		{"IPv6Tunnel", testIPv6Tunnel, false},
		{"BootLockdown", testBootLockdown, false},
		{"PPTP", testPPTP, false},
		{"PPPHooks", testPPPHooks, false},
		{"SwitchBackends", testSwitchBackends, false},
		{"ServerICMPErrors", testServerICMPErrors, false},
		{"OtherFirewallsAccept", testOtherFirewalls, true},
		{"RulesetFlushed", testRulesetFlushed, true},
		{"DormantTable", testDormantTable, true},
		{"RefusedBatchChangesNothing", testRefusedBatch, true},
	}
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			for _, sc := range scenarios {
				if sc.nftOnly && !fl.nft {
					continue
				}
				t.Run(sc.name, func(t *testing.T) {
					t.Parallel()
					sc.run(t, fl)
				})
			}
		})
	}
	// Without vpnfw the same scenarios leak: proof that the tests above
	// would see a leak.
	t.Run("ControlWithoutFirewall", func(t *testing.T) {
		t.Parallel()
		t.Run("TunnelDeathLeaks", func(t *testing.T) {
			t.Parallel()
			testTunnelDeathControl(t)
		})
		t.Run("InjectionAccepted", func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, flavours[0])
			tp.addTunnel(0)
			if n := injectOnPhysicalLink(tp); n == 0 {
				t.Error("without vpnfw the injected datagrams should have reached the flow's socket: the injection test proves nothing")
			}
		})
	})
}

var (
	server1194 = serverIP + ":1194"
	server443  = serverIP + ":443"
	server6udp = "[" + server6 + "]:1194"
	server6tcp = "[" + server6 + "]:443"
)

// testBlockedMark: in the blocked state only sockets with the VPN client's
// mark reach the server, and only on its ports; IPv6 and ping never pass,
// and nothing new comes in.
func testBlockedMark(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_SERVER_PORTS=udp/1194 tcp/443", "VPNFW_VPN_MARK="+vpnMark)
	// Before vpnfw everything flows: the probes and counters work.
	tp.pass("udp", server1194)
	tp.pass("tcp", server443)
	tp.pass("ping", serverIP)
	tp.pass("udp", server6udp)
	tp.wantSome("phys-udp-1194", "phys-tcp-443", "phys-icmp", "phys6-nonicmp")
	if r := tp.send(tp.peer, "tcp", hostIP+":22", "-timeout", "700ms"); r.Stage != "dial" || !strings.Contains(r.Err, "refused") {
		t.Fatalf("before vpnfw, tcp from the peer to the host: want refused, got %v", r)
	}

	tp.apply("baseline")
	tp.zero()
	// Every other process to the same server: the shared VPN/Tor server leak.
	tp.rejected("udp", server1194)
	tp.rejected("tcp", server443)
	tp.rejected("tcp", server1194)
	tp.rejected("udp", server1194, "-mark", "120")
	// The mark opens the server's ports only, on the server only.
	tp.rejected("tcp", server1194, "-mark", vpnMark)
	tp.rejected("udp", inetTun0+":1194", "-mark", vpnMark)
	tp.rejected("ping", serverIP)
	tp.wantZero("phys-all", "phys-inet")

	tp.pass("udp", server1194, "-mark", vpnMark)
	tp.pass("tcp", server443, "-mark", vpnMark)
	tp.wantSome("phys-udp-1194", "phys-tcp-443")

	// status counts what was blocked.
	if n := tp.statusCounter("ipv4", "fail closed: reject everything else"); n == 0 {
		t.Errorf("status counts no rejected packets")
	}

	tp.zero()
	tp.rejected("udp", server6udp, "-mark", vpnMark)
	tp.rejected("tcp", server6tcp, "-mark", vpnMark)
	tp.rejected("udp", server6udp)
	tp.wantZero("phys6-all", "phys6-nonicmp", "phys-icmp")
	tp.unreachableFromPeer(hostIP + ":22")
}

// testBlockedUser: VPNFW_VPN_USER alone; the socket's owner decides.
func testBlockedUser(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_USER="+vpnUID)
	tp.apply("baseline")
	tp.zero()
	tp.rejected("udp", server1194)
	tp.rejected("udp", server1194, "-uid", "4243")
	tp.rejected("tcp", server1194, "-uid", vpnUID) // udp/1194 only (the default)
	tp.rejected("udp", server6udp, "-uid", vpnUID)
	tp.rejected("ping", serverIP)
	tp.wantZero("phys-all", "phys6-all", "phys6-nonicmp")
	tp.pass("udp", server1194, "-uid", vpnUID)
	tp.wantSome("phys-udp-1194")
}

// testBlockedMarkAndUser: with both set, a packet must match both.
func testBlockedMarkAndUser(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark, "VPNFW_VPN_USER="+vpnUID)
	tp.apply("baseline")
	tp.zero()
	tp.rejected("udp", server1194, "-mark", vpnMark)
	tp.rejected("udp", server1194, "-uid", vpnUID)
	tp.rejected("udp", server1194)
	tp.wantZero("phys-all")
	tp.pass("udp", server1194, "-mark", vpnMark, "-uid", vpnUID)
	tp.wantSome("phys-udp-1194")
}

// testTunnels: up allows a tunnel, down removes it, each tunnel on its own.
func testTunnels(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
	tun0udp, tun0tcp, tun1udp := inetTun0+":5000", inetTun0+":8080", inetTun1+":5000"
	tp.addTunnel(0)
	tp.apply("baseline")
	tp.zero()
	tp.rejected("udp", tun0udp)
	tp.wantZero("tun0-all", "phys-all")

	tp.apply("up", "--dev", "tun0")
	tp.pass("udp", tun0udp)
	tp.pass("tcp", tun0tcp)
	tp.wantSome("tun0-all")
	tp.wantZero("phys-all")
	// In through the tunnel only what belongs to flows opened from the host.
	tp.unreachableFromPeer("198.51.100.2:22")
	// VPNFW_IPV6=block: not even through the tunnel.
	tp.rejected("udp", "["+inet6+"]:5000")
	tp.wantZero("tun0-all6", "phys6-all")
	tp.wantStatus("connected", "tun0")

	tp.apply("down", "--dev", "tun0")
	tp.zero()
	tp.rejected("udp", tun0udp)
	tp.rejected("tcp", tun0tcp)
	tp.wantZero("tun0-all", "phys-all")
	tp.wantStatus("blocked")

	tp.addTunnel(1)
	tp.apply("up", "--dev", "tun0")
	tp.apply("up", "--dev", "tun1")
	tp.wantStatus("connected", "tun0", "tun1")
	tp.pass("udp", tun0udp)
	tp.pass("udp", tun1udp)
	tp.wantSome("tun0-all", "tun1-all")

	tp.apply("down", "--dev", "tun0")
	tp.wantStatus("connected", "tun1")
	tp.zero()
	tp.rejected("udp", tun0udp)
	tp.pass("udp", tun1udp)
	tp.pass("tcp", inetTun1+":8080")
	tp.wantZero("tun0-all", "phys-all")
	tp.wantSome("tun1-all")

	tp.apply("down", "--dev", "tun1")
	tp.zero()
	tp.rejected("udp", tun1udp)
	tp.wantZero("tun1-all", "phys-all")
}

// wantStatus checks `status --json`: the state and the allowed tunnels, the
// backend, and VPNFW_BACKEND as configured beside it.
func (tp *topo) wantStatus(state string, tunnels ...string) {
	tp.t.Helper()
	r := tp.hook("status", "--json")
	var st struct {
		Backend, State, Check string
		Configured            string `json:"configured_backend"`
		Armed                 bool
		Tunnels               []string
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil {
		tp.t.Fatalf("status --json: %s", r)
	}
	configured := cmp.Or(tp.fl.backend, "auto")
	if st.State != state || !slices.Equal(st.Tunnels, tunnels) || !st.Armed || st.Check != "ok" || st.Backend != tp.fl.shows || st.Configured != configured {
		tp.t.Fatalf("status: want %s with tunnels %v, armed, check ok, backend %s (VPNFW_BACKEND=%s): %s", state, tunnels, tp.fl.shows, configured, r.Stdout)
	}
}

// statusCounter returns the packet counter `status --json` shows for the
// rule of the family with this purpose.
func (tp *topo) statusCounter(family, purpose string) uint64 {
	tp.t.Helper()
	r := tp.hook("status", "--json")
	var st struct {
		Rules []struct {
			Family, Purpose string
			Packets         uint64
		}
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil {
		tp.t.Fatalf("status --json: %s", r)
	}
	for _, c := range st.Rules {
		if c.Family == family && c.Purpose == purpose {
			return c.Packets
		}
	}
	tp.t.Fatalf("status --json has no %s rule %q: %s", family, purpose, r.Stdout)
	return 0
}

// tunnelDeath opens a TCP connection through tun0, then kills tun0 without
// any down, as a kill -9 of the VPN client does, so that routing falls back
// to the physical link, keeps writing, and returns what the peer counted of
// the flow on the physical link. how is "delete" (the tun device is gone, and
// its address with it) or "down" (the device and its address stay, its
// routes go: the flow's source address is still valid on the host).
func tunnelDeath(tp *topo, how string) (phys uint64, r probeResult) {
	t := tp.t
	p := tp.host.Start([]string{helperEnv + "=1"}, time.Minute, tp.probe, "stream", "-to", inetTun0+":8080", "-after", "1500ms")
	if l := p.Line(t, 10*time.Second); l != "connected" {
		t.Fatalf("stream through tun0: %s", l)
	}
	deadline := time.Now().Add(5 * time.Second)
	for tp.counts()["tun0-all"] < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream does not reach the peer through tun0: %v", tp.counts())
		}
		time.Sleep(50 * time.Millisecond)
	}
	tp.zero()
	if how == "delete" {
		tp.host.IP("link", "delete", "tun0")
	} else {
		tp.host.IP("link", "set", "tun0", "down")
	}
	if route := tp.host.IP("route", "get", inetTun0); !strings.Contains(route, "dev eth0") {
		t.Fatalf("routing did not fall back to the physical link: %s", route)
	}
	p.Send(t, "tunnel died")
	if err := json.Unmarshal([]byte(p.Line(t, 15*time.Second)), &r); err != nil {
		t.Fatal(err)
	}
	if r.Before == 0 || r.After == 0 {
		t.Fatalf("the stream did not write before and after the tunnel died: %v", r)
	}
	time.Sleep(300 * time.Millisecond) // a last retransmission or FIN in flight
	return tp.counts()["phys-tcp-8080"], r
}

// testTunnelDeath: conntrack state is not trusted across interfaces, so the
// flow gets nothing out on the physical link once its tunnel is gone.
func testTunnelDeath(t *testing.T, fl flavour) {
	for _, how := range []string{"delete", "down"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
			tp.addTunnel(0)
			tp.apply("baseline")
			tp.apply("up", "--dev", "tun0")
			phys, r := tunnelDeath(tp, how)
			if phys != 0 {
				t.Errorf("after tun0 died (%s), %d packets of the tunnel's flow went out in clear on the physical link (%v)", how, phys, r)
			}
			tp.wantZero("phys-inet", "phys-all")
			tp.wantCheck(0)
		})
	}
}

// testTunnelDeathControl: without vpnfw, the flow of a tunnel whose device
// went down leaks on the physical link, so the counters above would see a
// leak. (A deleted device takes the flow's source address along, and the
// kernel stops the flow by itself; the "down" case is the one that leaks.)
func testTunnelDeathControl(t *testing.T) {
	tp := newTopo(t, flavours[0])
	tp.addTunnel(0)
	if phys, r := tunnelDeath(tp, "down"); phys == 0 {
		t.Errorf("without vpnfw the flow should have leaked on the physical link, but the peer counted nothing (%v): the leak test proves nothing", r)
	}
}

// injectOnPhysicalLink opens a UDP flow through tun0, then has the peer
// send datagrams of that very flow (same addresses and ports, so conntrack
// calls them ESTABLISHED) to the host over the physical link, as someone on
// the local network can. It returns how many the flow's socket received.
func injectOnPhysicalLink(tp *topo) int {
	t := tp.t
	// Only the firewall stands in the way: no reverse path filter.
	tp.host.Sysctl("net.ipv4.conf.all.rp_filter", "0")
	tp.host.Sysctl("net.ipv4.conf.eth0.rp_filter", "0")
	env := []string{helperEnv + "=1"}
	inj := tp.peer.Start(env, time.Minute, tp.probe, "inject", "-to", inetTun0+":5001", "-timeout", "10s")
	if l := inj.Line(t, 10*time.Second); l != "ready" {
		t.Fatalf("inject: %s", l)
	}
	flow := tp.host.Start(env, time.Minute, tp.probe, "udpflow", "-to", inetTun0+":5001", "-after", "1s")
	if l := flow.Line(t, 10*time.Second); l != "connected" {
		t.Fatalf("udp flow through tun0: %s", l)
	}
	if l := inj.Line(t, 10*time.Second); l != "replied" {
		t.Fatalf("inject: %s", l)
	}
	tp.peer.IP("route", "add", "198.51.100.2/32", "via", hostIP, "dev", "h-eth0")
	flow.Send(t, "listen")
	inj.Send(t, "inject")
	var sent, got probeResult
	if err := json.Unmarshal([]byte(inj.Line(t, 10*time.Second)), &sent); err != nil || !sent.OK {
		t.Fatalf("inject: %v %v", sent, err)
	}
	if err := json.Unmarshal([]byte(flow.Line(t, 10*time.Second)), &got); err != nil || !got.OK {
		t.Fatalf("udp flow: %v %v", got, err)
	}
	return got.After
}

// testInjection: replies of a tunnel's flow count only on the tunnel; the
// same packets arriving on the physical link are dropped.
func testInjection(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
	tp.addTunnel(0)
	tp.apply("baseline")
	tp.apply("up", "--dev", "tun0")
	if n := injectOnPhysicalLink(tp); n != 0 {
		t.Errorf("%d datagrams of the tunnel's flow were accepted from the physical link", n)
	}
}

// testIdempotent: re-applying the same state changes nothing, and down
// returns exactly to the blocked state.
func testIdempotent(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS=192.0.2.1 198.51.100.0/24 2001:db8:1::1", "VPNFW_SERVER_PORTS=udp/1194 tcp/443",
		"VPNFW_VPN_MARK="+vpnMark, "VPNFW_LAN=192.0.2.0/24", "VPNFW_ALLOW_DHCP=yes")
	tp.addTunnel(0)
	tp.addTunnel(1)
	tp.apply("baseline")
	blocked := tp.ruleset()
	tp.apply("baseline")
	wantSame(t, "baseline twice", blocked, tp.ruleset())

	tp.apply("up", "--dev", "tun0")
	up := tp.ruleset()
	if up == blocked {
		t.Fatal("up --dev tun0 changed nothing")
	}
	tp.apply("up", "--dev", "tun0")
	wantSame(t, "up tun0 twice", up, tp.ruleset())

	tp.apply("up", "--dev", "tun1")
	both := tp.ruleset()
	tp.apply("up", "--dev", "tun0")
	wantSame(t, "up tun0 again with tun1 up", both, tp.ruleset())

	tp.apply("down", "--dev", "tun1")
	wantSame(t, "down tun1 after up tun0, tun1", up, tp.ruleset())
	tp.apply("down", "--dev", "tun0")
	wantSame(t, "down to blocked", blocked, tp.ruleset())
	tp.apply("down", "--dev", "tun0")
	wantSame(t, "down twice", blocked, tp.ruleset())
	tp.apply("baseline")
	wantSame(t, "baseline after down", blocked, tp.ruleset())
}

func wantSame(t *testing.T, what, want, got string) {
	t.Helper()
	if want != got {
		t.Fatalf("%s changed the ruleset:\n%s", what, lineDiff(want, got))
	}
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+l)
		}
	}
	if len(out) == 0 {
		return "(same lines, different order)\n--- before\n" + a + "\n--- after\n" + b
	}
	return strings.Join(out, "\n")
}

// foreignNFT is another tool's nftables table: a named set and a base chain
// after ours that drops one address.
const foreignNFT = `table inet foreign {
	set blocked {
		type ipv4_addr
		elements = { 203.0.113.99 }
	}

	chain out {
		type filter hook output priority 10; policy accept;
		ip daddr @blocked counter drop
	}
}
`

// addForeignNFT loads foreignNFT in the host and returns it as nft lists it.
func (tp *topo) addForeignNFT() string {
	tp.t.Helper()
	if r := tp.nftFile(foreignNFT); r.Code != 0 {
		tp.t.Fatalf("setup: nft -f: %s", r)
	}
	listed := nftTable(tp.nftRuleset(), "inet foreign")
	if listed == "" {
		tp.t.Fatalf("setup: table inet foreign not listed:\n%s", tp.nftRuleset())
	}
	return listed
}

// nftFile runs `nft -f` on text, as a tool that loads its ruleset does.
func (tp *topo) nftFile(text string) netnstest.Result {
	tp.t.Helper()
	f, err := os.CreateTemp(tp.t.TempDir(), "*.nft")
	if err != nil {
		tp.t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		tp.t.Fatal(err)
	}
	f.Close()
	return tp.host.Run("nft", "-f", f.Name())
}

// testForeignRules: other software's chains, rules and tables survive every
// state change; ours only go first (iptables), or are only our own table
// (nftables). Only the chosen backend gets rules.
func testForeignRules(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
	tp.addTunnel(0)
	tp.ipt("-N", "FOREIGN")
	tp.ipt("-A", "FOREIGN", "-d", "203.0.113.99/32", "-j", "RETURN")
	tp.ipt("-A", "OUTPUT", "-d", "203.0.113.99/32", "-j", "FOREIGN")
	tp.ipt("-A", "INPUT", "-s", "203.0.113.99/32", "-j", "DROP")
	tp.ipt("-t", "mangle", "-A", "OUTPUT", "-d", "203.0.113.99/32", "-j", "MARK", "--set-mark", "7")
	tp.ipt("-6", "-N", "FOREIGN6")
	tp.ipt("-6", "-A", "OUTPUT", "-d", "2001:db8:99::1/128", "-j", "FOREIGN6")
	foreign := []string{
		"-A FOREIGN -d 203.0.113.99/32 -j RETURN",
		"-A OUTPUT -d 203.0.113.99/32 -j FOREIGN",
		"-A INPUT -s 203.0.113.99/32 -j DROP",
		"-A OUTPUT -d 203.0.113.99/32 -j MARK --set-xmark 0x7/0xffffffff",
		":FOREIGN6 - [0:0]",
		"-A OUTPUT -d 2001:db8:99::1/128 -j FOREIGN6",
	}
	foreignTable := tp.addForeignNFT()
	before := tp.iptSave()
	for _, f := range foreign {
		if !strings.Contains(before, f+"\n") {
			t.Fatalf("setup: %q not in\n%s", f, before)
		}
	}
	nftBefore := tp.nftRuleset()
	for _, step := range [][]string{{"baseline"}, {"up", "--dev", "tun0"}, {"down", "--dev", "tun0"}, {"baseline"}} {
		tp.apply(step...)
		after := tp.iptSave()
		for _, f := range foreign {
			if !strings.Contains(after, f+"\n") {
				t.Errorf("after %s the foreign rule %q is gone:\n%s", strings.Join(step, " "), f, after)
			}
		}
		nftAfter := tp.nftRuleset()
		if got := nftTable(nftAfter, "inet foreign"); got != foreignTable {
			t.Errorf("after %s the foreign nftables table changed:\n%s", strings.Join(step, " "), lineDiff(foreignTable, got))
		}
		if !fl.nft {
			for _, chain := range []string{"INPUT", "OUTPUT", "FORWARD"} {
				lines := strings.Split(tp.ipt("-S", chain), "\n")
				if len(lines) < 2 || !strings.Contains(lines[1], "-j VPNFW-"+chain) {
					t.Errorf("after %s our jump is not the first rule of %s: %v", strings.Join(step, " "), chain, lines)
				}
			}
			continue
		}
		// nftables: our table is all that changed, iptables-nft's tables
		// included, and no iptables chain of ours appeared.
		ours := nftTable(nftAfter, "inet vpnfw")
		if ours == "" {
			t.Fatalf("after %s there is no table inet vpnfw:\n%s", strings.Join(step, " "), nftAfter)
		}
		wantSame(t, "after "+strings.Join(step, " ")+", everything but table inet vpnfw", nftBefore, strings.Replace(nftAfter, ours, "", 1))
		if strings.Contains(after, "VPNFW") {
			t.Errorf("after %s the nftables backend left iptables chains:\n%s", strings.Join(step, " "), after)
		}
	}
	switch {
	case fl.name == "legacy":
		// One flavour only: two firewalls that disagree are worse than one.
		for _, tool := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
			if out := tp.host.MustRun(tool); strings.Contains(out, "VPNFW") {
				t.Errorf("legacy host got nf_tables rules too (%s):\n%s", tool, out)
			}
		}
	case fl.nft:
		// Finding out whether iptables holds rules of ours must not load the
		// legacy tables: iptables-nft would warn about them forever after.
		for _, f := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
			if out := tp.host.MustRun("cat", f); strings.TrimSpace(out) != "" {
				t.Errorf("the nftables backend loaded legacy iptables tables (%s: %s)", f, out)
			}
		}
	}
	if !fl.nft && tp.hasNFTable() {
		t.Errorf("the iptables backend left a table inet vpnfw:\n%s", tp.nftRuleset())
	}
}

// tamper is a change another tool or an administrator makes to the live
// rules; says is what check must name about it ("" for any failure).
type tamper struct {
	what, says string
	do         func()
}

// tampers are the weakenings of the flavour's rules check must catch.
func (tp *topo) tampers() []tamper {
	ipt := func(args ...string) tamper {
		return tamper{"iptables " + strings.Join(args, " "), "", func() { tp.ipt(args...) }}
	}
	nft := func(says string, args ...string) tamper {
		return tamper{"nft " + strings.Join(args, " "), says, func() { tp.nft(args...) }}
	}
	if !tp.fl.nft {
		return []tamper{
			ipt("-F"),
			ipt("-P", "OUTPUT", "ACCEPT"),
			ipt("-6", "-P", "INPUT", "ACCEPT"),
			ipt("-I", "OUTPUT", "-j", "ACCEPT"),
			ipt("-I", "VPNFW-OUTPUT", "-j", "ACCEPT"),
			ipt("-D", "VPNFW-INPUT", "-m", "comment", "--comment", "vpnfw: fail closed: drop everything else", "-j", "DROP"),
			ipt("-6", "-F", "VPNFW-OUTPUT"),
			// A table of ours the nftables backend left: two firewalls.
			nft("rules of vpnfw remain in "+nftShows, "add", "table", "inet", "vpnfw"),
		}
	}
	missing := "table inet vpnfw is missing"
	return []tamper{
		nft(missing, "flush", "ruleset"),
		nft(missing, "delete", "table", "inet", "vpnfw"),
		nft("policy of chain output is not drop", "chain", "inet", "vpnfw", "output", "{ policy accept; }"),
		nft("no forward", "flush chain inet vpnfw forward; delete chain inet vpnfw forward"),
		nft("", "insert", "rule", "inet", "vpnfw", "output", "accept"),
		nft("", "insert", "rule", "inet", "vpnfw", "output_v4", "accept"),
		{"nft delete rule inet vpnfw input_v4 handle (fail closed: drop everything else)", "fail closed: drop everything else", func() {
			tp.nft("delete", "rule", "inet", "vpnfw", "input_v4", "handle", tp.nftHandle("input_v4", "fail closed: drop everything else"))
		}},
		nft("", "flush", "chain", "inet", "vpnfw", "output_v6"),
		nft("", "add", "element", "inet", "vpnfw", "servers_v4", "{ 203.0.113.0/24 }"),
		nft("", "add", "chain", "inet", "vpnfw", "extra"),
		// A tunnel name VPNFW_TUN_DEVICES does not allow: the physical link.
		nft("eth0", "add", "element", "inet", "vpnfw", "tunnels", `{ "eth0" }`),
		// A chain of ours the iptables backend left: two firewalls.
		{"iptables-nft -N VPNFW-OUTPUT", "rules of vpnfw remain in iptables (nf_tables)", func() { tp.ipt("-N", "VPNFW-OUTPUT") }},
	}
}

var nftHandleRE = regexp.MustCompile(`comment "vpnfw: ([^"]*)" # handle (\d+)`)

// nftHandle is the handle of the rule of ours with this purpose in chain.
func (tp *topo) nftHandle(chain, purpose string) string {
	tp.t.Helper()
	out := tp.nft("-a", "list", "chain", "inet", "vpnfw", chain)
	for _, m := range nftHandleRE.FindAllStringSubmatch(out, -1) {
		if m[1] == purpose {
			return m[2]
		}
	}
	tp.t.Fatalf("no rule %q in chain %s:\n%s", purpose, chain, out)
	return ""
}

// wantCheckSays runs `check`, wants it to fail, and its message to name
// says.
func (tp *topo) wantCheckSays(says string) {
	tp.t.Helper()
	r := tp.hook("check")
	if r.Code != 1 {
		tp.t.Fatalf("check: want exit 1: %s", r)
	}
	if !strings.Contains(r.Stderr, says) {
		tp.t.Errorf("check does not say %q: %s", says, r.Stderr)
	}
}

// testCheck: check fails when someone else weakens the live ruleset, and
// baseline repairs it.
func testCheck(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
	tp.addTunnel(0)
	tp.wantCheck(1) // nothing applied yet
	tp.apply("baseline")
	for _, tm := range tp.tampers() {
		t.Logf("someone runs %s", tm.what)
		tm.do()
		tp.wantCheckSays(tm.says)
		tp.apply("baseline")
	}
	// The physical link in the tunnel set is a real leak, not a cosmetic
	// difference: check's failure above is the only warning there is.
	if fl.nft {
		tp.zero()
		tp.nft("add", "element", "inet", "vpnfw", "tunnels", `{ "eth0" }`)
		tp.pass("udp", serverIP+":5000")
		tp.wantSome("phys-all")
		tp.apply("baseline")
		tp.rejected("udp", serverIP+":5000")
	}
	tp.apply("up", "--dev", "tun0")
	if fl.nft {
		tp.nft("flush", "ruleset")
	} else {
		tp.ipt("-F")
	}
	tp.wantCheck(1)
	// The kernel is the only record of the tunnels: after a flush, baseline
	// is the state to go back to, and the VPN's next up reopens tun0.
	tp.apply("baseline")
	tp.wantStatus("blocked")
}

// testOpenVPNHook: OpenVPN's script environment, with no PATH, drives the
// hook; hostile values change nothing.
func testOpenVPNHook(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_SERVER_PORTS=udp/1194", "VPNFW_VPN_MARK="+vpnMark)
	tp.addTunnel(0)
	envTool, err := netnstest.Tool("env")
	if err != nil {
		t.Fatal(err)
	}
	positional := []string{"tun0", "1500", "0", "10.8.0.2", "255.255.255.0", "init"}
	// openvpn runs the hook as OpenVPN does: only its variables, no PATH.
	openvpn := func(vars []string, args ...string) netnstest.Result {
		t.Helper()
		argv := append([]string{envTool, "-i"}, vars...)
		argv = append(argv, tp.bin, "--config", tp.cfg)
		return tp.host.Run(append(argv, args...)...)
	}
	good := []string{"script_type=up", "dev=tun0", "trusted_ip=" + serverIP, "trusted_port=1194", "proto_1=udp"}
	tp.apply("baseline")

	r := openvpn(good, positional...)
	if r.Code != 0 {
		t.Fatalf("OpenVPN up: %s", r)
	}
	tp.wantApplied(r)
	tp.wantCheck(0)
	tp.wantStatus("connected", "tun0")
	tp.pass("udp", inetTun0+":5000")
	up := tp.ruleset()

	// route-up: no positional arguments at all; same state again.
	if r := openvpn([]string{"script_type=route-up", "dev=tun0", "trusted_ip=" + serverIP, "trusted_port=1194", "proto_1=udp"}); r.Code != 0 {
		t.Fatalf("OpenVPN route-up: %s", r)
	}
	wantSame(t, "route-up after up", up, tp.ruleset())

	hostile := [][]string{
		override(good, "dev=eth0"),
		override(good, "dev=lo"),
		override(good, "dev=tun0;id"),
		override(good, "dev=tun0 tun1"),
		override(good, "dev="),
		override(good, "dev=tun+"),
		override(good, "dev=../tun0"),
		override(good, "dev=tun0\n-A OUTPUT -j ACCEPT"),
		override(good, "dev=tun0123456789abc"),
		without(good, "dev"),
		override(good, "trusted_ip=192.0.2.1;reboot"),
		override(good, "trusted_ip="),
		override(good, "trusted_ip=fe80::1%eth0"),
		override(good, "trusted_ip=192.0.2.1/24"),
		without(good, "trusted_ip"),
		override(good, "trusted_port=0"),
		override(good, "trusted_port=65536"),
		override(good, "trusted_port=1194x"),
		override(good, "trusted_port=-1"),
		override(good, "proto_1=icmp"),
		override(good, "proto_1=udp;id"),
		override(good, "script_type=bogus"),
		override(good, "script_type="),
		override(good, "script_type=down", "dev=eth0"),
		override(good, "script_type=route-up", "dev=tun0 "),
	}
	for _, vars := range hostile {
		if r := openvpn(vars, positional...); r.Code != 2 {
			t.Errorf("%q: want exit 2: %s", vars, r)
		}
		wantSame(t, fmt.Sprintf("the refused hook call %q", vars), up, tp.ruleset())
	}
	// Valid values the configuration disagrees with: refused, exit 1.
	for _, vars := range [][]string{
		override(good, "trusted_ip=198.51.100.77"),
		override(good, "trusted_ip=2001:db8:1::1"),
		override(good, "trusted_port=1195"),
		override(good, "trusted_port=1196", "proto_1=tcp-client"),
	} {
		if r := openvpn(vars, positional...); r.Code != 1 {
			t.Errorf("%q: want exit 1: %s", vars, r)
		}
		wantSame(t, fmt.Sprintf("the refused tunnel %q", vars), up, tp.ruleset())
	}

	// down: OpenVPN has closed tun0 already; the allowance goes.
	r = openvpn([]string{"script_type=down", "dev=tun0", "trusted_ip=" + serverIP, "trusted_port=1194", "proto_1=udp"}, positional...)
	if r.Code != 0 {
		t.Fatalf("OpenVPN down: %s", r)
	}
	tp.wantApplied(r)
	tp.wantCheck(0)
	tp.wantStatus("blocked")
	tp.rejected("udp", inetTun0+":5000")
}

// override replaces the variables of base that vars names, and adds the others.
func override(base []string, vars ...string) []string {
	out := slices.Clone(base)
	for _, v := range vars {
		name, _, _ := strings.Cut(v, "=")
		if i := slices.IndexFunc(out, func(s string) bool { return strings.HasPrefix(s, name+"=") }); i >= 0 {
			out[i] = v
		} else {
			out = append(out, v)
		}
	}
	return out
}

// without removes the named variables from base.
func without(base []string, names ...string) []string {
	return slices.DeleteFunc(slices.Clone(base), func(s string) bool {
		name, _, _ := strings.Cut(s, "=")
		return slices.Contains(names, name)
	})
}

// testConcurrentHooks: hooks of several VPN instances running at once do
// not drop each other's tunnel.
func testConcurrentHooks(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
	tp.apply("baseline")
	ctx, cancel := context.WithTimeout(context.Background(), netnstest.Timeout)
	defer cancel()
	var devs []string
	var cmds []*exec.Cmd
	for i := range 6 {
		dev := fmt.Sprintf("tun%d", i)
		devs = append(devs, dev)
		cmds = append(cmds, tp.host.Command(ctx, tp.bin, "--config", tp.cfg, "up", "--dev", dev))
	}
	errs := make(chan error, len(cmds))
	for _, c := range cmds {
		go func() {
			out, err := c.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%s: %v: %s", strings.Join(c.Args, " "), err, out)
			}
			errs <- err
		}()
	}
	for range cmds {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	tp.wantCheck(0)
	tp.wantStatus("connected", devs...)
}

// testDisarm: disarm --yes is the one way to fail open; it removes only
// vpnfw's rules, and baseline arms again.
func testDisarm(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
	tp.addTunnel(0)
	tp.ipt("-N", "FOREIGN")
	tp.ipt("-A", "OUTPUT", "-d", "203.0.113.99/32", "-j", "FOREIGN")
	foreignTable := tp.addForeignNFT()
	tp.apply("baseline")
	tp.apply("up", "--dev", "tun0")
	if r := tp.hook("disarm"); r.Code != 2 {
		t.Fatalf("disarm without --yes: want exit 2: %s", r)
	}
	tp.wantCheck(0)
	if r := tp.hook("disarm", "--yes"); r.Code != 0 {
		t.Fatalf("disarm --yes: %s", r)
	}
	rs, ipt := tp.ruleset(), tp.iptSave()
	if strings.Contains(rs, "VPNFW") || strings.Contains(rs, "vpnfw") || strings.Contains(ipt, " DROP [") {
		t.Errorf("vpnfw's rules or DROP policies are left after disarm:\n%s", rs)
	}
	if !strings.Contains(ipt, "-A OUTPUT -d 203.0.113.99/32 -j FOREIGN\n") {
		t.Errorf("disarm removed a foreign rule:\n%s", ipt)
	}
	if got := nftTable(tp.nftRuleset(), "inet foreign"); got != foreignTable {
		t.Errorf("disarm changed the foreign nftables table:\n%s", lineDiff(foreignTable, got))
	}
	tp.wantCheck(1)
	tp.pass("udp", server1194)
	tp.pass("udp", server6udp)

	tp.apply("baseline")
	tp.rejected("udp", server1194)
	tp.wantStatus("blocked")
}

// testIPv6Tunnel: VPNFW_IPV6=tunnel lets IPv6 out through allowed tunnels
// only.
func testIPv6Tunnel(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark, "VPNFW_IPV6=tunnel")
	tp.addTunnel(0)
	to := "[" + inet6 + "]:5000"
	tp.apply("baseline")
	tp.zero()
	tp.rejected("udp", to)
	tp.wantZero("tun0-all6")
	tp.apply("up", "--dev", "tun0")
	tp.pass("udp", to)
	tp.pass("tcp", "["+inet6+"]:8080")
	tp.wantSome("tun0-all6")
	tp.rejected("udp", server6udp, "-mark", vpnMark)
	tp.wantZero("phys6-all", "phys6-nonicmp")
	tp.unreachableFromPeer("[2001:db8:2:0::2]:22")
	tp.apply("down", "--dev", "tun0")
	tp.rejected("udp", to)
}

// testServerICMPErrors: the server's own ICMP errors about the VPN client's
// flows come in, so a client whose server port is closed learns it at once
// (port unreachable, ECONNREFUSED) instead of waiting for a timeout.
func testServerICMPErrors(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP+" "+server6, "VPNFW_SERVER_PORTS=udp/1194 udp/1195", "VPNFW_VPN_MARK="+vpnMark)
	tp.apply("baseline")
	for _, to := range []string{serverIP + ":1195", "[" + server6 + "]:1195"} {
		// Nothing listens on 1195 at the server.
		if r := tp.send(tp.host, "udp", to, "-mark", vpnMark, "-timeout", "3s"); r.OK || r.Stage != "read" || !strings.Contains(r.Err, "refused") || r.Ms > 1500 {
			t.Errorf("marked udp to the closed server port %s: want the server's port unreachable at once, got %v", to, r)
		}
	}
	tp.pass("udp", server1194, "-mark", vpnMark)
}
