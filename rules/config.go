package rules

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/joho/godotenv"
)

// DefaultConfigPath is where an installed system keeps its configuration.
const DefaultConfigPath = "/etc/vpn-firewall/vpnfw.env"

// Endpoint is a protocol and port the VPN client talks to on its servers.
type Endpoint struct {
	Proto Proto
	Port  uint16
}

func (e Endpoint) String() string {
	switch e.Proto {
	case GRE:
		return string(GRE)
	case "":
		return fmt.Sprintf("port %d", e.Port)
	}
	return fmt.Sprintf("%s/%d", e.Proto, e.Port)
}

// DevicePattern is a tunnel device name, or a prefix when it ends in '+'
// (the iptables convention: "tun+" matches tun0, tun1, ...).
type DevicePattern string

// Matches reports whether the interface name dev is covered by the pattern.
func (p DevicePattern) Matches(dev string) bool {
	s := string(p)
	if prefix, ok := strings.CutSuffix(s, "+"); ok {
		return strings.HasPrefix(dev, prefix) && len(dev) > len(prefix)
	}
	return dev == s
}

// Config is the validated configuration; every field is typed and checked.
type Config struct {
	Servers     []netip.Prefix
	ServerPorts []Endpoint
	VPNMark     uint32  // 0: not set
	VPNUser     *uint32 // nil: not set
	TunDevices  []DevicePattern
	LAN         []netip.Prefix
	AllowDHCP   bool
	IPv6Tunnel  bool // VPNFW_IPV6=tunnel: IPv6 allowed through tunnel devices
	Backend     string
	LogLevel    string
}

// ConfigError is a configuration the binary refuses; the command exits 2.
type ConfigError struct {
	Key, Value, Expected string
	File                 string
}

func (e *ConfigError) Error() string {
	where := ""
	if e.File != "" {
		where = e.File + ": "
	}
	if e.Key == "" {
		return where + e.Expected
	}
	return fmt.Sprintf("%s%s=%q: %s", where, e.Key, e.Value, e.Expected)
}

// Lockdown is the configuration the boot path falls back to when the real one
// is missing or invalid: every key at its default, so no server, no LAN, no
// DHCP, IPv6 blocked and the auto backend. Its policy lets only loopback pass.
func Lockdown() *Config {
	cfg, err := FromMap(nil, LoadOptions{})
	if err != nil {
		panic("the default configuration is invalid: " + err.Error())
	}
	return cfg
}

// LoadOptions are the seams of Load. Production code always checks ownership.
type LoadOptions struct {
	// AllowNonRootOwner accepts a file not owned by root; tests only, since an
	// unprivileged owner could rewrite the firewall's configuration.
	AllowNonRootOwner bool
	// LookupUser resolves VPNFW_VPN_USER names; nil means the system's user database.
	LookupUser func(name string) (uint32, error)
}

// Load reads and validates the dotenv file at path.
func Load(path string, opts LoadOptions) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &ConfigError{File: path, Expected: fmt.Sprintf("cannot read the configuration (%v); create it or pass --config FILE", errors.Unwrap(err))}
	}
	defer f.Close()
	// Check the opened file, not the path, so it cannot be swapped in between.
	fi, err := f.Stat()
	if err != nil {
		return nil, &ConfigError{File: path, Expected: fmt.Sprintf("cannot stat the configuration: %v", err)}
	}
	if !fi.Mode().IsRegular() {
		return nil, &ConfigError{File: path, Expected: "the configuration must be a regular file"}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, &ConfigError{File: path, Expected: fmt.Sprintf("mode %04o lets group or others rewrite the firewall; run: chmod go-w %s", fi.Mode().Perm(), path)}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && !opts.AllowNonRootOwner {
		return nil, &ConfigError{File: path, Expected: fmt.Sprintf("owned by uid %d, must be owned by root; run: chown root: %s", st.Uid, path)}
	}
	cfg, err := Parse(f, opts)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = path
		}
		return nil, err
	}
	return cfg, nil
}

