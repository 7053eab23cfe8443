package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
)

// openVPNArgs is how OpenVPN calls `up "/usr/local/bin/vpnfw-hook --config F"`:
// the flags of the up line, then its own positional arguments.
func openVPNArgs(cfgPath string) []string {
	return []string{"--config", cfgPath, "tun0", "1500", "0", "10.8.0.2", "255.255.255.0", "init"}
}

// upEnv is the environment of a valid OpenVPN up script call.
func upEnv(kv ...string) map[string]string {
	m := map[string]string{
		"script_type":    "up",
		"dev":            "tun0",
		"trusted_ip":     "192.0.2.10",
		"trusted_port":   "1194",
		"proto_1":        "udp",
		"tun_mtu":        "1500",
		"ifconfig_local": "10.8.0.2",
		"common_name":    "vpn.example.com",
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "\x00" {
			delete(m, kv[i])
		} else {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

// Every hostile value in OpenVPN's environment is a usage error: exit 2 and
// nothing applied, not even a read of the live tunnels.
func TestHostileOpenVPNEnvironment(t *testing.T) {
	const unset = "\x00"
	cases := []struct {
		name string
		env  map[string]string
		msg  string // what stderr must mention
	}{
		{"script_type empty", upEnv("script_type", ""), "script_type"},
		{"script_type unknown", upEnv("script_type", "ipchange"), "script_type"},
		{"script_type tls-verify", upEnv("script_type", "tls-verify"), "script_type"},
		{"script_type route-pre-down", upEnv("script_type", "route-pre-down"), "script_type"},
		{"script_type upper case", upEnv("script_type", "UP"), "script_type"},
		{"script_type with space", upEnv("script_type", "up "), "script_type"},
		{"script_type baseline", upEnv("script_type", "baseline"), "script_type"},
		{"script_type disarm", upEnv("script_type", "disarm"), "script_type"},

		{"dev missing", upEnv("dev", unset), "dev"},
		{"dev empty", upEnv("dev", ""), "dev"},
		{"dev eth0", upEnv("dev", "eth0"), "eth0"},
		{"dev lo", upEnv("dev", "lo"), "lo"},
		{"dev tun without number", upEnv("dev", "tun"), "tun"},
		{"dev with command", upEnv("dev", "tun0;id"), "dev"},
		{"dev wildcard", upEnv("dev", "tun+"), "dev"},
		{"dev trailing space", upEnv("dev", "tun0 "), "dev"},
		{"dev leading space", upEnv("dev", " tun0"), "dev"},
		{"dev newline", upEnv("dev", "tun0\n-A OUTPUT -j ACCEPT"), "dev"},
		{"dev 16 chars", upEnv("dev", "tun0123456789abc"), "dev"},
		{"dev path", upEnv("dev", "../x"), "dev"},
		{"dev dotdot", upEnv("dev", ".."), "dev"},
		{"dev option", upEnv("dev", "-j"), "dev"},
		{"dev quote", upEnv("dev", `tun0"`), "dev"},
		{"dev non-ascii", upEnv("dev", "tün0"), "dev"},
		{"down dev eth0", upEnv("script_type", "down", "dev", "eth0"), "eth0"},
		{"down dev wildcard", upEnv("script_type", "down", "dev", "tun+"), "dev"},

		{"trusted_ip garbage", upEnv("trusted_ip", "vpn.example.com"), "trusted_ip"},
		{"trusted_ip empty", upEnv("trusted_ip", ""), "trusted_ip"},
		{"trusted_ip with zone", upEnv("trusted_ip", "fe80::1%eth0"), "trusted_ip"},
		{"trusted_ip CIDR", upEnv("trusted_ip", "192.0.2.0/24"), "trusted_ip"},
		{"trusted_ip leading zero", upEnv("trusted_ip", "192.0.2.010"), "trusted_ip"},
		{"trusted_ip with space", upEnv("trusted_ip", " 192.0.2.10"), "trusted_ip"},
		{"trusted_ip with port", upEnv("trusted_ip", "192.0.2.10:1194"), "trusted_ip"},
		{"trusted_ip missing on up", upEnv("trusted_ip", unset), "trusted_ip"},
		{"trusted_ip missing on route-up", upEnv("script_type", "route-up", "trusted_ip", unset), "trusted_ip"},
		{"trusted_ip6 garbage", upEnv("trusted_ip", unset, "trusted_ip6", "2001:db8::zz"), "trusted_ip"},
		{"trusted_ip garbage on down", upEnv("script_type", "down", "trusted_ip", "x"), "trusted_ip"},

		{"trusted_port 0", upEnv("trusted_port", "0"), "trusted_port"},
		{"trusted_port 65536", upEnv("trusted_port", "65536"), "trusted_port"},
		{"trusted_port +1", upEnv("trusted_port", "+1"), "trusted_port"},
		{"trusted_port 01", upEnv("trusted_port", "01"), "trusted_port"},
		{"trusted_port -1", upEnv("trusted_port", "-1"), "trusted_port"},
		{"trusted_port empty", upEnv("trusted_port", ""), "trusted_port"},
		{"trusted_port hex", upEnv("trusted_port", "0x4aa"), "trusted_port"},
		{"trusted_port with space", upEnv("trusted_port", "1194 "), "trusted_port"},

		{"proto_1 unknown", upEnv("proto_1", "sctp"), "proto_1"},
		{"proto_1 empty", upEnv("proto_1", ""), "proto_1"},
		{"proto_1 with command", upEnv("proto_1", "udp;id"), "proto_1"},
		{"proto_1 tcp-server", upEnv("proto_1", "tcp-server"), "proto_1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, testConfig)
			h.be.live = []string{"tun1"}
			h.env = c.env
			h.expect(2, openVPNArgs(h.cfgPath)...)
			h.noApply()
			if len(h.be.live) != 1 || h.be.live[0] != "tun1" {
				t.Errorf("live tunnels changed: %v", h.be.live)
			}
			if !strings.Contains(h.stderr.String(), c.msg) {
				t.Errorf("stderr does not mention %q: %s", c.msg, h.stderr)
			}
			if !strings.Contains(h.stderr.String(), `"exit":2`) {
				t.Errorf("the error line does not carry the exit code: %s", h.stderr)
			}
		})
	}
}

// A valid event the configuration disagrees with is refused: exit 1.
func TestOpenVPNRefusedByConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		msg  string
	}{
		{"server outside VPNFW_SERVERS", upEnv("trusted_ip", "203.0.113.5"), "203.0.113.5 is not in VPNFW_SERVERS"},
		{"neighbour of the server", upEnv("trusted_ip", "192.0.2.11"), "not in VPNFW_SERVERS"},
		{"IPv6 server outside", upEnv("trusted_ip", "\x00", "trusted_ip6", "2001:db8::11"), "not in VPNFW_SERVERS"},
		{"mapped address outside", upEnv("trusted_ip", "::ffff:203.0.113.5"), "not in VPNFW_SERVERS"},
		{"route-up to unknown server", upEnv("script_type", "route-up", "trusted_ip", "203.0.113.5"), "not in VPNFW_SERVERS"},
		{"port not configured", upEnv("trusted_port", "1195"), "port 1195 is not in VPNFW_SERVER_PORTS"},
		{"port not configured, tcp", upEnv("proto_1", "tcp-client", "trusted_port", "1196"), "port 1196 is not in VPNFW_SERVER_PORTS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, testConfig)
			h.be.live = []string{"tun1"}
			h.env = c.env
			h.expect(1, openVPNArgs(h.cfgPath)...)
			h.noApply()
			if !strings.Contains(h.stderr.String(), c.msg) {
				t.Errorf("stderr does not say %q: %s", c.msg, h.stderr)
			}
		})
	}
	// With no server configured, every OpenVPN tunnel is refused.
	h := newHarness(t, "VPNFW_TUN_DEVICES=tun+\n")
	h.env = upEnv()
	h.expect(1, openVPNArgs(h.cfgPath)...)
	h.noApply()
}

