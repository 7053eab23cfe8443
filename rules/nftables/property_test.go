package nftables

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/vpnfw/vpnfw/rules"
)

type testConfig struct {
	env     map[string]string
	tunnels []string
}

// testConfigs are the configurations of the golden files, and a few at the
// edges of what the configuration accepts.
func testConfigs() []testConfig {
	return []testConfig{
		{map[string]string{}, nil},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_SERVER_PORTS": "udp/1194 tcp/443", "VPNFW_VPN_MARK": "119"}, nil},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10 198.51.100.0/24", "VPNFW_VPN_USER": "openvpn"}, nil},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "0x77", "VPNFW_VPN_USER": "1000"}, nil},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119"}, []string{"tun0"}},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_TUN_DEVICES": "tun+ ppp+"}, []string{"tun1", "ppp0"}},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_LAN": "192.168.1.0/24 10.0.0.0/8"}, nil},
		{map[string]string{"VPNFW_LAN": "fd00::/64"}, nil},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_ALLOW_DHCP": "yes"}, nil},
		{map[string]string{"VPNFW_SERVERS": "2001:db8::10 2001:db8:1::/48 192.0.2.10", "VPNFW_VPN_MARK": "119"}, nil},
		{map[string]string{"VPNFW_SERVERS": "2001:db8::10 192.0.2.10", "VPNFW_VPN_MARK": "119"}, []string{"tun0"}},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_IPV6": "tunnel"}, []string{"tun0"}},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10 2001:db8::10", "VPNFW_SERVER_PORTS": "tcp/1723 gre", "VPNFW_VPN_USER": "1000", "VPNFW_TUN_DEVICES": "ppp+"}, []string{"ppp0"}},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_SERVER_PORTS": "gre", "VPNFW_VPN_MARK": "119"}, nil},
		{everythingEnv, []string{"wg0", "tun0"}},
		// Edges: the top of both address spaces, merged and overlapping
		// prefixes, many ports, the longest interface name.
		{map[string]string{"VPNFW_SERVERS": "255.255.255.255 8000::/1", "VPNFW_VPN_MARK": "4294967295", "VPNFW_IPV6": "tunnel"}, []string{"tun0"}},
		{map[string]string{"VPNFW_SERVERS": "198.51.100.0/24 198.51.101.0/24 198.51.101.7", "VPNFW_VPN_MARK": "1",
			"VPNFW_LAN": "10.0.0.0/8 10.1.0.0/16 fd00::/8 fd00:1::/32"}, nil},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_SERVER_PORTS": "udp/1 udp/65535 tcp/1 tcp/65535 udp/53 tcp/53 gre", "VPNFW_VPN_USER": "nobody"}, nil},
		{map[string]string{"VPNFW_SERVERS": "192.0.2.10", "VPNFW_VPN_MARK": "119", "VPNFW_TUN_DEVICES": "abcdefghijklmno tun+"}, []string{"abcdefghijklmno", "tun0", "tun99999"}},
	}
}

// policyConfigs enumerates configurations as rules' policy tests do.
func policyConfigs(t *testing.T) []testConfig {
	var out []testConfig
	servers := []string{"", "192.0.2.10", "2001:db8::10", "192.0.2.10 198.51.100.0/24 2001:db8::10 2001:db8:1::/48"}
	portSets := []string{"udp/1194 tcp/443", "tcp/1723 gre", "gre", "udp/1194"}
	owners := [][2]string{{"119", ""}, {"", "openvpn"}, {"0x77", "1000"}}
	lans := []string{"", "192.168.1.0/24", "fd00::/64", "10.0.0.0/8 fd00::/64"}
	tunnelSets := [][]string{nil, {"tun0"}, {"tun1", "tun0"}, {"tun0", "ppp0", "tun0"}}
	for _, s := range servers {
		for _, o := range owners {
			for _, lan := range lans {
				for _, dhcp := range []string{"yes", "no"} {
					for _, v6 := range []string{"block", "tunnel"} {
						for _, ports := range portSets {
							for _, tun := range tunnelSets {
								out = append(out, testConfig{map[string]string{
									"VPNFW_SERVERS": s, "VPNFW_VPN_MARK": o[0], "VPNFW_VPN_USER": o[1],
									"VPNFW_SERVER_PORTS": ports, "VPNFW_TUN_DEVICES": "tun+ ppp+",
									"VPNFW_LAN": lan, "VPNFW_ALLOW_DHCP": dhcp, "VPNFW_IPV6": v6,
								}, tun})
							}
						}
					}
				}
			}
		}
	}
	return append(out, testConfigs()...)
}

// matches reports whether a rule's expressions hold a comparison or lookup,
// that is whether some packets do not meet its verdict.
func matches(r *rule) bool {
	return slices.ContainsFunc(r.exprs, func(e expr.Any) bool {
		switch e.(type) {
		case *expr.Cmp, *expr.Lookup:
			return true
		}
		return false
	})
}