// Parse reads dotenv text and validates it. godotenv only parses here: the
// values never enter the process environment.
func Parse(r io.Reader, opts LoadOptions) (*Config, error) {
	env, err := godotenv.Parse(r)
	if err != nil {
		return nil, &ConfigError{Expected: fmt.Sprintf("not a valid dotenv file: %v", err)}
	}
	return FromMap(env, opts)
}

// configKeys lists every accepted key with its default, in the order they are validated.
var configKeys = []struct{ key, def string }{
	{"VPNFW_SERVERS", ""},
	{"VPNFW_SERVER_PORTS", "udp/1194"},
	{"VPNFW_VPN_MARK", ""},
	{"VPNFW_VPN_USER", ""},
	{"VPNFW_TUN_DEVICES", "tun+"},
	{"VPNFW_LAN", ""},
	{"VPNFW_ALLOW_DHCP", "no"},
	{"VPNFW_IPV6", "block"},
	{"VPNFW_BACKEND", "auto"},
	{"VPNFW_LOG_LEVEL", "info"},
}

// FromMap validates already parsed key/value pairs.
func FromMap(env map[string]string, opts LoadOptions) (*Config, error) {
	for _, k := range slices.Sorted(mapKeys(env)) {
		if !slices.ContainsFunc(configKeys, func(c struct{ key, def string }) bool { return c.key == k }) {
			return nil, &ConfigError{Key: k, Value: env[k], Expected: "unknown key (a typo must not silently weaken the firewall); known keys: " + knownKeys()}
		}
	}
	get := func(k string) string {
		if v, ok := env[k]; ok {
			return strings.TrimSpace(v)
		}
		for _, c := range configKeys {
			if c.key == k {
				return c.def
			}
		}
		return ""
	}
	lookup := opts.LookupUser
	if lookup == nil {
		lookup = systemUser
	}
	cfg := &Config{}
	var err error
	if cfg.Servers, err = parsePrefixes("VPNFW_SERVERS", get("VPNFW_SERVERS"), "server"); err != nil {
		return nil, err
	}
	if cfg.ServerPorts, err = parseEndpoints(get("VPNFW_SERVER_PORTS")); err != nil {
		return nil, err
	}
	if v := get("VPNFW_VPN_MARK"); v != "" {
		if cfg.VPNMark, err = parseMark(v); err != nil {
			return nil, err
		}
	}
	if v := get("VPNFW_VPN_USER"); v != "" {
		uid, err := parseUser(v, lookup)
		if err != nil {
			return nil, err
		}
		cfg.VPNUser = &uid
	}
	if len(cfg.Servers) > 0 && cfg.VPNMark == 0 && cfg.VPNUser == nil {
		return nil, &ConfigError{Key: "VPNFW_SERVERS", Value: get("VPNFW_SERVERS"),
			Expected: "needs VPNFW_VPN_MARK or VPNFW_VPN_USER: letting every process reach the server is the leak this firewall prevents"}
	}
	if cfg.TunDevices, err = parseDevicePatterns(get("VPNFW_TUN_DEVICES")); err != nil {
		return nil, err
	}
	if cfg.LAN, err = parsePrefixes("VPNFW_LAN", get("VPNFW_LAN"), "LAN"); err != nil {
		return nil, err
	}
	if cfg.AllowDHCP, err = parseChoice("VPNFW_ALLOW_DHCP", get("VPNFW_ALLOW_DHCP"), "yes", "no"); err != nil {
		return nil, err
	}
	if cfg.IPv6Tunnel, err = parseChoice("VPNFW_IPV6", get("VPNFW_IPV6"), "tunnel", "block"); err != nil {
		return nil, err
	}
	cfg.Backend = get("VPNFW_BACKEND")
	if !slices.Contains([]string{"auto", "iptables", "nftables"}, cfg.Backend) {
		return nil, &ConfigError{Key: "VPNFW_BACKEND", Value: cfg.Backend, Expected: "expected auto, iptables or nftables"}
	}
	cfg.LogLevel = get("VPNFW_LOG_LEVEL")
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, cfg.LogLevel) {
		return nil, &ConfigError{Key: "VPNFW_LOG_LEVEL", Value: cfg.LogLevel, Expected: "expected debug, info, warn or error"}
	}
	return cfg, nil
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func knownKeys() string {
	names := make([]string, len(configKeys))
	for i, c := range configKeys {
		names[i] = c.key
	}
	return strings.Join(names, ", ")
}

