package rules_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
)

// fakeUsers stands in for the system's user database.
func fakeUsers(name string) (uint32, error) {
	switch name {
	case "root":
		return 0, nil
	case "openvpn":
		return 998, nil
	case "nobody":
		return 65534, nil
	}
	return 0, fmt.Errorf("user: unknown user %s", name)
}

var testOpts = rules.LoadOptions{LookupUser: fakeUsers}

// env returns a copy of base with the key/value pairs kv applied; a value
// of "\x00" deletes the key.
func env(base map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "\x00" {
			delete(m, kv[i])
			continue
		}
		m[kv[i]] = kv[i+1]
	}
	return m
}

// withMark is the smallest environment in which servers are allowed.
var withMark = map[string]string{"VPNFW_VPN_MARK": "119"}

func mustConfigError(t *testing.T, err error) *rules.ConfigError {
	t.Helper()
	if err == nil {
		t.Fatal("accepted; want a *rules.ConfigError")
	}
	var ce *rules.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %T %q is not a *rules.ConfigError", err, err)
	}
	return ce
}

func TestFromMapRefuses(t *testing.T) {
	type tc struct {
		name  string
		env   map[string]string
		key   string // key the error must name
		value string // value the error must name (as the validator saw it, trimmed)
	}
	var cases []tc
	add := func(name, key, value string, e map[string]string) {
		cases = append(cases, tc{name, e, key, value})
	}
	// One entry per bad value of a key, everything else valid.
	bad := func(key string, base map[string]string, values ...string) {
		for _, v := range values {
			add(fmt.Sprintf("%s=%q", key, v), key, strings.TrimSpace(v), env(base, key, v))
		}
	}

	bad("VPNFW_SERVERS", withMark,
		"0.0.0.0/0", "::/0", "0.0.0.0/1", // every address, or a prefix of the unspecified address
		"192.0.2.1/24", "2001:db8::1/64", // host bits set
		"::ffff:192.0.2.10", "::ffff:192.0.2.0/120", // IPv4-mapped IPv6
		"fe80::1%eth0", "fe80::1%eth0/128", // zone
		"127.0.0.1", "127.0.0.0/8", "::1", // loopback
		"224.0.0.1", "239.0.0.0/8", "ff02::1", // multicast
		"0.0.0.0", "::", // unspecified
		"vpn.example.com", "192.0.2.300", "192.0.2.010", "192.0.2.0/33", "2001:db8::/129",
		"192.0.2.1/", "/24", "192.0.2.1;id", "192.0.2.1 nonsense", "192.0.2.1,,::1%lo",
	)
	bad("VPNFW_LAN", nil,
		"0.0.0.0/0", "::/0", "192.168.1.1/24", "::ffff:192.168.1.0/120", "fe80::%eth0",
		"127.0.0.0/8", "224.0.0.0/4", "ff00::/8", "lan", "192.168.1.0/24 x",
	)
	bad("VPNFW_SERVER_PORTS", nil,
		"", "  ", ",", "1194", "udp", "udp/", "/1194", "udp/0", "udp/65536", "udp/01", "udp/+1",
		"udp/-1", "udp/1194/x", "UDP/1194", "icmp/1", "sctp/1194", "udp:1194", "udp/1194 tcp/abc",
		"udp/0x4aa",
		// GRE has no port, and only its lower-case name is accepted.
		"gre/47", "gre/1723", "GRE", "47", "gre/", "/gre", "gre+", "udp/1194 gre gree",
	)
	bad("VPNFW_VPN_MARK", nil,
		"0", "00", "0x0", "010", "0b11", "0o17", "-1", "+119", "4294967296", "0x100000000",
		"abc", "0x", "1.5", "119 120", "1_000", "0x_77",
	)
	bad("VPNFW_VPN_USER", nil,
		"0", "root", "4294967295", "4294967296", "-1", "nosuchuser", "openvpn nobody",
	)
	bad("VPNFW_TUN_DEVICES", nil,
		"", " ", "+", "tun0 +", "lo", "lo+", "l+", "-tun0", "-j+", "tun0 lo", "abcdefghijklmnop", "abcdefghijklmnop+",
		"tun0;id", "tun0/x", "../x", ".", "..", "..+", "tun++", "+tun", "tun*", "tun0:1", "tün0",
		"tun0|eth0", "$(id)",
	)
	bad("VPNFW_ALLOW_DHCP", nil, "", "true", "false", "1", "0", "YES", "No", "yes no")
	bad("VPNFW_IPV6", nil, "", "allow", "Block", "TUNNEL", "on", "off", "tunnel block")
	bad("VPNFW_BACKEND", nil, "", "nft", "IPTABLES", "legacy", "iptables-nft", "auto iptables")
	bad("VPNFW_LOG_LEVEL", nil, "", "trace", "INFO", "warning", "fatal", "panic", "debug info")

	// Servers without a way to tell the VPN client's sockets from the rest.
	for _, v := range []string{"192.0.2.10", "2001:db8::10", "192.0.2.0/24 2001:db8::/64"} {
		add("servers without mark or user "+v, "VPNFW_SERVERS", v, map[string]string{"VPNFW_SERVERS": v})
	}
	// Unknown keys, typos in particular, whatever their value.
	for _, k := range []string{"VPNFW_SERVER", "VPNFW_MARK", "vpnfw_servers", "VPNFW_IPV6_MODE", "PATH", "VPNFW_CONFIG", "VPNFW_SERVERS "} {
		add("unknown key "+k, k, "x", env(withMark, "VPNFW_SERVERS", "192.0.2.10", k, "x"))
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := rules.FromMap(c.env, testOpts)
			if cfg != nil {
				t.Errorf("returned a config along with the error: %+v", cfg)
			}
			ce := mustConfigError(t, err)
			if ce.Key != c.key {
				t.Errorf("Key = %q, want %q (error: %v)", ce.Key, c.key, err)
			}
			if ce.Value != c.value {
				t.Errorf("Value = %q, want %q", ce.Value, c.value)
			}
			if ce.Expected == "" {
				t.Errorf("the error says nothing about what was expected: %v", err)
			}
			if want := fmt.Sprintf("%s=%q: ", c.key, c.value); !strings.Contains(err.Error(), want) {
				t.Errorf("message %q does not name the key and value as %q", err, want)
			}
		})
	}
}

