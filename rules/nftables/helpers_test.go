package nftables

import (
	"fmt"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
)

// testOpts resolves the user names the test configurations use without the
// system's user database.
var testOpts = rules.LoadOptions{LookupUser: func(name string) (uint32, error) {
	switch name {
	case "openvpn":
		return 998, nil
	case "nobody":
		return 65534, nil
	}
	return 0, fmt.Errorf("unknown user %q", name)
}}

func mustConfig(t testing.TB, env map[string]string) *rules.Config {
	t.Helper()
	cfg, err := rules.FromMap(env, testOpts)
	if err != nil {
		t.Fatalf("config %v: %v", env, err)
	}
	return cfg
}

func mustBuild(t testing.TB, rs *rules.Ruleset) *table {
	t.Helper()
	tb, err := build(rs)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return tb
}

// everythingEnv is the golden "everything" configuration: both families,
// mark and user, LAN, DHCP, IPv6 through the tunnel.
var everythingEnv = map[string]string{
	"VPNFW_SERVERS": "192.0.2.10 2001:db8::10", "VPNFW_SERVER_PORTS": "udp/1194 tcp/443",
	"VPNFW_VPN_MARK": "119", "VPNFW_VPN_USER": "openvpn", "VPNFW_TUN_DEVICES": "tun+ wg0",
	"VPNFW_LAN": "192.168.1.0/24 fd00::/64", "VPNFW_ALLOW_DHCP": "yes", "VPNFW_IPV6": "tunnel",
}

// serversEnv is everythingEnv with the given servers.
func serversEnv(servers string) map[string]string {
	env := map[string]string{}
	for k, v := range everythingEnv {
		env[k] = v
	}
	env["VPNFW_SERVERS"] = servers
	return env
}

// manyServers returns n IPv4 server addresses in 198.18.0.0/15, none
// adjacent to another, so none of them merge into a range: 2n elements.
func manyServers(n int) string {
	b := make([]byte, 0, n*16)
	for i := range n {
		a := 2 * i // every other address
		b = fmt.Appendf(b, "198.%d.%d.%d ", 18+a>>16, a>>8&0xff, a&0xff)
	}
	return string(b)
}