// proto_1 names the first remote's protocol; after a fallback to another
// remote the connection may use another one, so only the port is checked.
func TestOpenVPNFallbackRemote(t *testing.T) {
	h := newHarness(t, testConfig)
	h.env = upEnv("proto_1", "udp", "trusted_port", "443")
	h.expect(0, openVPNArgs(h.cfgPath)...)
	h.wantRuleset(h.applied(), "tun0")
}

func TestOpenVPNEvents(t *testing.T) {
	h := newHarness(t, testConfig)
	h.be.live = []string{"tun1"}

	h.env = upEnv()
	h.expect(0, openVPNArgs(h.cfgPath)...)
	h.wantRuleset(h.applied(), "tun0", "tun1")

	// route-up gets no positional arguments at all.
	h.env = upEnv("script_type", "route-up")
	h.expect(0, "--config", h.cfgPath)
	h.wantRuleset(h.applied(), "tun0", "tun1")

	// down runs after OpenVPN closed the device; only dev matters, and
	// only that device loses its allowance.
	h.env = map[string]string{"script_type": "down", "dev": "tun0", "trusted_ip": "192.0.2.10", "trusted_port": "1194", "proto_1": "udp"}
	h.expect(0, openVPNArgs(h.cfgPath)...)
	h.wantRuleset(h.applied(), "tun1")

	h.env = map[string]string{"script_type": "down", "dev": "tun1"}
	h.expect(0, "--config", h.cfgPath, "tun1", "1500", "0", "10.8.1.2", "255.255.255.0", "init")
	h.wantRuleset(h.applied())
}

