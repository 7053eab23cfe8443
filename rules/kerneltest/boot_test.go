package kerneltest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpnfw/vpnfw/rules/netnstest"
)

// hookWith runs vpnfw-hook in the host with another configuration file.
func (tp *topo) hookWith(cfg string, args ...string) netnstest.Result {
	tp.t.Helper()
	return tp.host.Run(append([]string{tp.bin, "--config", cfg, "--log-format", "json"}, args...)...)
}

// writeConfig writes dotenv lines to path, 0600, as root owns it.
func writeConfig(t *testing.T, path string, lines ...string) {
	t.Helper()
	text := ""
	if len(lines) > 0 {
		text = strings.Join(lines, "\n") + "\n"
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantLockdown checks a `baseline --boot` run that met a configuration it
// cannot use: exit 2, the cause and the lockdown logged with the backend
// auto picks (a broken configuration cannot say which backend it wanted:
// nftables on every kernel these tests run on), and the live ruleset
// exactly the blocked state of an empty configuration, which `check`
// proves; check also proves that no rules of the flavour's own backend
// remain beside it.
func (tp *topo) wantLockdown(r netnstest.Result, cause string) {
	tp.t.Helper()
	if r.Code != 2 {
		tp.t.Fatalf("baseline --boot with a broken configuration: want exit 2: %s", r)
	}
	var sawCause, sawLockdown bool
	for _, l := range strings.Split(strings.TrimSpace(r.Stderr), "\n") {
		var e struct{ Level, Message, Backend, State string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			tp.t.Fatalf("log line is not JSON: %q", l)
		}
		switch {
		case e.Level == "error" && strings.Contains(e.Message, cause) && strings.Contains(e.Message, "applying the lockdown"):
			sawCause = true
		case strings.HasPrefix(e.Message, "lockdown applied"):
			sawLockdown = true
			if e.Backend != nftShows || e.State != "lockdown" {
				tp.t.Errorf("lockdown applied with backend %q state %q, want %s: %s", e.Backend, e.State, nftShows, l)
			}
		}
	}
	if !sawCause || !sawLockdown {
		tp.t.Fatalf("the log does not give the cause %q and the lockdown: %s", cause, r.Stderr)
	}
	empty := filepath.Join(tp.t.TempDir(), "empty.env")
	writeConfig(tp.t, empty)
	c := tp.hookWith(empty, "check")
	if c.Code != 0 || !strings.Contains(c.Stdout, "ok: blocked state") || !strings.Contains(c.Stdout, nftShows) {
		tp.t.Fatalf("the live ruleset is not the lockdown (check with an empty configuration): %s", c)
	}
	if rs := tp.ruleset(); strings.Contains(rs, serverIP) || strings.Contains(rs, "tun0") {
		tp.t.Fatalf("the lockdown still names the server or the tunnel:\n%s", rs)
	}
}

// wantOnlyLoopback sends real packets: loopback works, nothing else leaves
// or enters, not even the VPN client's own connection or the tunnel.
func (tp *topo) wantOnlyLoopback() {
	tp.t.Helper()
	tp.zero()
	tp.pass("udp", "127.0.0.1:5000")
	tp.pass("tcp", "127.0.0.1:8080")
	tp.rejected("udp", server1194, "-mark", vpnMark)
	tp.rejected("tcp", server443, "-mark", vpnMark)
	tp.rejected("udp", inetTun0+":5000")
	tp.rejected("ping", serverIP)
	tp.rejected("udp", server6udp, "-mark", vpnMark)
	tp.wantZero("phys-all", "phys-inet", "tun0-all", "phys6-all", "phys6-nonicmp")
	tp.unreachableFromPeer(hostIP + ":22")
}

// testBootLockdown: at boot a missing or invalid configuration never leaves
// the host open. baseline --boot applies the lockdown (only loopback) on a
// fresh host and over a connected one, with the auto backend, which then
// removes the rules of the flavour's backend if that was another; baseline
// without --boot changes nothing, and the fixed configuration's baseline
// brings the flavour's backend back.
func testBootLockdown(t *testing.T, fl flavour) {
	good := []string{"VPNFW_SERVERS=" + serverIP, "VPNFW_SERVER_PORTS=udp/1194 tcp/443", "VPNFW_VPN_MARK=" + vpnMark}
	if fl.backend != "" {
		good = append(good, "VPNFW_BACKEND="+fl.backend)
	}
	// A fresh boot with a configuration the original VPN-Firewall failed
	// open with: the VPN user does not exist.
	tp := newTopo(t, fl, "VPNFW_SERVERS="+serverIP, "VPNFW_VPN_USER=vpnfw-no-such-user")
	tp.addTunnel(0)
	srv := tp.host.Start([]string{helperEnv + "=1"}, 3*time.Minute, tp.probe, "serve", "-timeout", "3m",
		"-addrs", "127.0.0.1", "-udp", "5000", "-tcp", "8080")
	if l := srv.Line(t, 10*time.Second); l != "ready" {
		t.Fatalf("loopback echo server: %q", l)
	}
	before := tp.ruleset()
	if r := tp.hook("baseline"); r.Code != 2 {
		t.Fatalf("baseline with a broken configuration: want exit 2: %s", r)
	}
	wantSame(t, "baseline (no --boot) with a broken configuration", before, tp.ruleset())
	tp.wantLockdown(tp.hook("baseline", "--boot"), "VPNFW_VPN_USER")
	tp.wantOnlyLoopback()

	missing := filepath.Join(t.TempDir(), "missing.env")
	for _, c := range []struct {
		name, cfg, cause string
		lines            []string
	}{
		{"servers without mark or user", tp.cfg, "VPNFW_VPN_MARK or VPNFW_VPN_USER", []string{"VPNFW_SERVERS=" + serverIP}},
		{"unknown key", tp.cfg, "VPNFW_SERVER", append(good, "VPNFW_SERVER=203.0.113.10")},
		{"unknown backend", tp.cfg, "VPNFW_BACKEND", append(good[:3:3], "VPNFW_BACKEND=pf")},
		{"missing file", missing, "cannot read the configuration", nil},
	} {
		// Connected first, with a working configuration.
		writeConfig(t, tp.cfg, good...)
		tp.apply("baseline")
		tp.apply("up", "--dev", "tun0")
		tp.pass("udp", server1194, "-mark", vpnMark)
		tp.pass("udp", inetTun0+":5000")
		connected := tp.ruleset()

		if c.cfg == tp.cfg {
			writeConfig(t, tp.cfg, c.lines...)
		}
		t.Logf("%s: %s", c.name, strings.Join(c.lines, "; "))
		if r := tp.hookWith(c.cfg, "baseline"); r.Code != 2 {
			t.Fatalf("%s: baseline: want exit 2: %s", c.name, r)
		}
		wantSame(t, c.name+": baseline without --boot", connected, tp.ruleset())
		tp.wantLockdown(tp.hookWith(c.cfg, "baseline", "--boot"), c.cause)
		tp.wantOnlyLoopback()
	}
	// Fixed: the configuration applies again, with the flavour's backend.
	writeConfig(t, tp.cfg, good...)
	tp.apply("baseline", "--boot")
	tp.pass("udp", server1194, "-mark", vpnMark)
	if !fl.nft && tp.hasNFTable() {
		t.Errorf("the lockdown's nftables table remains beside %s:\n%s", fl.shows, tp.nftRuleset())
	}
}

// install runs scripts/install.sh with the test's binary into a directory
// of its own (never this machine's /usr or /etc), with the test's
// configuration in place first, and returns the directory: the installed
// scripts name DIR/usr/bin/vpnfw-hook and DIR/etc/vpn-firewall/vpnfw.env.
func (tp *topo) install() string {
	tp.t.Helper()
	dir := tp.t.TempDir()
	cfg := filepath.Join(dir, "etc", "vpn-firewall", "vpnfw.env")
	text, err := os.ReadFile(tp.cfg)
	if err != nil {
		tp.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		tp.t.Fatal(err)
	}
	if err := os.WriteFile(cfg, text, 0o600); err != nil {
		tp.t.Fatal(err)
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "install.sh"))
	if err != nil {
		tp.t.Fatal(err)
	}
	cmd := exec.Command("bash", script, "--binary", tp.bin, "--prefix", filepath.Join(dir, "usr"),
		"--sysconfdir", filepath.Join(dir, "etc"), "--unitdir", filepath.Join(dir, "systemd"),
		"--plugindir", filepath.Join(dir, "plugins.d"))
	cmd.Env = append(os.Environ(), "DESTDIR=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tp.t.Fatalf("install.sh: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "exists: kept") {
		tp.t.Fatalf("install.sh did not keep the existing configuration: %s", out)
	}
	if got, _ := os.ReadFile(cfg); string(got) != string(text) {
		tp.t.Fatalf("install.sh changed the existing configuration:\n%s", got)
	}
	return dir
}