func TestFromMapAccepts(t *testing.T) {
	u := func(n uint32) *uint32 { return &n }
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	defaults := rules.Config{
		ServerPorts: []rules.Endpoint{{Proto: rules.UDP, Port: 1194}},
		TunDevices:  []rules.DevicePattern{"tun+"},
		Backend:     "auto",
		LogLevel:    "info",
	}
	with := func(f func(c *rules.Config)) rules.Config {
		c := defaults
		f(&c)
		return c
	}
	cases := []struct {
		name string
		env  map[string]string
		want rules.Config
	}{
		{"empty is the default blocked config", map[string]string{}, defaults},
		{"empty values of list keys are no entries",
			map[string]string{"VPNFW_SERVERS": "", "VPNFW_LAN": "  ", "VPNFW_VPN_MARK": "", "VPNFW_VPN_USER": ""}, defaults},
		{"decimal mark", env(nil, "VPNFW_VPN_MARK", "119"), with(func(c *rules.Config) { c.VPNMark = 119 })},
		{"hex mark", env(nil, "VPNFW_VPN_MARK", "0x77"), with(func(c *rules.Config) { c.VPNMark = 119 })},
		{"upper-case hex mark", env(nil, "VPNFW_VPN_MARK", "0X77"), with(func(c *rules.Config) { c.VPNMark = 119 })},
		{"largest mark", env(nil, "VPNFW_VPN_MARK", "4294967295"), with(func(c *rules.Config) { c.VPNMark = 1<<32 - 1 })},
		{"largest hex mark", env(nil, "VPNFW_VPN_MARK", "0xffffffff"), with(func(c *rules.Config) { c.VPNMark = 1<<32 - 1 })},
		{"mark surrounded by spaces", env(nil, "VPNFW_VPN_MARK", " 119 "), with(func(c *rules.Config) { c.VPNMark = 119 })},
		{"numeric uid without passwd entry", env(nil, "VPNFW_VPN_USER", "12345"), with(func(c *rules.Config) { c.VPNUser = u(12345) })},
		{"uid 1", env(nil, "VPNFW_VPN_USER", "1"), with(func(c *rules.Config) { c.VPNUser = u(1) })},
		{"user name", env(nil, "VPNFW_VPN_USER", "openvpn"), with(func(c *rules.Config) { c.VPNUser = u(998) })},
		{"servers with mark, sorted and deduplicated",
			env(withMark, "VPNFW_SERVERS", "2001:db8::10, 198.51.100.0/24 192.0.2.10,192.0.2.10\t2001:db8:1::/48"),
			with(func(c *rules.Config) {
				c.VPNMark = 119
				c.Servers = pfx("192.0.2.10/32", "198.51.100.0/24", "2001:db8::10/128", "2001:db8:1::/48")
			})},
		{"servers with user", env(nil, "VPNFW_SERVERS", "192.0.2.10", "VPNFW_VPN_USER", "openvpn"),
			with(func(c *rules.Config) { c.VPNUser = u(998); c.Servers = pfx("192.0.2.10/32") })},
		{"servers with mark and user", env(withMark, "VPNFW_SERVERS", "192.0.2.10", "VPNFW_VPN_USER", "1000"),
			with(func(c *rules.Config) { c.VPNMark = 119; c.VPNUser = u(1000); c.Servers = pfx("192.0.2.10/32") })},
		{"explicit host prefix", env(withMark, "VPNFW_SERVERS", "192.0.2.10/32 2001:db8::10/128"),
			with(func(c *rules.Config) { c.VPNMark = 119; c.Servers = pfx("192.0.2.10/32", "2001:db8::10/128") })},
		{"ports sorted and deduplicated", env(nil, "VPNFW_SERVER_PORTS", "udp/1194, tcp/443 udp/53 udp/1194 tcp/65535 udp/1"),
			with(func(c *rules.Config) {
				c.ServerPorts = []rules.Endpoint{{rules.TCP, 443}, {rules.TCP, 65535}, {rules.UDP, 1}, {rules.UDP, 53}, {rules.UDP, 1194}}
			})},
		{"pptp: tcp/1723 and gre", env(nil, "VPNFW_SERVER_PORTS", "gre tcp/1723,gre"),
			with(func(c *rules.Config) {
				c.ServerPorts = []rules.Endpoint{{Proto: rules.GRE}, {rules.TCP, 1723}}
			})},
		{"gre alone", env(nil, "VPNFW_SERVER_PORTS", "gre"),
			with(func(c *rules.Config) { c.ServerPorts = []rules.Endpoint{{Proto: rules.GRE}} })},
		{"device names and prefixes", env(nil, "VPNFW_TUN_DEVICES", "tun0 ppp+,wg_vpn-1.a abcdefghijklmno abcdefghijklmno+"),
			with(func(c *rules.Config) {
				c.TunDevices = []rules.DevicePattern{"tun0", "ppp+", "wg_vpn-1.a", "abcdefghijklmno", "abcdefghijklmno+"}
			})},
		{"lan", env(nil, "VPNFW_LAN", "192.168.1.0/24 fd00::/64 10.0.0.0/8"),
			with(func(c *rules.Config) { c.LAN = pfx("10.0.0.0/8", "192.168.1.0/24", "fd00::/64") })},
		{"dhcp yes", env(nil, "VPNFW_ALLOW_DHCP", "yes"), with(func(c *rules.Config) { c.AllowDHCP = true })},
		{"dhcp no", env(nil, "VPNFW_ALLOW_DHCP", "no"), defaults},
		{"ipv6 tunnel", env(nil, "VPNFW_IPV6", "tunnel"), with(func(c *rules.Config) { c.IPv6Tunnel = true })},
		{"ipv6 block", env(nil, "VPNFW_IPV6", "block"), defaults},
		{"backend iptables", env(nil, "VPNFW_BACKEND", "iptables"), with(func(c *rules.Config) { c.Backend = "iptables" })},
		{"backend nftables", env(nil, "VPNFW_BACKEND", "nftables"), with(func(c *rules.Config) { c.Backend = "nftables" })},
		{"backend auto", env(nil, "VPNFW_BACKEND", "auto"), defaults},
		{"log debug", env(nil, "VPNFW_LOG_LEVEL", "debug"), with(func(c *rules.Config) { c.LogLevel = "debug" })},
		{"log warn", env(nil, "VPNFW_LOG_LEVEL", "warn"), with(func(c *rules.Config) { c.LogLevel = "warn" })},
		{"log error", env(nil, "VPNFW_LOG_LEVEL", "error"), with(func(c *rules.Config) { c.LogLevel = "error" })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := rules.FromMap(c.env, testOpts)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !reflect.DeepEqual(*cfg, c.want) {
				t.Errorf("config\n got %+v\nwant %+v", *cfg, c.want)
			}
			if cfg.VPNUser != nil && c.want.VPNUser != nil && *cfg.VPNUser != *c.want.VPNUser {
				t.Errorf("uid %d, want %d", *cfg.VPNUser, *c.want.VPNUser)
			}
		})
	}
}