// regName is how the renderer names a register nothing was loaded into.
var regName = regexp.MustCompile(`\breg[0-9]+\b`)

func verdictKind(r *rule) string {
	switch e := r.exprs[len(r.exprs)-1].(type) {
	case *expr.Verdict:
		switch e.Kind {
		case expr.VerdictAccept:
			return "accept"
		case expr.VerdictDrop:
			return "drop"
		case expr.VerdictJump:
			return "jump " + e.Chain
		}
		return fmt.Sprintf("verdict %d", e.Kind)
	case *expr.Reject:
		return "reject"
	}
	return "none"
}

// checkTable asserts what every built table must be: fail closed whatever
// the configuration.
func checkTable(t *testing.T, name string, tb *table) {
	t.Helper()
	fail := func(format string, a ...any) { t.Errorf("%s: %s", name, fmt.Sprintf(format, a...)) }
	if err := armed(tb); err != nil {
		fail("not armed: %v", err)
	}
	chains := map[string]*chain{}
	for _, c := range tb.chains {
		if chains[c.name] != nil {
			fail("chain %s twice", c.name)
		}
		chains[c.name] = c
	}
	if len(tb.chains) != 9 {
		fail("%d chains, want 3 base and 6 regular", len(tb.chains))
	}
	referenced := map[string]bool{}
	for _, c := range tb.chains {
		if c.hook != nil {
			if c.policy != gnft.ChainPolicyDrop {
				fail("base chain %s has policy %v", c.name, c.policy)
			}
			// A base chain only sends each family to its regular chain.
			var jumps []string
			for _, r := range c.rules {
				jumps = append(jumps, verdictKind(r))
			}
			if want := []string{"jump " + c.name + "_v4", "jump " + c.name + "_v6"}; !slices.Equal(jumps, want) {
				fail("base chain %s: %v, want %v", c.name, jumps, want)
			}
			continue
		}
		if len(c.rules) == 0 {
			fail("chain %s is empty", c.name)
			continue
		}
		last := c.rules[len(c.rules)-1]
		v := verdictKind(last)
		if matches(last) || (v != "drop" && v != "reject") {
			fail("chain %s ends with %q (%s), not an unconditional drop or reject", c.name, tb.ruleText(last), v)
		}
		if strings.HasPrefix(c.name, "output") != (v == "reject") {
			fail("chain %s ends with %s", c.name, v)
		}
		for _, r := range c.rules {
			if r.comment == "" {
				fail("chain %s: a rule without comment: %s", c.name, tb.ruleText(r))
			}
			switch v := verdictKind(r); {
			case v == "accept" && !matches(r):
				fail("chain %s: %q accepts every packet: %s", c.name, r.comment, tb.ruleText(r))
			case v == "accept" && strings.HasPrefix(c.name, "forward"):
				fail("chain %s: %q accepts forwarding", c.name, r.comment)
			case v != "accept" && v != "drop" && v != "reject":
				fail("chain %s: %q ends in %s", c.name, r.comment, v)
			}
			if !slices.ContainsFunc(r.exprs, func(e expr.Any) bool { _, ok := e.(*expr.Counter); return ok }) {
				fail("chain %s: %q has no counter", c.name, r.comment)
			}
			// Every lookup names a set of the table, or one of the rule's own.
			anon := 0
			for _, e := range r.exprs {
				l, ok := e.(*expr.Lookup)
				if !ok {
					continue
				}
				if s := tb.set(l.SetName); s != nil {
					referenced[s.name] = true
				} else if l.SetName == "" {
					anon++
				} else {
					fail("chain %s: %q looks up missing set %q", c.name, r.comment, l.SetName)
				}
			}
			if anon != len(r.anon) {
				fail("chain %s: %q has %d anonymous lookups and %d anonymous sets", c.name, r.comment, anon, len(r.anon))
			}
			text := tb.ruleText(r)
			if strings.Contains(text, "*expr.") || regName.MatchString(text) || strings.Contains(text, "0x") && !strings.Contains(text, "meta mark 0x") {
				fail("chain %s: %q does not print as nft would: %s", c.name, r.comment, text)
			}
		}
	}
	for _, s := range tb.sets {
		if !s.anonymous && !referenced[s.name] && s.name != TunnelSet {
			fail("set %s is not used", s.name)
		}
		if s.anonymous {
			fail("anonymous set %s among the named ones", s.name)
		}
	}
}

