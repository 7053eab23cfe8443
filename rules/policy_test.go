package rules_test

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
	"github.com/vpnfw/vpnfw/rules/iptables"
	"github.com/vpnfw/vpnfw/rules/nftables"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func mustConfig(t *testing.T, m map[string]string) *rules.Config {
	t.Helper()
	cfg, err := rules.FromMap(m, testOpts)
	if err != nil {
		t.Fatalf("config %v: %v", m, err)
	}
	return cfg
}

var goldenCases = []struct {
	name    string
	env     map[string]string
	tunnels []string
}{
	{"blocked-minimal", map[string]string{}, nil},
	{"blocked-mark", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10", "VPNFW_SERVER_PORTS": "udp/1194 tcp/443", "VPNFW_VPN_MARK": "119",
	}, nil},
	{"blocked-user", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10 198.51.100.0/24", "VPNFW_VPN_USER": "openvpn",
	}, nil},
	{"blocked-mark-user", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "0x77", "VPNFW_VPN_USER": "1000",
	}, nil},
	{"connected-one-tunnel", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119",
	}, []string{"tun0"}},
	{"connected-two-tunnels", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_TUN_DEVICES": "tun+ ppp+",
	}, []string{"tun1", "ppp0"}},
	{"lan", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_LAN": "192.168.1.0/24 10.0.0.0/8",
	}, nil},
	{"lan-ipv6", map[string]string{"VPNFW_LAN": "fd00::/64"}, nil},
	{"dhcp", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_ALLOW_DHCP": "yes",
	}, nil},
	{"ipv6-servers", map[string]string{
		"VPNFW_SERVERS": "2001:db8::10 2001:db8:1::/48 192.0.2.10", "VPNFW_VPN_MARK": "119",
	}, nil},
	{"ipv6-servers-connected-block", map[string]string{
		"VPNFW_SERVERS": "2001:db8::10 192.0.2.10", "VPNFW_VPN_MARK": "119",
	}, []string{"tun0"}},
	{"ipv6-tunnel", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_IPV6": "tunnel",
	}, []string{"tun0"}},
	{"pptp", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10 2001:db8::10", "VPNFW_SERVER_PORTS": "tcp/1723 gre",
		"VPNFW_VPN_USER": "1000", "VPNFW_TUN_DEVICES": "ppp+",
	}, []string{"ppp0"}},
	{"gre-only", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10", "VPNFW_SERVER_PORTS": "gre", "VPNFW_VPN_MARK": "119",
	}, nil},
	{"everything", map[string]string{
		"VPNFW_SERVERS": "192.0.2.10 2001:db8::10", "VPNFW_SERVER_PORTS": "udp/1194 tcp/443",
		"VPNFW_VPN_MARK": "119", "VPNFW_VPN_USER": "openvpn", "VPNFW_TUN_DEVICES": "tun+ wg0",
		"VPNFW_LAN": "192.168.1.0/24 fd00::/64", "VPNFW_ALLOW_DHCP": "yes", "VPNFW_IPV6": "tunnel",
	}, []string{"wg0", "tun0"}},
}

func TestPolicyGolden(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			cfg := mustConfig(t, c.env)
			for _, d := range c.tunnels {
				if !cfg.AllowsDevice(d) {
					t.Fatalf("test bug: %s is not allowed by the config", d)
				}
			}
			rs := rules.Policy(cfg, c.tunnels)
			nft, err := nftables.Render(rs)
			if err != nil {
				t.Fatalf("nftables: %v", err)
			}
			golden(t, c.name+".iptables.golden", iptables.Render(rs))
			golden(t, c.name+".nftables.golden", nft)
		})
	}
}

// golden compares got with testdata/name, or with -update rewrites it.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./rules -run TestPolicyGolden -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the rendered policy (if the change is intended, run with -update):\n%s",
			path, lineDiff(string(want), got))
	}
}

// lineDiff shows the first differing lines of two texts.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	n := 0
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, wl, gl)
			if n++; n == 5 {
				break
			}
		}
	}
	return b.String()
}