func TestOpenVPNVariants(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
	}{
		{"IPv6 server", upEnv("trusted_ip", "\x00", "trusted_ip6", "2001:db8::10")},
		{"IPv4-mapped server", upEnv("trusted_ip", "::ffff:192.0.2.10")},
		{"tcp-client on 443", upEnv("proto_1", "tcp-client", "trusted_port", "443")},
		{"tcp4-client on 443", upEnv("proto_1", "tcp4-client", "trusted_port", "443")},
		{"udp6", upEnv("proto_1", "udp6")},
		{"upper-case proto", upEnv("proto_1", "UDP")},
		{"no port nor proto", upEnv("trusted_port", "\x00", "proto_1", "\x00")},
		{"route-up", upEnv("script_type", "route-up")},
		{"empty PATH-less environment plus extras", upEnv("PATH", "\x00", "config", "/etc/openvpn/client.conf")},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, testConfig)
			h.env = c.env
			h.expect(0, openVPNArgs(h.cfgPath)...)
			h.wantRuleset(h.applied(), "tun0")
		})
	}
}

// In hook mode the environment is the only source of the event: positional
// arguments, even ones that look like commands, are ignored; flags before
// them are honoured.
func TestOpenVPNPositionalArgumentsIgnored(t *testing.T) {
	h := newHarness(t, testConfig)
	h.be.live = []string{"tun1"}
	h.env = upEnv()
	for _, args := range [][]string{
		{"--config", h.cfgPath, "tun9", "1500", "0", "10.8.0.2", "255.255.255.0", "init"},
		{"--config", h.cfgPath, "disarm", "--yes"},
		{"--config", h.cfgPath, "down", "--dev", "tun1"},
		{"--config", h.cfgPath, "up", "--dev", "eth0"},
		{"--log-format", "json", "--config", h.cfgPath, "tun0", "1500", "0", "10.8.0.2", "255.255.255.0", "restart"},
	} {
		h.expect(0, args...)
		h.wantRuleset(h.applied(), "tun0", "tun1")
		if h.be.disarmed != 0 {
			t.Fatalf("%v disarmed", args)
		}
	}
	// --config before the positional arguments is what finds the file: the
	// default path does not exist here.
	h.env = upEnv()
	h.env["VPNFW_CONFIG"] = h.dir + "/missing.env"
	h.expect(2, "tun0", "1500", "0", "10.8.0.2", "255.255.255.0", "init")
	h.noApply()
	h.expect(0, openVPNArgs(h.cfgPath)...)
	h.applied()
	// A bad flag before them is still a usage error.
	h.expect(2, "--log-format", "xml", "--config", h.cfgPath, "tun0")
	h.noApply()
}

