package iptables

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
)

func renderTestUID(n uint32) *uint32 { return &n }

func renderTestPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// The expected lines below are in the form `iptables -S CHAIN` prints them;
// they were checked against iptables-nft and iptables-legacy in a throwaway
// network namespace. Check compares the live ruleset with ChainRules line by
// line, so any drift here makes `check` fail on a correct ruleset.
func TestChainRulesCanonical(t *testing.T) {
	udp1194 := []rules.L4{{Proto: rules.UDP, DstPort: 1194}}
	nd := []rules.L4{{Proto: rules.ICMPv6, ICMPType: 135}}
	cases := []struct {
		name string
		fam  rules.Family
		hook rules.Hook
		rule rules.Rule
		want []string
	}{
		{"server exception with mark", rules.IPv4, rules.Output,
			rules.Rule{Purpose: "vpn client to its servers", Dst: renderTestPrefixes("192.0.2.10/32"), L4: udp1194, Mark: 0x77, Verdict: rules.Accept},
			[]string{`-A VPNFW-OUTPUT -d 192.0.2.10/32 -p udp -m udp --dport 1194 -m mark --mark 0x77 -m comment --comment "vpnfw: vpn client to its servers" -j ACCEPT`}},
		{"server exception with mark and user", rules.IPv4, rules.Output,
			rules.Rule{Purpose: "vpn client to its servers", Dst: renderTestPrefixes("192.0.2.10/32"), L4: []rules.L4{{Proto: rules.TCP, DstPort: 443}}, Mark: 119, UID: renderTestUID(1000), Verdict: rules.Accept},
			[]string{`-A VPNFW-OUTPUT -d 192.0.2.10/32 -p tcp -m tcp --dport 443 -m mark --mark 0x77 -m owner --uid-owner 1000 -m comment --comment "vpnfw: vpn client to its servers" -j ACCEPT`}},
		{"server exception with user only", rules.IPv6, rules.Output,
			rules.Rule{Purpose: "vpn client to its servers", Dst: renderTestPrefixes("2001:db8::10/128"), L4: udp1194, UID: renderTestUID(998), Verdict: rules.Accept},
			[]string{`-A VPNFW-OUTPUT -d 2001:db8::10/128 -p udp -m udp --dport 1194 -m owner --uid-owner 998 -m comment --comment "vpnfw: vpn client to its servers" -j ACCEPT`}},
		{"replies from a single server", rules.IPv4, rules.Input,
			rules.Rule{Purpose: "replies from vpn servers", Dst: renderTestPrefixes("192.0.2.10/32"), L4: udp1194, CtOriginal: true, CtEstablished: true, Verdict: rules.Accept},
			[]string{`-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctproto 17 --ctorigdst 192.0.2.10 --ctorigdstport 1194 -m comment --comment "vpnfw: replies from vpn servers" -j ACCEPT`}},
		{"replies from a server network over tcp", rules.IPv4, rules.Input,
			rules.Rule{Purpose: "replies from vpn servers", Dst: renderTestPrefixes("198.51.100.0/24"), L4: []rules.L4{{Proto: rules.TCP, DstPort: 443}}, CtOriginal: true, CtEstablished: true, Verdict: rules.Accept},
			[]string{`-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctproto 6 --ctorigdst 198.51.100.0/24 --ctorigdstport 443 -m comment --comment "vpnfw: replies from vpn servers" -j ACCEPT`}},
		{"replies from an IPv6 server", rules.IPv6, rules.Input,
			rules.Rule{Purpose: "replies from vpn servers", Dst: renderTestPrefixes("2001:db8::10/128"), L4: udp1194, CtOriginal: true, CtEstablished: true, Verdict: rules.Accept},
			[]string{`-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctproto 17 --ctorigdst 2001:db8::10 --ctorigdstport 1194 -m comment --comment "vpnfw: replies from vpn servers" -j ACCEPT`}},
		{"replies from lan", rules.IPv6, rules.Input,
			rules.Rule{Purpose: "replies from lan", Dst: renderTestPrefixes("fd00::/64"), CtOriginal: true, CtEstablished: true, Verdict: rules.Accept},
			[]string{`-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctorigdst fd00::/64 -m comment --comment "vpnfw: replies from lan" -j ACCEPT`}},
		{"lan out", rules.IPv4, rules.Output,
			rules.Rule{Purpose: "lan out", Dst: renderTestPrefixes("192.168.1.0/24"), Verdict: rules.Accept},
			[]string{`-A VPNFW-OUTPUT -d 192.168.1.0/24 -m comment --comment "vpnfw: lan out" -j ACCEPT`}},
		{"loopback in", rules.IPv4, rules.Input,
			rules.Rule{Purpose: "loopback in", InIface: "lo", Verdict: rules.Accept},
			[]string{`-A VPNFW-INPUT -i lo -m comment --comment "vpnfw: loopback in" -j ACCEPT`}},
		{"tunnel out", rules.IPv4, rules.Output,
			rules.Rule{Purpose: "tunnels out", OutTunnel: true, Verdict: rules.Accept},
			[]string{`-A VPNFW-OUTPUT -o tun0 -m comment --comment "vpnfw: tunnel tun0 out" -j ACCEPT`}},
		{"tunnel replies", rules.IPv4, rules.Input,
			rules.Rule{Purpose: "tunnel replies", InTunnel: true, CtEstablished: true, Verdict: rules.Accept},
			[]string{`-A VPNFW-INPUT -i tun0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "vpnfw: tunnel tun0 replies" -j ACCEPT`}},
		{"neighbour discovery", rules.IPv6, rules.Output,
			rules.Rule{Purpose: "ipv6 neighbour discovery out", L4: nd, HopLimit255: true, Verdict: rules.Accept},
			[]string{`-A VPNFW-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -m comment --comment "vpnfw: ipv6 neighbour discovery out" -j ACCEPT`}},
		{"dhcp out", rules.IPv4, rules.Output,
			rules.Rule{Purpose: "dhcp client out", L4: []rules.L4{{Proto: rules.UDP, SrcPort: 68, DstPort: 67}}, Verdict: rules.Accept},
			[]string{`-A VPNFW-OUTPUT -p udp -m udp --sport 68 --dport 67 -m comment --comment "vpnfw: dhcp client out" -j ACCEPT`}},
		{"tcp reset", rules.IPv6, rules.Output,
			rules.Rule{Purpose: "fail closed: reset other tcp", L4: []rules.L4{{Proto: rules.TCP}}, Verdict: rules.RejectTCPReset},
			[]string{`-A VPNFW-OUTPUT -p tcp -m comment --comment "vpnfw: fail closed: reset other tcp" -j REJECT --reject-with tcp-reset`}},
		{"reject ipv4", rules.IPv4, rules.Output,
			rules.Rule{Purpose: "fail closed: reject everything else", Verdict: rules.Reject},
			[]string{`-A VPNFW-OUTPUT -m comment --comment "vpnfw: fail closed: reject everything else" -j REJECT --reject-with icmp-admin-prohibited`}},
		{"reject ipv6", rules.IPv6, rules.Output,
			rules.Rule{Purpose: "fail closed: reject everything else", Verdict: rules.Reject},
			[]string{`-A VPNFW-OUTPUT -m comment --comment "vpnfw: fail closed: reject everything else" -j REJECT --reject-with icmp6-adm-prohibited`}},
		{"drop forward", rules.IPv4, rules.Forward,
			rules.Rule{Purpose: "fail closed: no forwarding", Verdict: rules.Drop},
			[]string{`-A VPNFW-FORWARD -m comment --comment "vpnfw: fail closed: no forwarding" -j DROP`}},
		{"sets expand destination-major", rules.IPv4, rules.Output,
			rules.Rule{Purpose: "p", Dst: renderTestPrefixes("192.0.2.10/32", "198.51.100.0/24"), L4: []rules.L4{{Proto: rules.TCP, DstPort: 443}, {Proto: rules.UDP, DstPort: 1194}}, Mark: 1, Verdict: rules.Accept},
			[]string{
				`-A VPNFW-OUTPUT -d 192.0.2.10/32 -p tcp -m tcp --dport 443 -m mark --mark 0x1 -m comment --comment "vpnfw: p" -j ACCEPT`,
				`-A VPNFW-OUTPUT -d 192.0.2.10/32 -p udp -m udp --dport 1194 -m mark --mark 0x1 -m comment --comment "vpnfw: p" -j ACCEPT`,
				`-A VPNFW-OUTPUT -d 198.51.100.0/24 -p tcp -m tcp --dport 443 -m mark --mark 0x1 -m comment --comment "vpnfw: p" -j ACCEPT`,
				`-A VPNFW-OUTPUT -d 198.51.100.0/24 -p udp -m udp --dport 1194 -m mark --mark 0x1 -m comment --comment "vpnfw: p" -j ACCEPT`,
			}},
		{"largest mark", rules.IPv4, rules.Output,
			rules.Rule{Purpose: "p", Dst: renderTestPrefixes("192.0.2.10/32"), L4: udp1194, Mark: 0xffffffff, Verdict: rules.Accept},
			[]string{`-A VPNFW-OUTPUT -d 192.0.2.10/32 -p udp -m udp --dport 1194 -m mark --mark 0xffffffff -m comment --comment "vpnfw: p" -j ACCEPT`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ChainRules(c.fam, rules.Chain{Hook: c.hook, Rules: []rules.Rule{c.rule}}, []string{"tun0"})
			if !slices.Equal(got, c.want) {
				t.Errorf("ChainRules:\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestChainRulesKeepsOrder(t *testing.T) {
	ch := rules.Chain{Hook: rules.Input, Rules: []rules.Rule{
		{Purpose: "a", InIface: "lo", Verdict: rules.Accept},
		{Purpose: "b", InIface: "tun0", CtEstablished: true, Verdict: rules.Accept},
		{Purpose: "c", Verdict: rules.Drop},
	}}
	got := ChainRules(rules.IPv4, ch, nil)
	if len(got) != 3 || !strings.Contains(got[0], `"vpnfw: a"`) || !strings.Contains(got[1], `"vpnfw: b"`) || !strings.HasSuffix(got[2], `"vpnfw: c" -j DROP`) {
		t.Errorf("ChainRules = %q", got)
	}
	if got := ChainRules(rules.IPv4, rules.Chain{Hook: rules.Forward}, []string{"tun0"}); len(got) != 0 {
		t.Errorf("empty chain rendered as %q", got)
	}
	// With no tunnel allowed, a tunnel rule matches nothing: it is not
	// rendered at all, never as a rule without an interface.
	tun := rules.Chain{Hook: rules.Output, Rules: []rules.Rule{{Purpose: "tunnels out", OutTunnel: true, Verdict: rules.Accept}}}
	if got := ChainRules(rules.IPv4, tun, nil); len(got) != 0 {
		t.Errorf("tunnel rule without tunnels rendered as %q", got)
	}
	if got := ChainRules(rules.IPv4, tun, []string{"tun0", "tun1"}); len(got) != 2 || !strings.Contains(got[1], "-o tun1 ") {
		t.Errorf("tunnel rule for two tunnels rendered as %q", got)
	}
}

func TestJumpSpec(t *testing.T) {
	for h, want := range map[rules.Hook]string{
		rules.Input:   `-m comment --comment "vpnfw: kill switch" -j VPNFW-INPUT`,
		rules.Output:  `-m comment --comment "vpnfw: kill switch" -j VPNFW-OUTPUT`,
		rules.Forward: `-m comment --comment "vpnfw: kill switch" -j VPNFW-FORWARD`,
	} {
		if got := jumpSpec(h); got != want {
			t.Errorf("jumpSpec(%v) = %q, want %q", h, got, want)
		}
	}
}

func TestFindJumps(t *testing.T) {
	// findJumps gets the rules of a built-in chain as iptables-save lists
	// them, without the policy.
	jump := "-A INPUT " + jumpSpec(rules.Input)
	other := "-A INPUT -s 10.9.9.9/32 -j ACCEPT"
	cases := []struct {
		name  string
		lines []string
		want  jumpState
	}{
		{"empty chain", nil, jumpState{}},
		{"other rules only", []string{other, other}, jumpState{}},
		{"lone jump first", []string{jump}, jumpState{count: 1, first: true}},
		{"jump first, then others", []string{jump, other}, jumpState{count: 1, first: true}},
		{"jump not first", []string{other, jump}, jumpState{count: 1}},
		{"duplicates, one first", []string{jump, other, jump}, jumpState{count: 2, first: true}},
		{"adjacent duplicates first", []string{jump, jump}, jumpState{count: 2, first: true}},
		{"duplicates, none first", []string{other, jump, jump}, jumpState{count: 2}},
		{"lookalikes do not count", []string{
			"-A INPUT -j VPNFW-INPUT",
			`-A INPUT -m comment --comment "vpnfw: kill switch" -j VPNFW-OUTPUT`,
			`-A INPUT -i eth0 -m comment --comment "vpnfw: kill switch" -j VPNFW-INPUT`,
			`-A OUTPUT -m comment --comment "vpnfw: kill switch" -j VPNFW-INPUT`,
			jump + " ",
		}, jumpState{}},
	}
	for _, c := range cases {
		if got := findJumps(rules.Input, c.lines); got != c.want {
			t.Errorf("%s: findJumps = %+v, want %+v", c.name, got, c.want)
		}
	}
	// The chain name follows the hook.
	if got := findJumps(rules.Output, []string{"-A OUTPUT " + jumpSpec(rules.Output)}); got != (jumpState{count: 1, first: true}) {
		t.Errorf("OUTPUT: %+v", got)
	}
	if got := findJumps(rules.Output, []string{jump}); got != (jumpState{}) {
		t.Errorf("OUTPUT counted an INPUT jump: %+v", got)
	}
}

// renderTestCountLines returns how many lines of text equal line.
func renderTestCountLines(text, line string) int {
	n := 0
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			n++
		}
	}
	return n
}

func TestRestoreTextJumps(t *testing.T) {
	table := rules.Policy(&rules.Config{ServerPorts: []rules.Endpoint{{Proto: rules.UDP, Port: 1194}}}, nil).Tables[0]
	del := func(h rules.Hook) string { return "-D " + builtinNames[h] + " " + jumpSpec(h) }
	ins := func(h rules.Hook) string { return "-I " + builtinNames[h] + " 1 " + jumpSpec(h) }
	cases := []struct {
		name    string
		j       jumpState
		deletes int
		inserts int
	}{
		{"lone jump first: untouched", jumpState{count: 1, first: true}, 0, 0},
		{"missing: insert only", jumpState{}, 0, 1},
		{"one jump not first: delete and insert", jumpState{count: 1}, 1, 1},
		{"duplicates with one first", jumpState{count: 2, first: true}, 2, 1},
		{"three copies none first", jumpState{count: 3}, 3, 1},
	}
	for _, c := range cases {
		for _, h := range rules.Hooks {
			t.Run(c.name+"/"+h.String(), func(t *testing.T) {
				// Only hook h is in state c.j; the others are a lone first jump.
				var jumps [len(rules.Hooks)]jumpState
				for _, o := range rules.Hooks {
					jumps[o] = jumpState{count: 1, first: true}
				}
				jumps[h] = c.j
				text := restoreText(table, nil, jumps)
				if n := renderTestCountLines(text, del(h)); n != c.deletes {
					t.Errorf("%d deletes of the %s jump, want %d:\n%s", n, builtinNames[h], c.deletes, text)
				}
				if n := renderTestCountLines(text, ins(h)); n != c.inserts {
					t.Errorf("%d inserts of the %s jump, want %d:\n%s", n, builtinNames[h], c.inserts, text)
				}
				for _, o := range rules.Hooks {
					if o != h && (strings.Contains(text, "-D "+builtinNames[o]+" ") || strings.Contains(text, "-I "+builtinNames[o]+" ")) {
						t.Errorf("touched the jump of %s, which was already right:\n%s", builtinNames[o], text)
					}
				}
				// Deletes are by spec, never by number, and precede the insert.
				for _, l := range strings.Split(text, "\n") {
					if strings.HasPrefix(l, "-D ") && l != del(h) {
						t.Errorf("unexpected delete %q", l)
					}
				}
				if c.inserts > 0 && strings.LastIndex(text, del(h)) > strings.Index(text, ins(h)) {
					t.Errorf("a delete follows the insert:\n%s", text)
				}
				if !strings.HasSuffix(text, "COMMIT\n") || strings.Count(text, "COMMIT") != 1 {
					t.Errorf("not one transaction ending in COMMIT:\n%s", text)
				}
			})
		}
	}
}

func TestRestoreTextLayout(t *testing.T) {
	cfg := &rules.Config{
		Servers: renderTestPrefixes("192.0.2.10/32"), ServerPorts: []rules.Endpoint{{Proto: rules.UDP, Port: 1194}}, VPNMark: 119,
	}
	for _, tb := range rules.Policy(cfg, []string{"tun0"}).Tables {
		text := restoreText(tb, []string{"tun0"}, [len(rules.Hooks)]jumpState{})
		lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		head := []string{"*filter",
			":INPUT DROP [0:0]", ":OUTPUT DROP [0:0]", ":FORWARD DROP [0:0]",
			":VPNFW-INPUT - [0:0]", ":VPNFW-OUTPUT - [0:0]", ":VPNFW-FORWARD - [0:0]"}
		if !slices.Equal(lines[:len(head)], head) {
			t.Errorf("%v: head %q, want %q", tb.Family, lines[:len(head)], head)
		}
		var body []string
		for _, h := range rules.Hooks {
			body = append(body, ChainRules(tb.Family, tb.Chains[h], []string{"tun0"})...)
		}
		if got := lines[len(head) : len(head)+len(body)]; !slices.Equal(got, body) {
			t.Errorf("%v: chain rules\n got %q\nwant %q", tb.Family, got, body)
		}
		tail := lines[len(head)+len(body):]
		wantTail := []string{
			"-I INPUT 1 " + jumpSpec(rules.Input),
			"-I OUTPUT 1 " + jumpSpec(rules.Output),
			"-I FORWARD 1 " + jumpSpec(rules.Forward),
			"COMMIT",
		}
		if !slices.Equal(tail, wantTail) {
			t.Errorf("%v: tail %q, want %q", tb.Family, tail, wantTail)
		}
		// Nothing in a transaction may open the host.
		for _, l := range lines {
			if strings.Contains(l, "ACCEPT [") || strings.HasPrefix(l, "-F") || strings.HasPrefix(l, "-X") || strings.HasPrefix(l, "-P") {
				t.Errorf("%v: dangerous line %q", tb.Family, l)
			}
		}
	}
}

func TestRender(t *testing.T) {
	cfg := &rules.Config{ServerPorts: []rules.Endpoint{{Proto: rules.UDP, Port: 1194}}}
	rs := rules.Policy(cfg, nil)
	out := Render(rs)
	want := "# iptables-restore --noflush\n" + restoreText(rs.Tables[0], rs.Tunnels, [3]jumpState{}) +
		"# ip6tables-restore --noflush\n" + restoreText(rs.Tables[1], rs.Tunnels, [3]jumpState{})
	if out != want {
		t.Errorf("Render:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(out, "icmp-admin-prohibited") || !strings.Contains(out, "icmp6-adm-prohibited") {
		t.Errorf("the sections do not render their own family:\n%s", out)
	}
}

// Tunnels reads the allowed tunnels back with tunnelRule: it must recognise
// exactly what ChainRules writes for a tunnel and nothing else.
func TestTunnelRuleReadsBackChainRules(t *testing.T) {
	cfg := &rules.Config{
		Servers: renderTestPrefixes("192.0.2.10/32"), ServerPorts: []rules.Endpoint{{Proto: rules.UDP, Port: 1194}}, VPNMark: 119,
		TunDevices: []rules.DevicePattern{"tun+", "ppp+"}, LAN: renderTestPrefixes("192.168.1.0/24"), AllowDHCP: true,
	}
	tunnels := []string{"ppp0", "tun0", "tun1", "tun_a-b.c"}
	out := rules.Policy(cfg, tunnels).Tables[0].Chains[rules.Output]
	var got []string
	for _, l := range ChainRules(rules.IPv4, out, tunnels) {
		if m := tunnelRule.FindStringSubmatch(l); m != nil && m[1] == m[2] {
			got = append(got, m[1])
		}
	}
	if !slices.Equal(got, tunnels) {
		t.Errorf("read back %v, want %v", got, tunnels)
	}
	for _, l := range []string{
		`-A VPNFW-OUTPUT -o tun0 -m comment --comment "vpnfw: tunnel tun0 out" -j DROP`,
		`-A VPNFW-OUTPUT -o tun0 -m comment --comment "vpnfw: tunnel tun0 replies" -j ACCEPT`,
		`-A VPNFW-INPUT -o tun0 -m comment --comment "vpnfw: tunnel tun0 out" -j ACCEPT`,
		`-A VPNFW-OUTPUT -o tun0 -p tcp -m comment --comment "vpnfw: tunnel tun0 out" -j ACCEPT`,
		`-A VPNFW-OUTPUT -o tun0 -m comment --comment "vpnfw: tunnel tun0 out" -j ACCEPT `,
	} {
		if tunnelRule.MatchString(l) {
			t.Errorf("tunnelRule matches %q", l)
		}
	}
}

func TestFirstDifference(t *testing.T) {
	a := []string{"-N X", "-A X 1", "-A X 2"}
	if err := firstDifference(a, slices.Clone(a)); err != nil {
		t.Errorf("equal: %v", err)
	}
	for _, c := range []struct {
		live, want []string
		msg        string
	}{
		{a[:2], a, "rule 3 is missing: -A X 2"},
		{a, a[:2], "unexpected rule 3: -A X 2"},
		{[]string{"-N X", "-A X 9", "-A X 2"}, a, "rule 2 is -A X 9, expected -A X 1"},
		{nil, a, "rule 1 is missing: -N X"},
	} {
		err := firstDifference(c.live, c.want)
		if err == nil || err.Error() != c.msg {
			t.Errorf("firstDifference(%q, %q) = %v, want %q", c.live, c.want, err, c.msg)
		}
	}
}

// renderTestSaveCapture is `iptables-nft-save -t filter` (v1.8.9) of a network
// namespace holding another tool's chain FOREIGN, a duplicate jump added by
// hand, and the IPv4 table of renderTestCaptureConfig with tunnels tun0 and
// ppp0 applied by restoreText. iptables-legacy-save printed the same lines.
const renderTestSaveCapture = `# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Nov 24 22:44:06 2026
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
:FOREIGN - [0:0]
:VPNFW-FORWARD - [0:0]
:VPNFW-INPUT - [0:0]
:VPNFW-OUTPUT - [0:0]
-A INPUT -m comment --comment "vpnfw: kill switch" -j VPNFW-INPUT
-A INPUT -j FOREIGN
-A INPUT -m comment --comment "vpnfw: kill switch" -j VPNFW-INPUT
-A FORWARD -m comment --comment "vpnfw: kill switch" -j VPNFW-FORWARD
-A OUTPUT -m comment --comment "vpnfw: kill switch" -j VPNFW-OUTPUT
-A FOREIGN -s 10.9.9.9/32 -j ACCEPT
-A VPNFW-FORWARD -m comment --comment "vpnfw: fail closed: no forwarding" -j DROP
-A VPNFW-INPUT -i lo -m comment --comment "vpnfw: loopback in" -j ACCEPT
-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctproto 6 --ctorigdst 192.0.2.10 --ctorigdstport 443 -m comment --comment "vpnfw: replies from vpn servers" -j ACCEPT
-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctproto 17 --ctorigdst 192.0.2.10 --ctorigdstport 1194 -m comment --comment "vpnfw: replies from vpn servers" -j ACCEPT
-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctproto 6 --ctorigdst 198.51.100.0/24 --ctorigdstport 443 -m comment --comment "vpnfw: replies from vpn servers" -j ACCEPT
-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctproto 17 --ctorigdst 198.51.100.0/24 --ctorigdstport 1194 -m comment --comment "vpnfw: replies from vpn servers" -j ACCEPT
-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctorigdst 192.168.1.0/24 -m comment --comment "vpnfw: replies from lan" -j ACCEPT
-A VPNFW-INPUT -p udp -m udp --sport 67 --dport 68 -m comment --comment "vpnfw: dhcp client in" -j ACCEPT
-A VPNFW-INPUT -i ppp0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "vpnfw: tunnel ppp0 replies" -j ACCEPT
-A VPNFW-INPUT -i tun0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "vpnfw: tunnel tun0 replies" -j ACCEPT
-A VPNFW-INPUT -m comment --comment "vpnfw: fail closed: drop everything else" -j DROP
-A VPNFW-OUTPUT -o lo -m comment --comment "vpnfw: loopback out" -j ACCEPT
-A VPNFW-OUTPUT -d 192.0.2.10/32 -p tcp -m tcp --dport 443 -m mark --mark 0x77 -m owner --uid-owner 1000 -m comment --comment "vpnfw: vpn client to its servers" -j ACCEPT
-A VPNFW-OUTPUT -d 192.0.2.10/32 -p udp -m udp --dport 1194 -m mark --mark 0x77 -m owner --uid-owner 1000 -m comment --comment "vpnfw: vpn client to its servers" -j ACCEPT
-A VPNFW-OUTPUT -d 198.51.100.0/24 -p tcp -m tcp --dport 443 -m mark --mark 0x77 -m owner --uid-owner 1000 -m comment --comment "vpnfw: vpn client to its servers" -j ACCEPT
-A VPNFW-OUTPUT -d 198.51.100.0/24 -p udp -m udp --dport 1194 -m mark --mark 0x77 -m owner --uid-owner 1000 -m comment --comment "vpnfw: vpn client to its servers" -j ACCEPT
-A VPNFW-OUTPUT -d 192.168.1.0/24 -m comment --comment "vpnfw: lan out" -j ACCEPT
-A VPNFW-OUTPUT -p udp -m udp --sport 68 --dport 67 -m comment --comment "vpnfw: dhcp client out" -j ACCEPT
-A VPNFW-OUTPUT -o ppp0 -m comment --comment "vpnfw: tunnel ppp0 out" -j ACCEPT
-A VPNFW-OUTPUT -o tun0 -m comment --comment "vpnfw: tunnel tun0 out" -j ACCEPT
-A VPNFW-OUTPUT -p tcp -m comment --comment "vpnfw: fail closed: reset other tcp" -j REJECT --reject-with tcp-reset
-A VPNFW-OUTPUT -m comment --comment "vpnfw: fail closed: reject everything else" -j REJECT --reject-with icmp-admin-prohibited
COMMIT
# Completed on Tue Nov 24 22:44:06 2026
`

func renderTestCaptureConfig() *rules.Config {
	return &rules.Config{
		Servers:     renderTestPrefixes("192.0.2.10/32", "198.51.100.0/24", "2001:db8::10/128", "2001:db8:1::/48"),
		ServerPorts: []rules.Endpoint{{Proto: rules.TCP, Port: 443}, {Proto: rules.UDP, Port: 1194}},
		VPNMark:     119, VPNUser: renderTestUID(1000),
		TunDevices: []rules.DevicePattern{"tun+", "ppp+"},
		LAN:        renderTestPrefixes("192.168.1.0/24", "fd00::/64"),
		AllowDHCP:  true, IPv6Tunnel: true,
	}
}

// renderTestSave prints what iptables-save would list for a host where
// restoreText(t, no jumps) was applied to an empty table.
func renderTestSave(t rules.Table, tunnels []string) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, n := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		b.WriteString(":" + n + " DROP [0:0]\n")
	}
	for _, n := range []string{"VPNFW-FORWARD", "VPNFW-INPUT", "VPNFW-OUTPUT"} {
		b.WriteString(":" + n + " - [0:0]\n")
	}
	for _, h := range []rules.Hook{rules.Input, rules.Forward, rules.Output} {
		b.WriteString("-A " + builtinNames[h] + " " + jumpSpec(h) + "\n")
	}
	for _, h := range []rules.Hook{rules.Forward, rules.Input, rules.Output} {
		for _, l := range ChainRules(t.Family, t.Chains[h], tunnels) {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func renderTestParse(t *testing.T, text string) *snapshot {
	t.Helper()
	s, err := parseSave(text)
	if err != nil {
		t.Fatalf("parseSave: %v", err)
	}
	return s
}

func TestParseSaveCapture(t *testing.T) {
	s := renderTestParse(t, renderTestSaveCapture)
	wantPolicies := map[string]string{"INPUT": "DROP", "FORWARD": "DROP", "OUTPUT": "DROP"}
	if len(s.policies) != 3 || s.policies["INPUT"] != "DROP" || s.policies["FORWARD"] != "DROP" || s.policies["OUTPUT"] != "DROP" {
		t.Errorf("policies = %v, want %v", s.policies, wantPolicies)
	}
	if len(s.chains) != 7 {
		t.Errorf("%d chains, want 7: %v", len(s.chains), s.chains)
	}
	if got := findJumps(rules.Input, s.chains["INPUT"]); got != (jumpState{count: 2, first: true}) {
		t.Errorf("INPUT jumps = %+v", got)
	}
	if got := s.chains["FOREIGN"]; !slices.Equal(got, []string{"-A FOREIGN -s 10.9.9.9/32 -j ACCEPT"}) {
		t.Errorf("FOREIGN = %q", got)
	}
	// The lines the kernel printed are exactly what ChainRules renders.
	rs := rules.Policy(renderTestCaptureConfig(), []string{"tun0", "ppp0"})
	for _, h := range rules.Hooks {
		if got, want := s.chains[chainNames[h]], ChainRules(rules.IPv4, rs.Tables[0].Chains[h], rs.Tunnels); !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", chainNames[h], got, want)
		}
	}
}

func TestParseSave(t *testing.T) {
	s := renderTestParse(t, "# comment\n*filter\n:INPUT ACCEPT [12:345]\n:EMPTY - [0:0]\n-A INPUT -j EMPTY\nCOMMIT\n")
	if s.policies["INPUT"] != "ACCEPT" || len(s.policies) != 1 {
		t.Errorf("policies = %v", s.policies)
	}
	if rs, ok := s.chains["EMPTY"]; !ok || len(rs) != 0 {
		t.Errorf("EMPTY = %q, %v", rs, ok)
	}
	if empty := renderTestParse(t, ""); len(empty.chains)+len(empty.policies) != 0 {
		t.Errorf("empty output parsed as %+v", empty)
	}
	for _, bad := range []string{"*filter\n:INPUT\nCOMMIT\n", "*filter\n:\n", "-A \n"} {
		if _, err := parseSave(bad); err == nil {
			t.Errorf("parseSave(%q) accepted", bad)
		}
	}
}

// renderTestBackend is a backend whose table reads are already cached, so
// Tunnels and Check run on the given text and never execute anything.
func renderTestBackend(t *testing.T, v4, v6 string) *Backend {
	t.Helper()
	b := &Backend{flavour: NFTables}
	b.read[rules.IPv4] = renderTestParse(t, v4)
	b.read[rules.IPv6] = renderTestParse(t, v6)
	return b
}

func TestTunnelsFromSnapshot(t *testing.T) {
	rs := rules.Policy(renderTestCaptureConfig(), []string{"tun0", "ppp0"})
	b := renderTestBackend(t, renderTestSaveCapture, renderTestSave(rs.Tables[1], rs.Tunnels))
	got, err := b.Tunnels(context.Background())
	if err != nil || !slices.Equal(got, []string{"ppp0", "tun0"}) {
		t.Errorf("Tunnels = %v, %v; want [ppp0 tun0]", got, err)
	}

	// Lookalikes and foreign rules are not tunnels.
	forged := renderTestSave(rules.Policy(renderTestCaptureConfig(), nil).Tables[0], nil) + strings.Join([]string{
		`-A VPNFW-OUTPUT -o tun0 -m comment --comment "vpnfw: tunnel tun1 out" -j ACCEPT`,
		`-A VPNFW-OUTPUT -o tun2 -m comment --comment "vpnfw: tunnel tun2 out" -j DROP`,
		`-A VPNFW-INPUT -o tun3 -m comment --comment "vpnfw: tunnel tun3 out" -j ACCEPT`,
		`-A OUTPUT -o tun4 -m comment --comment "vpnfw: tunnel tun4 out" -j ACCEPT`,
	}, "\n") + "\n"
	b = renderTestBackend(t, forged, "")
	if got, err := b.Tunnels(context.Background()); err != nil || len(got) != 0 {
		t.Errorf("forged: Tunnels = %v, %v; want none", got, err)
	}

	// Not armed at all: no chain, no tunnels, no error.
	b = renderTestBackend(t, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n", "")
	if got, err := b.Tunnels(context.Background()); err != nil || len(got) != 0 {
		t.Errorf("unarmed: Tunnels = %v, %v", got, err)
	}
}

func TestCheckFromSnapshot(t *testing.T) {
	cfg := renderTestCaptureConfig()
	rs := rules.Policy(cfg, []string{"tun0", "ppp0"})
	v4, v6 := renderTestSave(rs.Tables[0], rs.Tunnels), renderTestSave(rs.Tables[1], rs.Tunnels)

	if err := renderTestBackend(t, renderTestSaveCapture, v6).Check(context.Background(), rs); err != nil {
		t.Errorf("real capture: %v", err)
	}
	if err := renderTestBackend(t, v4, v6).Check(context.Background(), rs); err != nil {
		t.Errorf("rendered state: %v", err)
	}

	replace := func(text, old, new string) string {
		t.Helper()
		if !strings.Contains(text, old) {
			t.Fatalf("test bug: %q not in the listing", old)
		}
		return strings.Replace(text, old, new, 1)
	}
	jumpIn := "-A INPUT " + jumpSpec(rules.Input) + "\n"
	tunOut := `-A VPNFW-OUTPUT -o tun0 -m comment --comment "vpnfw: tunnel tun0 out" -j ACCEPT` + "\n"
	lastOut := `-A VPNFW-OUTPUT -m comment --comment "vpnfw: fail closed: reject everything else" -j REJECT --reject-with icmp-admin-prohibited` + "\n"
	for _, c := range []struct {
		name   string
		v4, v6 string
		rs     *rules.Ruleset
		want   string
	}{
		{"policy ACCEPT", replace(v4, ":OUTPUT DROP", ":OUTPUT ACCEPT"), v6, rs, "ipv4: OUTPUT policy is ACCEPT"},
		{"ipv6 policy ACCEPT", v4, replace(v6, ":FORWARD DROP", ":FORWARD ACCEPT"), rs, "ipv6: FORWARD policy is ACCEPT"},
		{"jump not first", replace(v4, jumpIn, "-A INPUT -j ACCEPT\n"+jumpIn), v6, rs, "first rule of INPUT is not the jump"},
		{"jump missing", replace(v4, jumpIn, ""), v6, rs, "first rule of INPUT is not the jump"},
		{"chain missing", replace(strings.ReplaceAll(v4, "-A VPNFW-FORWARD", "-A GONE"), ":VPNFW-FORWARD - [0:0]\n", ""), v6, rs, "chain VPNFW-FORWARD is missing"},
		{"rule missing", replace(v4, tunOut, ""), v6, rs, "VPNFW-OUTPUT"},
		{"foreign rule in our chain", replace(v4, lastOut, "-A VPNFW-OUTPUT -j ACCEPT\n"+lastOut), v6, rs, "VPNFW-OUTPUT"},
		{"rule after the final reject", replace(v4, lastOut, lastOut+"-A VPNFW-OUTPUT -j ACCEPT\n"), v6, rs, "unexpected rule"},
		{"tunnel down but still allowed", v4, v6, rules.Policy(cfg, []string{"ppp0"}), "tunnel tun0 replies"},
		{"ipv6 differs", v4, renderTestSave(rules.Policy(cfg, nil).Tables[1], nil), rs, "ipv6: VPNFW-"},
		{"empty table", "", "", rs, "policy is , expected DROP"},
	} {
		err := renderTestBackend(t, c.v4, c.v6).Check(context.Background(), c.rs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Check = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
