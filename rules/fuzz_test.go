package rules_test

import (
	"bytes"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
	"github.com/vpnfw/vpnfw/rules/nftables"
)

// FuzzParse feeds arbitrary configuration files to the parser. Whatever it
// accepts must still give a fail-closed policy: the server exception carries
// the VPN client's mark or user, and every chain ends in a drop or reject
// that matches everything; and the nftables backend can render it.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"VPNFW_SERVERS=192.0.2.10\nVPNFW_VPN_MARK=119\n",
		"VPNFW_SERVERS=192.0.2.0/24,2001:db8::/64\nVPNFW_SERVER_PORTS=udp/1194 tcp/443 gre\nVPNFW_VPN_USER=4242\n",
		"VPNFW_LAN=198.51.100.0/24\nVPNFW_ALLOW_DHCP=yes\nVPNFW_IPV6=tunnel\nVPNFW_TUN_DEVICES=tun0 ppp+\n",
		"VPNFW_SERVERS=0.0.0.0/0\nVPNFW_VPN_MARK=0x77\n",
		"export VPNFW_SERVERS='192.0.2.1'\n# comment\nVPNFW_VPN_MARK=\"1\"\n",
		"VPNFW_TUN_DEVICES=+\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := rules.Parse(bytes.NewReader(data), rules.LoadOptions{LookupUser: fakeUsers})
		if err != nil {
			return
		}
		if len(cfg.Servers) > 0 && cfg.VPNMark == 0 && cfg.VPNUser == nil {
			t.Fatalf("servers without the VPN client's mark or user accepted: %q", data)
		}
		for _, p := range cfg.TunDevices {
			if p == "+" || p.Matches("lo") {
				t.Fatalf("device pattern %q accepted: %q", p, data)
			}
		}
		rs := rules.Policy(cfg, []string{"tun0"})
		// The nftables backend takes every ruleset the policy makes.
		if _, err := nftables.Render(rs); err != nil {
			t.Fatalf("nftables cannot render the policy of %q: %v", data, err)
		}
		for _, tb := range rs.Tables {
			for _, c := range tb.Chains {
				last := c.Rules[len(c.Rules)-1]
				if last.Verdict == rules.Accept || !matchesNothing(last) {
					t.Fatalf("%s %s chain does not end in a catch-all drop/reject: %+v", tb.Family, c.Hook, last)
				}
				for _, r := range c.Rules {
					if r.Purpose == "vpn client to its servers" && r.Mark == 0 && r.UID == nil {
						t.Fatalf("server exception without mark or user: %q", data)
					}
				}
			}
		}
	})
}