func TestOpenVPNEventParse(t *testing.T) {
	get := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	ev, err := openVPNEvent(get(upEnv("trusted_ip", "::ffff:192.0.2.10", "proto_1", "tcp6-client", "trusted_port", "443")))
	if err != nil {
		t.Fatal(err)
	}
	want := Event{Command: "up", Dev: "tun0", Server: netip.MustParseAddr("192.0.2.10"), Endpoint: rules.Endpoint{Port: 443}}
	if ev != want {
		t.Errorf("event %+v, want %+v", ev, want)
	}
	ev, err = openVPNEvent(get(map[string]string{"script_type": "down", "dev": "ppp0"}))
	if err != nil || ev != (Event{Command: "down", Dev: "ppp0"}) {
		t.Errorf("down: %+v, %v", ev, err)
	}
	// trusted_ip wins over trusted_ip6.
	ev, err = openVPNEvent(get(upEnv("trusted_ip6", "2001:db8::10")))
	if err != nil || ev.Server != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("both addresses: %+v, %v", ev, err)
	}
	// The port is checked with or without proto_1.
	ev, err = openVPNEvent(get(upEnv("proto_1", "\x00")))
	if err != nil || ev.Endpoint != (rules.Endpoint{Port: 1194}) {
		t.Errorf("port only: %+v, %v", ev, err)
	}
	for _, bad := range []map[string]string{upEnv("dev", "eth0;x"), upEnv("trusted_port", "0"), upEnv("script_type", "x")} {
		if _, err := openVPNEvent(get(bad)); err == nil {
			t.Errorf("%v accepted", bad)
		} else if _, ok := err.(*usageError); !ok {
			t.Errorf("%v: %T is not a usage error", bad, err)
		}
	}
}

func TestEventValidate(t *testing.T) {
	cfg, err := rules.FromMap(map[string]string{
		"VPNFW_SERVERS": "192.0.2.10 2001:db8::/64", "VPNFW_VPN_MARK": "119",
		"VPNFW_SERVER_PORTS": "udp/1194", "VPNFW_TUN_DEVICES": "tun+ ppp0",
	}, rules.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr
	udp := func(p uint16) rules.Endpoint { return rules.Endpoint{Proto: rules.UDP, Port: p} }
	for _, c := range []struct {
		ev   Event
		want string // "", "usage" or "refused"
	}{
		{Event{Command: "baseline"}, ""},
		{Event{Command: "baseline", Dev: "eth0;x"}, ""},
		{Event{Command: "up", Dev: "tun0"}, ""},
		{Event{Command: "up", Dev: "ppp0", Server: addr("2001:db8::77"), Endpoint: udp(1194)}, ""},
		{Event{Command: "down", Dev: "tun0", Server: addr("203.0.113.1"), Endpoint: udp(9)}, ""},
		{Event{Command: "up", Dev: ""}, "usage"},
		{Event{Command: "up", Dev: "ppp1"}, "usage"},
		{Event{Command: "up", Dev: "tun"}, "usage"},
		{Event{Command: "up", Dev: "tun+"}, "usage"},
		{Event{Command: "up", Dev: "tun0 "}, "usage"},
		{Event{Command: "down", Dev: "eth0"}, "usage"},
		{Event{Command: "up", Dev: "tun0", Server: addr("203.0.113.1")}, "refused"},
		{Event{Command: "up", Dev: "tun0", Server: addr("2001:db9::1")}, "refused"},
		{Event{Command: "up", Dev: "tun0", Server: addr("192.0.2.10"), Endpoint: udp(1195)}, "refused"},
		{Event{Command: "up", Dev: "tun0", Server: addr("192.0.2.10"), Endpoint: rules.Endpoint{Proto: rules.TCP, Port: 1194}}, "refused"},
	} {
		err := c.ev.validate(cfg)
		got := ""
		switch err.(type) {
		case nil:
		case *usageError:
			got = "usage"
		case *refusedError:
			got = "refused"
		default:
			got = "other"
		}
		if got != c.want {
			t.Errorf("%+v: validate = %v (%s), want %s", c.ev, err, got, c.want)
		}
	}
}