// Beyond matching the golden files, a few facts must hold in the rendered text
// itself, so that a careless -update cannot bless a leak.
func TestPolicyGoldenFacts(t *testing.T) {
	render := func(env map[string]string, tunnels ...string) string {
		return iptables.Render(rules.Policy(mustConfig(t, env), tunnels))
	}
	sections := func(s string) (v4, v6 string) {
		i := strings.Index(s, "# ip6tables-restore --noflush\n")
		if !strings.HasPrefix(s, "# iptables-restore --noflush\n") || i < 0 {
			t.Fatalf("render lacks the two sections:\n%s", s)
		}
		return s[:i], s[i:]
	}

	// PPTP: GRE out only for the VPN client, GRE in only from the servers.
	v4, v6 := sections(render(map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_SERVER_PORTS": "tcp/1723 gre", "VPNFW_VPN_USER": "1000"}))
	for _, want := range []string{
		"-A VPNFW-OUTPUT -d 192.0.2.10/32 -p gre -m owner --uid-owner 1000 -m comment --comment \"vpnfw: vpn client to its servers\" -j ACCEPT\n",
		"-A VPNFW-OUTPUT -d 192.0.2.10/32 -p tcp -m tcp --dport 1723 -m owner --uid-owner 1000 -m comment --comment \"vpnfw: vpn client to its servers\" -j ACCEPT\n",
		"-A VPNFW-INPUT -s 192.0.2.10/32 -p gre -m comment --comment \"vpnfw: gre from vpn servers\" -j ACCEPT\n",
		"-A VPNFW-INPUT -m conntrack --ctstate RELATED,ESTABLISHED --ctproto 6 --ctorigdst 192.0.2.10 --ctorigdstport 1723 -m comment --comment \"vpnfw: replies from vpn servers\" -j ACCEPT\n",
	} {
		if !strings.Contains(v4, want) {
			t.Errorf("pptp render lacks %q:\n%s", want, v4)
		}
	}
	if strings.Count(v4, "-p gre") != 2 || strings.Contains(v6, "gre") || strings.Contains(v4, "--ctproto 47") {
		t.Errorf("pptp: GRE must appear exactly in the two rules above, IPv4 only:\n%s%s", v4, v6)
	}
	v4, _ = sections(render(map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_SERVER_PORTS": "gre", "VPNFW_VPN_MARK": "119"}))
	if strings.Contains(v4, "replies from vpn servers") {
		t.Errorf("gre only: a conntrack replies rule without ports would accept every protocol:\n%s", v4)
	}

	v4, v6 = sections(render(map[string]string{}))
	for _, sec := range []string{v4, v6} {
		for _, want := range []string{
			":INPUT DROP [0:0]", ":OUTPUT DROP [0:0]", ":FORWARD DROP [0:0]",
			"-A VPNFW-INPUT -i lo -m comment --comment \"vpnfw: loopback in\" -j ACCEPT",
			"-A VPNFW-OUTPUT -o lo -m comment --comment \"vpnfw: loopback out\" -j ACCEPT",
			"-I INPUT 1 -m comment --comment \"vpnfw: kill switch\" -j VPNFW-INPUT",
			"-I OUTPUT 1 -m comment --comment \"vpnfw: kill switch\" -j VPNFW-OUTPUT",
			"-I FORWARD 1 -m comment --comment \"vpnfw: kill switch\" -j VPNFW-FORWARD",
		} {
			if !strings.Contains(sec, want+"\n") {
				t.Errorf("minimal render lacks %q", want)
			}
		}
		if strings.Contains(sec, "ACCEPT [") {
			t.Errorf("a built-in policy is ACCEPT:\n%s", sec)
		}
		// Only loopback is accepted.
		if n := strings.Count(sec, "-j ACCEPT"); n != 2 {
			t.Errorf("minimal render accepts %d kinds of traffic, want only loopback in and out", n)
		}
	}

	mu := map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_VPN_USER": "1000"}
	v4, _ = sections(render(mu))
	want := "-A VPNFW-OUTPUT -d 192.0.2.10/32 -p udp -m udp --dport 1194 -m mark --mark 0x77 -m owner --uid-owner 1000 -m comment --comment \"vpnfw: vpn client to its servers\" -j ACCEPT\n"
	if !strings.Contains(v4, want) {
		t.Errorf("mark+user: server exception must carry both matches in one rule:\n%s", v4)
	}
	for _, l := range strings.Split(v4, "\n") {
		if strings.Contains(l, "-d 192.0.2.10") && (!strings.Contains(l, "--mark 0x77") || !strings.Contains(l, "--uid-owner 1000")) {
			t.Errorf("a rule to the server lacks the mark or owner match: %s", l)
		}
	}

	v4, v6 = sections(render(map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119"}, "tun0"))
	if !strings.Contains(v4, "-A VPNFW-OUTPUT -o tun0 ") || !strings.Contains(v4, "-A VPNFW-INPUT -i tun0 -m conntrack --ctstate RELATED,ESTABLISHED ") {
		t.Errorf("connected: IPv4 lacks the tunnel rules:\n%s", v4)
	}
	if strings.Contains(v6, "tun0") {
		t.Errorf("VPNFW_IPV6=block: IPv6 mentions tun0:\n%s", v6)
	}
	_, v6 = sections(render(map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_IPV6": "tunnel"}, "tun0"))
	if !strings.Contains(v6, "-A VPNFW-OUTPUT -o tun0 ") {
		t.Errorf("VPNFW_IPV6=tunnel: IPv6 lacks tun0:\n%s", v6)
	}
	_, v6 = sections(render(map[string]string{"VPNFW_SERVERS": "2001:db8::10", "VPNFW_VPN_MARK": "119"}))
	for _, typ := range []string{"133", "134", "135", "136"} {
		for _, ch := range []string{"INPUT", "OUTPUT"} {
			if !strings.Contains(v6, "-A VPNFW-"+ch+" -p ipv6-icmp -m icmp6 --icmpv6-type "+typ+" -m hl --hl-eq 255 ") {
				t.Errorf("IPv6 server: no neighbour discovery type %s in %s", typ, ch)
			}
		}
	}
	if strings.Contains(v6, "icmpv6-type 128") || strings.Contains(v6, "icmpv6-type 129") {
		t.Errorf("IPv6: echo is allowed")
	}
}

// matchesNothing reports whether r has no match at all: it decides every
// packet that reaches it.
func matchesNothing(r rules.Rule) bool {
	return r.InIface == "" && r.OutIface == "" && !r.InTunnel && !r.OutTunnel && len(r.Src) == 0 && len(r.Dst) == 0 && len(r.L4) == 0 && !r.CtOriginal &&
		!r.CtEstablished && r.Mark == 0 && r.UID == nil && !r.HopLimit255
}

// policyCases enumerates many valid configurations and tunnel sets.
func policyCases(t *testing.T) []struct {
	name    string
	cfg     *rules.Config
	tunnels []string
} {
	var out []struct {
		name    string
		cfg     *rules.Config
		tunnels []string
	}
	servers := []string{"", "192.0.2.10", "2001:db8::10", "192.0.2.10 198.51.100.0/24 2001:db8::10 2001:db8:1::/48"}
	portSets := []string{"udp/1194 tcp/443", "tcp/1723 gre", "gre"}
	owners := [][2]string{{"119", ""}, {"", "openvpn"}, {"0x77", "1000"}}
	lans := []string{"", "192.168.1.0/24", "fd00::/64", "10.0.0.0/8 fd00::/64"}
	tunnelSets := [][]string{nil, {"tun0"}, {"tun1", "tun0"}, {"tun0", "ppp0", "tun0"}}
	for _, s := range servers {
		for _, o := range owners {
			for _, lan := range lans {
				for _, dhcp := range []string{"yes", "no"} {
					for _, v6 := range []string{"block", "tunnel"} {
						for _, tun := range tunnelSets {
							for _, ports := range portSets {
								m := map[string]string{
									"VPNFW_SERVERS": s, "VPNFW_VPN_MARK": o[0], "VPNFW_VPN_USER": o[1],
									"VPNFW_SERVER_PORTS": ports, "VPNFW_TUN_DEVICES": "tun+ ppp+",
									"VPNFW_LAN": lan, "VPNFW_ALLOW_DHCP": dhcp, "VPNFW_IPV6": v6,
								}
								out = append(out, struct {
									name    string
									cfg     *rules.Config
									tunnels []string
								}{fmt.Sprintf("servers=%q ports=%q owner=%v lan=%q dhcp=%s ipv6=%s tunnels=%v", s, ports, o, lan, dhcp, v6, tun), mustConfig(t, m), tun})
							}
						}
					}
				}
			}
		}
	}
	return out
}

func TestPolicyProperties(t *testing.T) {
	for _, c := range policyCases(t) {
		rs := rules.Policy(c.cfg, c.tunnels)
		fail := func(format string, a ...any) { t.Errorf("%s: %s", c.name, fmt.Sprintf(format, a...)) }

		wantTunnels := slices.Compact(slices.Sorted(slices.Values(c.tunnels)))
		if !slices.Equal(rs.Tunnels, wantTunnels) {
			fail("Tunnels = %v, want %v", rs.Tunnels, wantTunnels)
		}
		if (rs.State == rules.Connected) != (len(wantTunnels) > 0) || (rs.State != rules.Connected && rs.State != rules.Blocked) {
			fail("State = %q with tunnels %v", rs.State, wantTunnels)
		}
		for i, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
			tb := rs.Tables[i]
			if tb.Family != fam {
				fail("table %d is %v", i, tb.Family)
			}
			for _, h := range rules.Hooks {
				ch := tb.Chains[h]
				where := fmt.Sprintf("%v %v", fam, h)
				if ch.Hook != h {
					fail("%s: chain has hook %v", where, ch.Hook)
				}
				if len(ch.Rules) == 0 {
					fail("%s: empty chain", where)
					continue
				}
				last := ch.Rules[len(ch.Rules)-1]
				if !matchesNothing(last) || (last.Verdict != rules.Drop && last.Verdict != rules.Reject) {
					fail("%s: last rule %+v is not an unconditional DROP/REJECT", where, last)
				}
				if h != rules.Output && last.Verdict != rules.Drop {
					fail("%s: last rule %v, want drop", where, last.Verdict)
				}
				for _, r := range ch.Rules {
					if strings.TrimSpace(r.Purpose) == "" {
						fail("%s: rule without a purpose: %+v", where, r)
					}
					if r.Verdict == rules.Accept && matchesNothing(r) {
						fail("%s: rule %q accepts everything", where, r.Purpose)
					}
					if r.Verdict == rules.RejectTCPReset && (len(r.L4) == 0 || slices.ContainsFunc(r.L4, func(l rules.L4) bool { return l.Proto != rules.TCP })) {
						fail("%s: tcp reset on non-tcp rule %q", where, r.Purpose)
					}
					if h == rules.Forward && r.Verdict == rules.Accept {
						fail("%s: forwarding accepted by %q", where, r.Purpose)
					}
					if h == rules.Output && r.Verdict == rules.Accept && (r.CtEstablished || r.CtOriginal) {
						fail("%s: %q accepts on conntrack state", where, r.Purpose)
					}
					// Conntrack state is trusted only with an interface or the
					// original tuple of a flow allowed out.
					if r.Verdict == rules.Accept && r.CtEstablished && !r.CtOriginal && r.InIface == "" && !r.InTunnel {
						fail("%s: %q accepts established flows on any interface", where, r.Purpose)
					}
					if r.CtOriginal && (!r.CtEstablished || len(r.Dst) == 0) {
						fail("%s: %q matches the original tuple without established state and destination", where, r.Purpose)
					}
					for _, d := range r.Dst {
						if d.Addr().Is4() != (fam == rules.IPv4) {
							fail("%s: %q has destination %v of the other family", where, r.Purpose, d)
						}
					}
					// A source match is GRE from the servers, inbound, and nothing else.
					for _, src := range r.Src {
						if src.Addr().Is4() != (fam == rules.IPv4) || !slices.Contains(c.cfg.Servers, src) {
							fail("%s: %q has source %v, not a server of this family", where, r.Purpose, src)
						}
					}
					if len(r.Src) > 0 && (h != rules.Input || len(r.L4) != 1 || r.L4[0] != (rules.L4{Proto: rules.GRE}) ||
						!c.cfg.AllowsEndpoint(rules.Endpoint{Proto: rules.GRE}) || len(r.Dst) > 0 || r.InIface != "") {
						fail("%s: %q matches a source but is not GRE in from the servers with gre configured: %+v", where, r.Purpose, r)
					}
					// Every accepting input rule without an interface is tied
					// to a flow allowed out, or is GRE from a server.
					if h == rules.Input && r.Verdict == rules.Accept && r.InIface == "" && !r.InTunnel && !r.CtOriginal && len(r.Src) == 0 && !r.HopLimit255 &&
						!(len(r.L4) == 1 && r.L4[0].Proto == rules.UDP && r.L4[0].DstPort == 68) {
						fail("%s: %q accepts input that belongs to no allowed flow: %+v", where, r.Purpose, r)
					}
					if r.CtOriginal && len(r.L4) == 0 && len(r.Dst) > 0 && r.Purpose == "replies from vpn servers" {
						fail("%s: %q accepts replies of every protocol from the servers", where, r.Purpose)
					}
					for _, l := range r.L4 {
						if l.Proto == rules.ICMPv6 && fam != rules.IPv6 {
							fail("%s: ICMPv6 in %v", where, fam)
						}
					}
					// Only loopback gets an interface of its own; tunnels are
					// the tunnel set, in IPv6 only with VPNFW_IPV6=tunnel.
					for _, dev := range []string{r.InIface, r.OutIface} {
						if dev != "" && dev != "lo" {
							fail("%s: %q names device %s, which is not loopback", where, r.Purpose, dev)
						}
					}
					if (r.InTunnel || r.OutTunnel) && fam == rules.IPv6 && !c.cfg.IPv6Tunnel {
						fail("%s: VPNFW_IPV6=block but %q allows the tunnels", where, r.Purpose)
					}
					if r.InTunnel && (!r.CtEstablished || h != rules.Input) || r.OutTunnel && h != rules.Output {
						fail("%s: %q: tunnels are allowed out, and in only for established flows: %+v", where, r.Purpose, r)
					}
				}
				// Server exception: every rule letting packets out to a server
				// address carries the VPN client's mark and/or uid, exactly as configured.
				if h == rules.Output {
					seen := 0
					for _, r := range ch.Rules {
						if r.Verdict != rules.Accept || !slices.ContainsFunc(r.Dst, func(d netip.Prefix) bool { return slices.Contains(c.cfg.Servers, d) }) {
							continue
						}
						seen++
						if r.Mark == 0 && r.UID == nil {
							fail("%s: %q lets every process reach the server", where, r.Purpose)
						}
						if r.Mark != c.cfg.VPNMark || !reflect.DeepEqual(r.UID, c.cfg.VPNUser) {
							fail("%s: %q has mark %#x uid %v, config mark %#x uid %v", where, r.Purpose, r.Mark, r.UID, c.cfg.VPNMark, c.cfg.VPNUser)
						}
						if len(r.L4) == 0 || r.OutIface != "" {
							fail("%s: %q is not limited to the server ports", where, r.Purpose)
						}
						for _, l := range r.L4 {
							if !c.cfg.AllowsEndpoint(rules.Endpoint{Proto: l.Proto, Port: l.DstPort}) {
								fail("%s: %q allows %s/%d, not in VPNFW_SERVER_PORTS", where, r.Purpose, l.Proto, l.DstPort)
							}
						}
					}
					hasServers := slices.ContainsFunc(c.cfg.Servers, func(p netip.Prefix) bool { return p.Addr().Is4() == (fam == rules.IPv4) })
					if hasServers != (seen == 1) {
						fail("%s: %d server exceptions with servers=%v", where, seen, c.cfg.Servers)
					}
				}
			}
		}
		// The allowed tunnels are the ruleset's, and IPv4 lets them out and
		// their replies in.
		if !slices.Equal(rs.Tunnels, wantTunnels) {
			fail("tunnels %v, want %v", rs.Tunnels, wantTunnels)
		}
		out := rs.Tables[rules.IPv4].Chains[rules.Output].Rules
		if !slices.ContainsFunc(out, func(r rules.Rule) bool { return r.OutTunnel && r.Verdict == rules.Accept }) {
			fail("tunnels are not allowed out")
		}
		in := rs.Tables[rules.IPv4].Chains[rules.Input].Rules
		if !slices.ContainsFunc(in, func(r rules.Rule) bool { return r.InTunnel && r.CtEstablished && r.Verdict == rules.Accept }) {
			fail("tunnel replies are not allowed in")
		}
		if t.Failed() {
			return
		}
	}
}

func TestPolicyDeterministic(t *testing.T) {
	cfg := mustConfig(t, map[string]string{
		"VPNFW_SERVERS": "192.0.2.10 2001:db8::10", "VPNFW_VPN_MARK": "119", "VPNFW_TUN_DEVICES": "tun+ ppp+ wg0",
		"VPNFW_LAN": "192.168.1.0/24", "VPNFW_ALLOW_DHCP": "yes", "VPNFW_IPV6": "tunnel",
	})
	base := rules.Policy(cfg, []string{"ppp0", "tun0", "tun1", "wg0"})
	baseText := iptables.Render(base)
	for _, tun := range [][]string{
		{"ppp0", "tun0", "tun1", "wg0"},
		{"wg0", "tun1", "tun0", "ppp0"},
		{"tun1", "ppp0", "wg0", "tun0"},
		{"tun0", "tun0", "wg0", "ppp0", "tun1", "wg0", "tun1"},
	} {
		in := slices.Clone(tun)
		rs := rules.Policy(cfg, tun)
		if !slices.Equal(tun, in) {
			t.Errorf("Policy modified its tunnels argument: %v -> %v", in, tun)
		}
		if !reflect.DeepEqual(rs, base) {
			t.Errorf("Policy(%v) differs from Policy(sorted)", in)
		}
		if got := iptables.Render(rs); got != baseText {
			t.Errorf("Render(Policy(%v)) differs:\n%s", in, lineDiff(baseText, got))
		}
	}
	if n, e := rules.Policy(cfg, nil), rules.Policy(cfg, []string{}); n.State != rules.Blocked || e.State != rules.Blocked ||
		len(n.Tunnels)+len(e.Tunnels) != 0 || !reflect.DeepEqual(n.Tables, e.Tables) {
		t.Error("nil and empty tunnel lists give different rulesets")
	}
	// The config is not modified either.
	before := *mustConfig(t, map[string]string{
		"VPNFW_SERVERS": "192.0.2.10 2001:db8::10", "VPNFW_VPN_MARK": "119", "VPNFW_TUN_DEVICES": "tun+ ppp+ wg0",
		"VPNFW_LAN": "192.168.1.0/24", "VPNFW_ALLOW_DHCP": "yes", "VPNFW_IPV6": "tunnel",
	})
	if !reflect.DeepEqual(*cfg, before) {
		t.Errorf("Policy modified the config")
	}
	// Changing one tunnel changes only that tunnel's rules.
	a := iptables.Render(rules.Policy(cfg, []string{"tun0", "tun1"}))
	b := iptables.Render(rules.Policy(cfg, []string{"tun1"}))
	if strings.Contains(b, "tun0") || strings.Count(a, "tun1") != strings.Count(b, "tun1") {
		t.Errorf("removing tun0 touched tun1 or left tun0:\n%s", lineDiff(a, b))
	}
}

// The boot lockdown is the blocked state of an empty configuration: only
// loopback, the ruleset of the blocked-minimal golden file.
func TestLockdown(t *testing.T) {
	cfg := rules.Lockdown()
	if len(cfg.Servers)+len(cfg.LAN) != 0 || cfg.AllowDHCP || cfg.IPv6Tunnel || cfg.Backend != "auto" {
		t.Fatalf("lockdown config allows more than loopback or picks a backend: %+v", cfg)
	}
	got := iptables.Render(rules.Policy(cfg, nil))
	want, err := os.ReadFile(filepath.Join("testdata", "blocked-minimal.iptables.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("lockdown differs from blocked-minimal:\n%s", lineDiff(string(want), got))
	}
	for _, l := range strings.Split(got, "\n") {
		if strings.Contains(l, "-j ACCEPT") && !strings.Contains(l, " -i lo ") && !strings.Contains(l, " -o lo ") {
			t.Errorf("lockdown accepts more than loopback: %s", l)
		}
	}
}