// splitList splits on spaces and commas, the two separators the spec allows.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// parsePrefixes parses addresses and CIDRs into a sorted, duplicate-free list.
func parsePrefixes(key, v, what string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range splitList(v) {
		p, err := ParsePrefix(f)
		if err != nil {
			return nil, &ConfigError{Key: key, Value: v, Expected: fmt.Sprintf("%q: %v", f, err)}
		}
		if p.Bits() == 0 {
			return nil, &ConfigError{Key: key, Value: v, Expected: fmt.Sprintf("%q covers every address; name the %s networks themselves", f, what)}
		}
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

// ParsePrefix parses an IP address (as a host prefix) or a CIDR whose host
// bits are zero. Zones, IPv4-mapped IPv6, unspecified, loopback and multicast
// addresses are refused: none of them names a remote host or network.
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("expected an IPv4/IPv6 address or CIDR")
		}
		if p.Masked() != p {
			return p, fmt.Errorf("host bits are set; did you mean %s?", p.Masked())
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return p, fmt.Errorf("expected an IPv4/IPv6 address or CIDR")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	a := p.Addr()
	switch {
	case a.Is4In6():
		return p, fmt.Errorf("IPv4-mapped IPv6 address; write the IPv4 address")
	case p.Bits() > 0 && (a.IsUnspecified() || a.IsLoopback() || a.IsMulticast()):
		return p, fmt.Errorf("unspecified, loopback or multicast addresses are not remote hosts")
	}
	return p, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func parseEndpoints(v string) ([]Endpoint, error) {
	const key = "VPNFW_SERVER_PORTS"
	var out []Endpoint
	for _, f := range splitList(v) {
		// PPTP's data channel: GRE has no ports, so the entry is the bare name.
		if f == string(GRE) {
			out = append(out, Endpoint{Proto: GRE})
			continue
		}
		proto, port, ok := strings.Cut(f, "/")
		e, err := ParseEndpoint(proto, port)
		if !ok || err != nil {
			return nil, &ConfigError{Key: key, Value: v, Expected: fmt.Sprintf("%q: expected proto/port with proto udp or tcp and port 1-65535, e.g. udp/1194, or gre (PPTP's GRE, no port)", f)}
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, &ConfigError{Key: key, Value: v, Expected: "expected at least one proto/port, e.g. udp/1194"}
	}
	slices.SortFunc(out, func(a, b Endpoint) int {
		if a.Proto != b.Proto {
			return strings.Compare(string(a.Proto), string(b.Proto))
		}
		return int(a.Port) - int(b.Port)
	})
	return slices.Compact(out), nil
}

// ParseEndpoint validates a protocol (udp or tcp) and a port (1-65535).
func ParseEndpoint(proto, port string) (Endpoint, error) {
	n, err := ParsePort(port)
	if err != nil {
		return Endpoint{}, err
	}
	switch Proto(proto) {
	case UDP, TCP:
		return Endpoint{Proto: Proto(proto), Port: n}, nil
	}
	return Endpoint{}, fmt.Errorf("protocol %q: expected udp or tcp", proto)
}

// ParsePort accepts decimal 1-65535 without signs or leading zeros.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != s {
		return 0, fmt.Errorf("port %q: expected a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

func parseMark(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 0, 32)
	// Base 0 also takes Go's digit separators (1_000), which OpenVPN's mark
	// option would read as a different number: refuse them.
	if err != nil || n == 0 || strings.Contains(v, "_") || strings.HasPrefix(v, "0") && !strings.HasPrefix(strings.ToLower(v), "0x") {
		return 0, &ConfigError{Key: "VPNFW_VPN_MARK", Value: v,
			Expected: "expected a fwmark from 1 to 4294967295, decimal (as OpenVPN's mark option needs) or 0x hex; 0 would match every unmarked packet"}
	}
	return uint32(n), nil
}

func parseUser(v string, lookup func(string) (uint32, error)) (uint32, error) {
	const key = "VPNFW_VPN_USER"
	uid, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		if uid, err := lookup(v); err != nil {
			return 0, &ConfigError{Key: key, Value: v, Expected: fmt.Sprintf("no such user (%v); create the VPN client's user or give its numeric uid", err)}
		} else if uid == 0 {
			return 0, &ConfigError{Key: key, Value: v, Expected: "root runs too many processes to be the VPN client's user; use a dedicated user or VPNFW_VPN_MARK"}
		} else {
			return uid, nil
		}
	}
	if uid == 0 || uid == 1<<32-1 {
		return 0, &ConfigError{Key: key, Value: v, Expected: "uid 0 (root) and 4294967295 (invalid) cannot be the VPN client's user; use a dedicated user or VPNFW_VPN_MARK"}
	}
	return uint32(uid), nil
}

func systemUser(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %s has a non-numeric uid %q", name, u.Uid)
	}
	return uint32(uid), nil
}

func parseDevicePatterns(v string) ([]DevicePattern, error) {
	const key = "VPNFW_TUN_DEVICES"
	var out []DevicePattern
	for _, f := range splitList(v) {
		name, wildcard := strings.CutSuffix(f, "+")
		// Loopback is always allowed; a pattern covering it (lo, l+) is a mistake.
		if err := ValidIfaceName(name); err != nil || name == "lo" || wildcard && strings.HasPrefix("lo", name) {
			return nil, &ConfigError{Key: key, Value: v,
				Expected: fmt.Sprintf("%q: expected interface names or prefixes ending in + (tun+, tun0 ppp0); not lo, not a bare +", f)}
		}
		out = append(out, DevicePattern(f))
	}
	if len(out) == 0 {
		return nil, &ConfigError{Key: key, Value: v, Expected: "expected at least one tunnel device name or prefix, e.g. tun+"}
	}
	return out, nil
}

// ValidIfaceName accepts Linux interface names made of letters, digits and
// "_.-", 1 to 15 bytes. This is stricter than the kernel on purpose: names
// from the environment end up in firewall rules.
func ValidIfaceName(s string) error {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return fmt.Errorf("interface name %q: expected 1 to 15 characters", s)
	}
	if s[0] == '-' {
		// iptables would read it as an option.
		return fmt.Errorf("interface name %q: must not start with -", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return fmt.Errorf("interface name %q: only letters, digits and _ . - are allowed", s)
		}
	}
	return nil
}

func parseChoice(key, v, yes, no string) (bool, error) {
	switch v {
	case yes:
		return true, nil
	case no:
		return false, nil
	}
	return false, &ConfigError{Key: key, Value: v, Expected: fmt.Sprintf("expected %s or %s", yes, no)}
}

// AllowsDevice reports whether the configuration lets hooks allow dev.
func (c *Config) AllowsDevice(dev string) bool {
	return slices.ContainsFunc(c.TunDevices, func(p DevicePattern) bool { return p.Matches(dev) })
}

// AllowsServer reports whether addr is one of the configured servers.
func (c *Config) AllowsServer(addr netip.Addr) bool {
	return slices.ContainsFunc(c.Servers, func(p netip.Prefix) bool { return p.Contains(addr.Unmap()) })
}

// AllowsEndpoint reports whether proto/port is one of VPNFW_SERVER_PORTS; an
// empty Proto matches the port with any protocol.
func (c *Config) AllowsEndpoint(e Endpoint) bool {
	return slices.ContainsFunc(c.ServerPorts, func(s Endpoint) bool {
		return s.Port == e.Port && (e.Proto == "" || s.Proto == e.Proto)
	})
}