func TestBuildProperties(t *testing.T) {
	cases := policyConfigs(t)
	if len(cases) < 100 {
		t.Fatalf("only %d configurations", len(cases))
	}
	for _, c := range cases {
		cfg := mustConfig(t, c.env)
		for _, d := range c.tunnels {
			if !cfg.AllowsDevice(d) {
				t.Fatalf("test bug: %s is not allowed by %v", d, c.env)
			}
		}
		name := fmt.Sprintf("%v tunnels=%v", c.env, c.tunnels)
		rs := rules.Policy(cfg, c.tunnels)
		tb, err := build(rs)
		if err != nil {
			t.Errorf("%s: build: %v", name, err)
			continue
		}
		checkTable(t, name, tb)
		// The tunnel set holds exactly the ruleset's tunnels.
		var tun []string
		for _, e := range tb.set(TunnelSet).elems {
			tun = append(tun, strings.TrimRight(string(e.Key), "\x00"))
		}
		if !slices.Equal(tun, rs.Tunnels) {
			t.Errorf("%s: tunnel set %v, want %v", name, tun, rs.Tunnels)
		}
		// The tunnels change nothing but the tunnel set.
		other, err := build(rules.Policy(cfg, []string{"tun7"}))
		if err != nil {
			t.Fatal(err)
		}
		if !tb.sameBut(other, TunnelSet) || tb.sameBut(other, "") {
			t.Errorf("%s: the tunnels change more than the tunnel set", name)
		}
		if t.Failed() {
			return
		}
	}
}

// The rule path does not grow with the number of servers: 10,000 servers
// give the same chains and rules as one, only the server set differs.
func TestBuildRuleCountIndependentOfServers(t *testing.T) {
	many := manyServers(10000)
	seen := map[string]bool{}
	for _, c := range policyConfigs(t) {
		// One case per server list, ports and owner; LAN, DHCP and IPv6
		// do not touch the server rules.
		key := c.env["VPNFW_SERVERS"] + "|" + c.env["VPNFW_SERVER_PORTS"] + "|" + c.env["VPNFW_VPN_MARK"] + c.env["VPNFW_VPN_USER"]
		if !strings.Contains(c.env["VPNFW_SERVERS"], "192.0.2.10") || seen[key] {
			continue
		}
		seen[key] = true
		one, err := build(rules.Policy(mustConfig(t, c.env), c.tunnels))
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for k, v := range c.env {
			env[k] = v
		}
		env["VPNFW_SERVERS"] = strings.Replace(env["VPNFW_SERVERS"], "192.0.2.10", many, 1)
		big, err := build(rules.Policy(mustConfig(t, env), c.tunnels))
		if err != nil {
			t.Fatalf("%v: build with 10,000 servers: %v", c.env, err)
		}
		checkTable(t, "10,000 servers", big)
		if n, m := ruleCount(one), ruleCount(big); n != m {
			t.Errorf("%v: %d rules with one server, %d with 10,000", c.env, n, m)
		}
		drop := func(ls []string) []string {
			return slices.DeleteFunc(ls, func(l string) bool { return strings.HasPrefix(l, "set servers_v4 ") })
		}
		if a, b := drop(one.lines(true)), drop(big.lines(true)); !slices.Equal(a, b) {
			t.Errorf("%v: 10,000 servers change more than the server set", c.env)
		}
		if n := len(big.set("servers_v4").elems); n != 20000 && !strings.Contains(c.env["VPNFW_SERVERS"], "198.51.100.0/24") {
			t.Errorf("%v: %d server elements, want 20000", c.env, n)
		}
	}
	if len(seen) < 6 {
		t.Fatalf("only %d configurations compared", len(seen))
	}
}

func ruleCount(tb *table) int {
	n := 0
	for _, c := range tb.chains {
		n += len(c.rules)
	}
	return n
}

// Every configuration applies on a kernel that starts empty, checks, and
// applies again without a batch.
func TestApplyCheckEveryConfig(t *testing.T) {
	ctx := context.Background()
	all := policyConfigs(t)
	for i, c := range all {
		if i%7 != 0 && i < len(all)-len(testConfigs()) {
			continue
		}
		rs := rules.Policy(mustConfig(t, c.env), c.tunnels)
		b, k := fakeBackend()
		if err := b.Apply(ctx, rs); err != nil {
			t.Fatalf("%v: Apply: %v", c.env, err)
		}
		if err := b.Check(ctx, rs); err != nil {
			t.Fatalf("%v: Check: %v", c.env, err)
		}
		flushes := k.flushes
		if err := b.Apply(ctx, rs); err != nil || k.flushes != flushes {
			t.Fatalf("%v: re-apply: %v, %d flushes", c.env, err, k.flushes-flushes)
		}
		st, err := b.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Armed || st.State != rs.State || !slices.Equal(st.Tunnels, append([]string{}, rs.Tunnels...)) {
			t.Errorf("%v: status %+v, want armed, %s, %v", c.env, st, rs.State, rs.Tunnels)
		}
	}
}
