package kerneltest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// The scenarios of the nftables backend alone: its table beside other
// firewalls, which in nftables cannot undo its drops; other tools that
// remove it; and a batch the kernel refuses.

// otherFirewall is the rules of other software that accept everything, for
// iptables or ip6tables: an administrator's ACCEPT first in INPUT and
// OUTPUT, ufw's chains, and Docker's chains, forwarding and NAT.
var otherFirewall = [][]string{
	{"-I", "OUTPUT", "1", "-j", "ACCEPT"},
	{"-I", "INPUT", "1", "-j", "ACCEPT"},
	{"-N", "ufw-before-input"},
	{"-N", "ufw-before-output"},
	{"-N", "ufw-user-output"},
	{"-A", "INPUT", "-j", "ufw-before-input"},
	{"-A", "OUTPUT", "-j", "ufw-before-output"},
	{"-A", "ufw-before-input", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
	{"-A", "ufw-before-input", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"},
	{"-A", "ufw-before-output", "-o", "lo", "-j", "ACCEPT"},
	{"-A", "ufw-before-output", "-j", "ufw-user-output"},
	{"-A", "ufw-user-output", "-j", "ACCEPT"},
	{"-N", "DOCKER"},
	{"-N", "DOCKER-USER"},
	{"-P", "FORWARD", "ACCEPT"},
	{"-A", "FORWARD", "-j", "DOCKER-USER"},
	{"-A", "DOCKER-USER", "-j", "RETURN"},
	{"-A", "FORWARD", "-j", "ACCEPT"},
	{"-t", "nat", "-N", "DOCKER"},
	{"-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"},
	{"-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"},
}

// earlyAccept is a table of another tool whose base chains accept
// everything before ours see it.
const earlyAccept = `table inet early {
	chain in { type filter hook input priority -300; policy accept; accept; }
	chain out { type filter hook output priority -300; policy accept; accept; }
	chain fw { type filter hook forward priority -300; policy accept; accept; }
}
`

// forwardFromPeer has the peer send a datagram through the host, in on eth0
// and out on tun0 (where the peer's tun0-all counts it), if the host
// forwards it.
func (tp *topo) forwardFromPeer() {
	tp.t.Helper()
	tp.send(tp.peer, "udp", "10.99.0.1:5000", "-timeout", "200ms")
}

// testOtherFirewalls: the nftables kill switch holds whatever iptables
// (nf_tables or legacy) and other nftables tables accept: ufw's and
// Docker's chains, an ACCEPT first in INPUT and OUTPUT, forwarding on, a
// table that accepts everything before ours. Nothing but the VPN client's
// own connection leaves on the physical link, nothing new comes in,
// nothing is forwarded; the tunnel works once up.
func testOtherFirewalls(t *testing.T, fl flavour) {
	for _, tool := range []struct{ name, ipt, ip6t string }{
		{"iptables-nft", "iptables-nft", "ip6tables-nft"},
		{"iptables-legacy", "iptables-legacy", "ip6tables-legacy"},
	} {
		t.Run(tool.name, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_SERVER_PORTS=udp/1194 tcp/443", "VPNFW_VPN_MARK="+vpnMark)
			tp.addTunnel(0)
			// The host as a router: 10.99.0.0/24 lies behind tun0.
			tp.host.Sysctl("net.ipv4.ip_forward", "1")
			tp.host.IP("route", "add", "10.99.0.0/24", "dev", "tun0")
			tp.peer.IP("route", "add", "10.99.0.0/24", "via", hostIP)
			for _, rule := range otherFirewall {
				tp.host.MustRun(append([]string{tool.ipt}, rule...)...)
				if rule[0] != "-t" {
					tp.host.MustRun(append([]string{tool.ip6t}, rule...)...)
				}
			}
			if r := tp.nftFile(earlyAccept); r.Code != 0 {
				t.Fatalf("nft -f: %s", r)
			}
			others := tp.host.MustRun(tool.ipt+"-save") + tp.host.MustRun(tool.ip6t+"-save")
			early := nftTable(tp.nftRuleset(), "inet early")

			// Before vpnfw all of it passes: the checks below can fail.
			tp.zero()
			tp.pass("udp", serverIP+":5000")
			tp.pass("udp", server6udp)
			tp.forwardFromPeer()
			tp.wantSome("phys-all", "phys6-nonicmp", "tun0-all")

			tp.apply("baseline")
			tp.zero()
			tp.rejected("udp", serverIP+":5000")
			tp.rejected("tcp", server443)
			tp.rejected("udp", server1194, "-mark", "120")
			tp.rejected("udp", inetTun0+":5000")
			tp.rejected("ping", serverIP)
			tp.rejected("udp", server6udp)
			tp.rejected("udp", floodTo)
			tp.forwardFromPeer()
			tp.unreachableFromPeer(hostIP + ":22")
			tp.wantZero("phys-all", "phys-inet", "phys6-all", "phys6-nonicmp", "tun0-all")
			tp.pass("udp", server1194, "-mark", vpnMark)
			tp.pass("tcp", server443, "-mark", vpnMark)
			tp.wantSome("phys-udp-1194", "phys-tcp-443")

			tp.apply("up", "--dev", "tun0")
			tp.zero()
			tp.forwardFromPeer()
			tp.rejected("udp", serverIP+":5000")
			tp.rejected("udp", server6udp)
			tp.wantZero("phys-all", "phys6-all", "tun0-all")
			tp.pass("udp", inetTun0+":5000")
			tp.pass("tcp", inetTun0+":8080")
			tp.wantSome("tun0-all")
			tp.wantStatus("connected", "tun0")

			// Left alone, every one of them.
			if now := tp.host.MustRun(tool.ipt+"-save") + tp.host.MustRun(tool.ip6t+"-save"); saveCounters.ReplaceAllString(saveComment.ReplaceAllString(now, ""), "") !=
				saveCounters.ReplaceAllString(saveComment.ReplaceAllString(others, ""), "") {
				t.Errorf("the other firewall's rules changed:\n%s", lineDiff(others, now))
			}
			if got := nftTable(tp.nftRuleset(), "inet early"); got != early {
				t.Errorf("table inet early changed:\n%s", lineDiff(early, got))
			}
		})
	}
}

// testRulesetFlushed: another tool that flushes the whole ruleset, or
// deletes only our table, opens the host; check says so and names the
// table, status shows it disarmed, and baseline closes the host again.
func testRulesetFlushed(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
	tp.addTunnel(0)
	for _, how := range [][]string{{"flush", "ruleset"}, {"delete", "table", "inet", "vpnfw"}} {
		t.Logf("another tool runs nft %s", strings.Join(how, " "))
		foreign := nftTable(tp.nftRuleset(), "inet foreign")
		if foreign == "" {
			foreign = tp.addForeignNFT()
		}
		tp.apply("baseline")
		tp.apply("up", "--dev", "tun0")
		tp.nft(how...)
		tp.wantCheckSays("table inet vpnfw is missing")
		r := tp.hook("status", "--json")
		var st struct {
			Armed        bool
			State, Check string
		}
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil {
			t.Fatalf("status --json: %s", r)
		}
		if st.Armed || st.State != "disarmed" || !strings.Contains(st.Check, "table inet vpnfw is missing") {
			t.Errorf("status after nft %s: want disarmed, check naming the table: %s", strings.Join(how, " "), r.Stdout)
		}
		// Why check matters: the host is open now.
		tp.pass("udp", serverIP+":5000")
		if how[0] == "delete" {
			if got := nftTable(tp.nftRuleset(), "inet foreign"); got != foreign {
				t.Errorf("deleting our table changed another:\n%s", lineDiff(foreign, got))
			}
		}
		tp.apply("baseline")
		tp.wantStatus("blocked")
		tp.zero()
		tp.rejected("udp", serverIP+":5000")
		tp.rejected("udp", inetTun0+":5000")
		tp.wantZero("phys-all", "tun0-all")
	}
}

// testDormantTable: a table of ours another tool made dormant lets
// everything pass; check must say so and baseline must wake it.
func testDormantTable(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_MARK="+vpnMark)
	tp.apply("baseline")
	tp.rejected("udp", serverIP+":5000")
	tp.nft("add", "table", "inet", "vpnfw", "{ flags dormant; }")
	tp.pass("udp", serverIP+":5000")
	tp.wantCheck(1)
	tp.apply("baseline")
	if strings.Contains(tp.nft("list", "table", "inet", "vpnfw"), "dormant") {
		t.Errorf("baseline left table inet vpnfw dormant")
	}
	tp.zero()
	tp.rejected("udp", serverIP+":5000")
	tp.wantZero("phys-all")
}

// fillOutputHook adds, in a table of another tool, as many base chains on
// the IPv4 output hook as the kernel takes (it allows 1024 functions on
// one hook), and returns how many. Replacing a table with a base chain
// there then needs one more, since the kernel hooks the new table's chains
// before it unhooks the old ones: it refuses the whole batch (E2BIG).
func (tp *topo) fillOutputHook() int {
	tp.t.Helper()
	try := func(n int) bool {
		var b strings.Builder
		b.WriteString("table ip hookfill {\n")
		for i := range n {
			fmt.Fprintf(&b, "\tchain c%d { type filter hook output priority 10; policy accept; }\n", i)
		}
		b.WriteString("}\n")
		return tp.nftFile(b.String()).Code == 0
	}
	lo, hi := 0, 1100
	if try(hi) {
		tp.t.Fatalf("the kernel took %d base chains on one hook: no limit to make it refuse a batch with", hi)
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if try(mid) {
			tp.nft("delete", "table", "ip", "hookfill")
			lo = mid
		} else {
			hi = mid
		}
	}
	if !try(lo) {
		tp.t.Fatalf("filling the output hook with %d base chains failed", lo)
	}
	return lo
}

// testRefusedBatch: a batch the kernel refuses changes nothing. With the
// output hook full, replacing the table fails (exit 1): the previous table
// stays exactly as it was and still blocks, and up and down, which only
// change the tunnel set, still work. A switch from iptables to nftables
// that the kernel refuses leaves iptables armed and no table behind.
func testRefusedBatch(t *testing.T, fl flavour) {
	cfg := []string{"VPNFW_SERVERS=" + serverIP, "VPNFW_VPN_MARK=" + vpnMark}
	// The new configuration opens the physical link's network as a LAN.
	wider := append(cfg[:len(cfg):len(cfg)], "VPNFW_LAN=192.0.2.0/24")
	tp := newTopo(t, fl, cfg...)
	tp.addTunnel(0)
	tp.addTunnel(1)
	tp.apply("baseline")
	tp.apply("up", "--dev", "tun0")
	before := nftTable(tp.nftRuleset(), "inet vpnfw")
	t.Logf("%d base chains of another table fill the output hook", tp.fillOutputHook())

	tp.apply("up", "--dev", "tun1")
	tp.pass("udp", inetTun1+":5000")
	tp.apply("down", "--dev", "tun1")

	tp.configure(fl, wider...)
	for _, cmd := range [][]string{{"baseline"}, {"up", "--dev", "tun0"}} {
		r := tp.hook(cmd...)
		if r.Code != 1 || !strings.Contains(r.Stderr, "refused the batch") {
			t.Fatalf("%s with the output hook full: want exit 1, the batch refused: %s", strings.Join(cmd, " "), r)
		}
		wantSame(t, "the refused "+strings.Join(cmd, " "), before, nftTable(tp.nftRuleset(), "inet vpnfw"))
	}
	tp.zero()
	tp.rejected("udp", serverIP+":5000")
	tp.rejected("tcp", serverIP+":8080")
	tp.wantZero("phys-all")
	tp.pass("udp", inetTun0+":5000")
	tp.wantCheck(1) // not the new configuration
	tp.configure(fl, cfg...)
	tp.wantCheck(0)
	tp.wantStatus("connected", "tun0")

	// With room again, the new configuration applies.
	tp.nft("delete", "table", "ip", "hookfill")
	tp.configure(fl, wider...)
	tp.apply("baseline")
	tp.pass("udp", serverIP+":5000")

	// A switch to nftables the kernel refuses.
	tp.configure(nfTablesFlavour, cfg...)
	tp.apply("baseline")
	tp.apply("up", "--dev", "tun0")
	if tp.holds(fl) {
		t.Fatalf("the switch to iptables left our table:\n%s", tp.nftRuleset())
	}
	ipt := tp.iptSave()
	t.Logf("%d base chains of another table fill the output hook", tp.fillOutputHook())
	tp.configure(fl, cfg...)
	for _, cmd := range [][]string{{"baseline"}, {"up", "--dev", "tun0"}} {
		r := tp.hook(cmd...)
		if r.Code != 1 || !strings.Contains(r.Stderr, "refused the batch") {
			t.Fatalf("%s switching to nftables with the output hook full: want exit 1, the batch refused: %s", strings.Join(cmd, " "), r)
		}
		if tp.holds(fl) {
			t.Errorf("the refused switch (%s) left a table:\n%s", strings.Join(cmd, " "), tp.nftRuleset())
		}
		wantSame(t, "the refused switch ("+strings.Join(cmd, " ")+")", ipt, tp.iptSaveOf(nfTablesFlavour))
	}
	tp.zero()
	tp.rejected("udp", serverIP+":5000")
	tp.wantZero("phys-all")
	tp.pass("udp", inetTun0+":5000")
	tp.configure(nfTablesFlavour, cfg...)
	tp.wantCheck(0)

	tp.nft("delete", "table", "ip", "hookfill")
	tp.configure(fl, cfg...)
	tp.apply("up", "--dev", "tun0")
	if tp.holds(nfTablesFlavour) {
		t.Errorf("iptables chains remain after the switch:\n%s", tp.iptSaveOf(nfTablesFlavour))
	}
}
