package main

import (
	"strings"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
	"github.com/vpnfw/vpnfw/rules/iptables"
	"github.com/vpnfw/vpnfw/rules/nftables"
)

// FuzzOpenVPNEnvironment feeds arbitrary OpenVPN variables to the event
// parser. Whatever gets through must name one tunnel device the
// configuration allows, and the rendered rules of both backends must allow
// exactly that device and nothing wider.
func FuzzOpenVPNEnvironment(f *testing.F) {
	f.Add("up", "tun0", "192.0.2.10", "1194", "udp")
	f.Add("route-up", "tun1", "2001:db8::10", "443", "tcp-client")
	f.Add("down", "tun0;id", "", "", "")
	f.Add("up", "tun+", "192.0.2.10", "1194", "udp")
	f.Add("up", "eth0", "192.0.2.10", "01194", "udp4")
	f.Add("bogus", "tun0", "192.0.2.10%eth0", "65536", "sctp")
	cfg, err := rules.FromMap(map[string]string{
		"VPNFW_SERVERS": "192.0.2.10 2001:db8::10", "VPNFW_SERVER_PORTS": "udp/1194 tcp/443", "VPNFW_VPN_MARK": "119",
	}, rules.LoadOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, scriptType, dev, ip, port, proto string) {
		env := map[string]string{"script_type": scriptType, "dev": dev, "trusted_ip": ip, "trusted_port": port, "proto_1": proto}
		ev, err := openVPNEvent(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil || ev.validate(cfg) != nil {
			return
		}
		if ev.Dev != dev || rules.ValidIfaceName(dev) != nil || strings.Contains(dev, "+") || !strings.HasPrefix(dev, "tun") {
			t.Fatalf("accepted device %q", dev)
		}
		if ev.Command == "up" && !cfg.AllowsServer(ev.Server) {
			t.Fatalf("accepted server %q outside VPNFW_SERVERS", ip)
		}
		var devLines []string
		for _, l := range strings.Split(iptables.Render(rules.Policy(cfg, []string{ev.Dev})), "\n") {
			if (strings.Contains(l, " -o ") || strings.Contains(l, " -i ")) && !strings.Contains(l, " lo ") {
				devLines = append(devLines, l)
			}
		}
		want := []string{
			`-A VPNFW-INPUT -i ` + dev + ` -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "vpnfw: tunnel ` + dev + ` replies" -j ACCEPT`,
			`-A VPNFW-OUTPUT -o ` + dev + ` -m comment --comment "vpnfw: tunnel ` + dev + ` out" -j ACCEPT`,
		}
		if strings.Join(devLines, "\n") != strings.Join(want, "\n") {
			t.Fatalf("device %q: rules naming a device:\n%s", dev, strings.Join(devLines, "\n"))
		}
		// In nftables the device is the tunnel set's one element, and no
		// rule names a device but loopback.
		text, err := nftables.Render(rules.Policy(cfg, []string{ev.Dev}))
		if err != nil {
			t.Fatal(err)
		}
		devLines = nil
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "ifname ") && !strings.Contains(l, `ifname "lo" `) && !strings.Contains(l, "ifname @tunnels ") ||
				strings.Contains(l, "set tunnels ") {
				devLines = append(devLines, strings.TrimSpace(l))
			}
		}
		if want := `set tunnels { type ifname; elements = { "` + dev + `" }; }`; len(devLines) != 1 || devLines[0] != want {
			t.Fatalf("device %q: nftables lines naming a device:\n%s", dev, strings.Join(devLines, "\n"))
		}
	})
}