func TestNumericUserSkipsLookup(t *testing.T) {
	opts := rules.LoadOptions{LookupUser: func(name string) (uint32, error) {
		t.Errorf("LookupUser(%q) called for a numeric uid", name)
		return 0, errors.New("unexpected")
	}}
	cfg, err := rules.FromMap(map[string]string{"VPNFW_VPN_USER": "4242"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VPNUser == nil || *cfg.VPNUser != 4242 {
		t.Fatalf("VPNUser = %v, want 4242", cfg.VPNUser)
	}
}

func TestParseDotenv(t *testing.T) {
	text := `# vpnfw configuration
VPNFW_SERVERS="192.0.2.10 2001:db8::10"   # quoted, with a comment
VPNFW_SERVER_PORTS='udp/1194 tcp/443'
export VPNFW_VPN_MARK=119

VPNFW_VPN_USER=openvpn
VPNFW_ALLOW_DHCP=yes
`
	cfg, err := rules.Parse(strings.NewReader(text), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Servers) != 2 || len(cfg.ServerPorts) != 2 || cfg.VPNMark != 119 || cfg.VPNUser == nil || *cfg.VPNUser != 998 || !cfg.AllowDHCP {
		t.Errorf("parsed %+v", cfg)
	}

	_, err = rules.Parse(strings.NewReader("VPNFW_SERVERS=192.0.2.10\nVPNFW_VPN_MARC=119\n"), testOpts)
	if ce := mustConfigError(t, err); ce.Key != "VPNFW_VPN_MARC" {
		t.Errorf("typo: Key = %q", ce.Key)
	}
	_, err = rules.Parse(strings.NewReader("VPNFW_SERVERS=\"192.0.2.10\n"), testOpts)
	if ce := mustConfigError(t, err); !strings.Contains(ce.Error(), "dotenv") {
		t.Errorf("broken quoting: %v", err)
	}
}

func TestConfigErrorMessage(t *testing.T) {
	for _, c := range []struct {
		err  rules.ConfigError
		want string
	}{
		{rules.ConfigError{Key: "VPNFW_IPV6", Value: "on", Expected: "expected tunnel or block"}, `VPNFW_IPV6="on": expected tunnel or block`},
		{rules.ConfigError{Key: "VPNFW_IPV6", Value: "on", Expected: "x", File: "/etc/f.env"}, `/etc/f.env: VPNFW_IPV6="on": x`},
		{rules.ConfigError{Expected: "must be a regular file", File: "/etc/f.env"}, `/etc/f.env: must be a regular file`},
		{rules.ConfigError{Key: "K", Value: "a\"b\n", Expected: "x"}, `K="a\"b\n": x`},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.10":      "192.0.2.10/32",
		"192.0.2.0/24":    "192.0.2.0/24",
		"2001:db8::1":     "2001:db8::1/128",
		"2001:db8::/32":   "2001:db8::/32",
		"0.0.0.0/0":       "0.0.0.0/0", // ParsePrefix allows it; the keys refuse it
		"::/0":            "::/0",
		"10.0.0.0/8":      "10.0.0.0/8",
		"203.0.113.7/32":  "203.0.113.7/32",
		"2001:DB8::A/128": "2001:db8::a/128",
	} {
		p, err := rules.ParsePrefix(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "x", "192.0.2.1/24", "::ffff:1.2.3.4", "fe80::1%eth0", "127.0.0.1", "::1", "224.0.0.1", "ff02::1", "0.0.0.0", "::", "0.0.0.0/8"} {
		if p, err := rules.ParsePrefix(in); err == nil {
			t.Errorf("ParsePrefix(%q) = %v, want an error", in, p)
		}
	}
}

func TestParsePortAndEndpoint(t *testing.T) {
	for in, want := range map[string]uint16{"1": 1, "53": 53, "1194": 1194, "65535": 65535} {
		if n, err := rules.ParsePort(in); err != nil || n != want {
			t.Errorf("ParsePort(%q) = %d, %v", in, n, err)
		}
	}
	for _, in := range []string{"", "0", "00", "01", "+1", "-1", "65536", "99999999999", " 1", "1 ", "0x10", "1e3", "1_0", "١"} {
		if n, err := rules.ParsePort(in); err == nil {
			t.Errorf("ParsePort(%q) = %d, want an error", in, n)
		}
	}
	if e, err := rules.ParseEndpoint("tcp", "443"); err != nil || e != (rules.Endpoint{Proto: rules.TCP, Port: 443}) || e.String() != "tcp/443" {
		t.Errorf("ParseEndpoint(tcp, 443) = %v, %v", e, err)
	}
	if s := (rules.Endpoint{Proto: rules.GRE}).String(); s != "gre" {
		t.Errorf("GRE endpoint prints %q, want gre", s)
	}
	// GRE is a configuration entry, never a --proto of up or OpenVPN's proto_1.
	for _, p := range [][2]string{{"", "443"}, {"TCP", "443"}, {"ipv6-icmp", "1"}, {"udp", "0"}, {"udp", ""}, {"gre", "0"}, {"gre", ""}, {"gre", "1723"}} {
		if e, err := rules.ParseEndpoint(p[0], p[1]); err == nil {
			t.Errorf("ParseEndpoint(%q, %q) = %v, want an error", p[0], p[1], e)
		}
	}
}

func TestValidIfaceName(t *testing.T) {
	for _, ok := range []string{"tun0", "ppp0", "wg0", "a", "tun_vpn-1.2", "abcdefghijklmno"} {
		if err := rules.ValidIfaceName(ok); err != nil {
			t.Errorf("ValidIfaceName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "tun0;id", "-j", "-tun0", "tun+", "tun*", "tun0 ", " tun0", "tun0\n", "tun0\x00", "eth0:1", "abcdefghijklmnop", "tün0", "$(id)", "`id`", "a'b", `a"b`} {
		if err := rules.ValidIfaceName(bad); err == nil {
			t.Errorf("ValidIfaceName(%q) accepted", bad)
		}
	}
}

func TestDevicePatternAndAllows(t *testing.T) {
	cfg, err := rules.FromMap(map[string]string{
		"VPNFW_SERVERS":      "192.0.2.10 198.51.100.0/24 2001:db8::10",
		"VPNFW_SERVER_PORTS": "udp/1194 tcp/443",
		"VPNFW_VPN_MARK":     "119",
		"VPNFW_TUN_DEVICES":  "tun+ ppp0",
	}, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	for dev, want := range map[string]bool{
		"tun0": true, "tun1": true, "tun10": true, "tunnel": true, "ppp0": true,
		"tun": false, "ppp1": false, "ppp00": false, "eth0": false, "xtun0": false, "lo": false, "": false, "ppp": false,
	} {
		if got := cfg.AllowsDevice(dev); got != want {
			t.Errorf("AllowsDevice(%q) = %v, want %v", dev, got, want)
		}
	}
	for addr, want := range map[string]bool{
		"192.0.2.10": true, "::ffff:192.0.2.10": true, "198.51.100.77": true, "2001:db8::10": true,
		"192.0.2.11": false, "198.51.101.1": false, "2001:db8::11": false, "::ffff:192.0.2.11": false,
	} {
		if got := cfg.AllowsServer(netip.MustParseAddr(addr)); got != want {
			t.Errorf("AllowsServer(%s) = %v, want %v", addr, got, want)
		}
	}
	for e, want := range map[rules.Endpoint]bool{
		{rules.UDP, 1194}: true, {rules.TCP, 443}: true,
		{rules.TCP, 1194}: false, {rules.UDP, 443}: false, {rules.UDP, 1195}: false,
	} {
		if got := cfg.AllowsEndpoint(e); got != want {
			t.Errorf("AllowsEndpoint(%v) = %v, want %v", e, got, want)
		}
	}
}

// writeConfig writes text to a fresh file with exactly the given mode.
func writeConfig(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vpnfw.env")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// nonRootOwned returns a config file not owned by root: as root it is
// chowned to nobody (65534), otherwise it belongs to the user running the test.
func nonRootOwned(t *testing.T, text string) string {
	t.Helper()
	p := writeConfig(t, text, 0o600)
	if os.Geteuid() == 0 {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatalf("chown to 65534: %v", err)
		}
	}
	return p
}

const goodConfig = "VPNFW_SERVERS=192.0.2.10\nVPNFW_VPN_MARK=119\n"

func TestLoad(t *testing.T) {
	allow := rules.LoadOptions{AllowNonRootOwner: true, LookupUser: fakeUsers}

	t.Run("valid file", func(t *testing.T) {
		for _, mode := range []os.FileMode{0o600, 0o400, 0o644, 0o640, 0o444} {
			p := writeConfig(t, goodConfig, mode)
			cfg, err := rules.Load(p, allow)
			if err != nil {
				t.Fatalf("mode %04o: %v", mode, err)
			}
			if len(cfg.Servers) != 1 || cfg.VPNMark != 119 {
				t.Errorf("mode %04o: loaded %+v", mode, cfg)
			}
		}
	})
	t.Run("root-owned file without AllowNonRootOwner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("only root can create a root-owned file")
		}
		if _, err := rules.Load(writeConfig(t, goodConfig, 0o600), testOpts); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("non-root owner refused", func(t *testing.T) {
		p := nonRootOwned(t, goodConfig)
		_, err := rules.Load(p, testOpts)
		ce := mustConfigError(t, err)
		if ce.File != p || !strings.Contains(err.Error(), "must be owned by root") || !strings.HasPrefix(err.Error(), p+": ") {
			t.Errorf("error %q", err)
		}
		if _, err := rules.Load(p, allow); err != nil {
			t.Errorf("with AllowNonRootOwner: %v", err)
		}
	})
	for _, mode := range []os.FileMode{0o620, 0o602, 0o622, 0o666, 0o660, 0o606, 0o777} {
		t.Run(fmt.Sprintf("mode %04o refused", mode), func(t *testing.T) {
			p := writeConfig(t, goodConfig, mode)
			_, err := rules.Load(p, allow)
			ce := mustConfigError(t, err)
			if ce.File != p || !strings.Contains(err.Error(), fmt.Sprintf("mode %04o", mode)) || !strings.Contains(err.Error(), "chmod go-w") {
				t.Errorf("error %q", err)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope.env")
		_, err := rules.Load(p, allow)
		ce := mustConfigError(t, err)
		if ce.File != p || !strings.Contains(err.Error(), "no such file") {
			t.Errorf("error %q", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		p := t.TempDir()
		_, err := rules.Load(p, allow)
		ce := mustConfigError(t, err)
		if ce.File != p || !strings.Contains(err.Error(), "regular file") {
			t.Errorf("error %q", err)
		}
	})
	t.Run("device", func(t *testing.T) {
		_, err := rules.Load("/dev/null", allow)
		if ce := mustConfigError(t, err); !strings.Contains(ce.Error(), "regular file") {
			t.Errorf("error %q", err)
		}
	})
	t.Run("symlink to a group-writable file", func(t *testing.T) {
		target := writeConfig(t, goodConfig, 0o660)
		link := filepath.Join(t.TempDir(), "link.env")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		_, err := rules.Load(link, allow)
		mustConfigError(t, err)
	})
	t.Run("bad value names the file, key and value", func(t *testing.T) {
		p := writeConfig(t, "VPNFW_SERVERS=0.0.0.0/0\nVPNFW_VPN_MARK=119\n", 0o600)
		_, err := rules.Load(p, allow)
		ce := mustConfigError(t, err)
		if ce.File != p || ce.Key != "VPNFW_SERVERS" || ce.Value != "0.0.0.0/0" || !strings.HasPrefix(err.Error(), p+`: VPNFW_SERVERS="0.0.0.0/0": `) {
			t.Errorf("error %q (%+v)", err, ce)
		}
	})
	t.Run("unknown key in file", func(t *testing.T) {
		p := writeConfig(t, goodConfig+"VPNFW_ALLOW_DCHP=yes\n", 0o600)
		_, err := rules.Load(p, allow)
		if ce := mustConfigError(t, err); ce.Key != "VPNFW_ALLOW_DCHP" || ce.File != p {
			t.Errorf("error %q", err)
		}
	})
	t.Run("values stay out of the process environment", func(t *testing.T) {
		p := writeConfig(t, goodConfig, 0o600)
		if _, err := rules.Load(p, allow); err != nil {
			t.Fatal(err)
		}
		if v, ok := os.LookupEnv("VPNFW_SERVERS"); ok {
			t.Errorf("VPNFW_SERVERS=%q leaked into the environment", v)
		}
	})
}
