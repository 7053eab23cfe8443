package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
	"github.com/vpnfw/vpnfw/rules/iptables"
	"github.com/vpnfw/vpnfw/rules/nftables"
)

// fakeBackend stands in for the kernel: it records what the hook asks of it
// and remembers the tunnels of the last ruleset applied, as the kernel would.
type fakeBackend struct {
	live       []string // tunnels the "kernel" allows
	applied    []*rules.Ruleset
	checked    []*rules.Ruleset
	disarmed   int
	tunnelsErr error
	applyErr   error
	checkErr   error
}

func (f *fakeBackend) Name() string { return "fake" }

func (f *fakeBackend) Tunnels(context.Context) ([]string, error) {
	if f.tunnelsErr != nil {
		return nil, f.tunnelsErr
	}
	return slices.Clone(f.live), nil
}

func (f *fakeBackend) Apply(_ context.Context, rs *rules.Ruleset) error {
	f.applied = append(f.applied, rs)
	if f.applyErr != nil {
		return f.applyErr
	}
	f.live = slices.Clone(rs.Tunnels)
	return nil
}

func (f *fakeBackend) Check(_ context.Context, rs *rules.Ruleset) error {
	f.checked = append(f.checked, rs)
	return f.checkErr
}

func (f *fakeBackend) Status(context.Context) (*rules.Status, error) {
	st := &rules.Status{Backend: "fake", Armed: true, State: rules.Blocked, Tunnels: slices.Clone(f.live),
		Rules: []rules.Counter{{Family: "ipv4", Chain: "VPNFW-OUTPUT", Purpose: "fail closed: reject everything else", Verdict: "REJECT", Packets: 7, Bytes: 420}}}
	if len(f.live) > 0 {
		st.State = rules.Connected
	}
	return st, nil
}

func (f *fakeBackend) Disarm(context.Context) error { f.disarmed++; return nil }

func (f *fakeBackend) Present(context.Context) (bool, error) {
	return len(f.applied) > 0 || len(f.live) > 0, nil
}

var _ rules.Backend = (*fakeBackend)(nil)

func fakeUsers(name string) (uint32, error) {
	switch name {
	case "root":
		return 0, nil
	case "openvpn":
		return 998, nil
	}
	return 0, fmt.Errorf("unknown user %s", name)
}

const testConfig = `VPNFW_SERVERS=192.0.2.10 2001:db8::10
VPNFW_SERVER_PORTS=udp/1194 tcp/443
VPNFW_VPN_MARK=119
VPNFW_TUN_DEVICES=tun+
`

// harness runs the hook against a config file in a temporary directory and
// a fake backend shared by every run, like the kernel between invocations.
type harness struct {
	t              *testing.T
	dir, cfgPath   string
	be             *fakeBackend
	backendCalls   int
	backendErr     error
	env            map[string]string
	loadOpts       rules.LoadOptions
	stdout, stderr *bytes.Buffer
	// nftSupported is what the kernel probe answers (VPNFW_BACKEND=auto).
	nftSupported bool
	// sweeps records, per backend created, whether it was to sweep.
	sweeps []bool
}

func newHarness(t *testing.T, config string) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, cfgPath: filepath.Join(dir, "vpnfw.env"), be: &fakeBackend{},
		env:      map[string]string{},
		loadOpts: rules.LoadOptions{AllowNonRootOwner: true, LookupUser: fakeUsers}}
	h.writeConfig(config)
	return h
}

func (h *harness) writeConfig(text string) {
	h.t.Helper()
	if err := os.WriteFile(h.cfgPath, []byte(text), 0o600); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chmod(h.cfgPath, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// run invokes the hook with args, as a fresh process would.
func (h *harness) run(args ...string) int {
	h.stdout, h.stderr = &bytes.Buffer{}, &bytes.Buffer{}
	env := h.env
	a := &app{
		stdout: h.stdout, stderr: h.stderr,
		getenv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
		loadOpts: h.loadOpts,
		newBackend: func(cfg *rules.Config, sweep bool) (rules.Backend, error) {
			h.backendCalls++
			h.sweeps = append(h.sweeps, sweep)
			if h.backendErr != nil {
				return nil, h.backendErr
			}
			return h.be, nil
		},
		nftSupported: func() (bool, error) {
			if !h.nftSupported {
				return false, errors.New("protocol not supported")
			}
			return true, nil
		},
		lockPath:  filepath.Join(h.dir, "vpnfw.lock"),
		armedPath: filepath.Join(h.dir, "vpnfw.armed"),
	}
	return a.run(args)
}

// expect runs args and fails the test unless the exit code is code.
func (h *harness) expect(code int, args ...string) {
	h.t.Helper()
	if got := h.run(args...); got != code {
		h.t.Errorf("vpnfw-hook %q exited %d, want %d\nstdout: %s\nstderr: %s", args, got, code, h.stdout, h.stderr)
	}
}

func (h *harness) noApply() {
	h.t.Helper()
	if n := len(h.be.applied); n != 0 {
		h.t.Errorf("%d rulesets applied, want none: first has tunnels %v", n, h.be.applied[0].Tunnels)
	}
	if h.be.disarmed != 0 {
		h.t.Errorf("disarmed")
	}
}

// applied returns the only ruleset applied since the last call and resets
// the record.
func (h *harness) applied() *rules.Ruleset {
	h.t.Helper()
	if n := len(h.be.applied); n != 1 {
		h.t.Fatalf("%d rulesets applied, want 1\nstderr: %s", n, h.stderr)
	}
	rs := h.be.applied[0]
	h.be.applied = nil
	return rs
}

func (h *harness) config() *rules.Config {
	h.t.Helper()
	cfg, err := rules.Load(h.cfgPath, h.loadOpts)
	if err != nil {
		h.t.Fatal(err)
	}
	return cfg
}

// wantRuleset checks that rs is exactly the policy for tunnels.
func (h *harness) wantRuleset(rs *rules.Ruleset, tunnels ...string) {
	h.t.Helper()
	want := rules.Policy(h.config(), tunnels)
	if !slices.Equal(rs.Tunnels, want.Tunnels) || rs.State != want.State {
		h.t.Errorf("applied %s with tunnels %v, want %s with %v", rs.State, rs.Tunnels, want.State, want.Tunnels)
	}
	if got, w := iptables.Render(rs), iptables.Render(want); got != w {
		h.t.Errorf("applied ruleset is not Policy(cfg, %v)", tunnels)
	}
}

func TestBaselineUpDown(t *testing.T) {
	h := newHarness(t, testConfig)
	h.be.live = []string{"tun3"}
	h.expect(0, "--config", h.cfgPath, "baseline")
	h.wantRuleset(h.applied())

	h.expect(0, "--config", h.cfgPath, "up", "--dev", "tun0")
	h.wantRuleset(h.applied(), "tun0")
	h.expect(0, "--config", h.cfgPath, "up", "--dev", "tun1", "--server", "192.0.2.10", "--port", "1194", "--proto", "udp")
	h.wantRuleset(h.applied(), "tun0", "tun1")
	h.expect(0, "--config", h.cfgPath, "up", "--dev", "tun1") // again: nothing new
	h.wantRuleset(h.applied(), "tun0", "tun1")
	h.expect(0, "--config", h.cfgPath, "down", "--dev", "tun0")
	h.wantRuleset(h.applied(), "tun1")
	h.expect(0, "--config", h.cfgPath, "down", "--dev", "tun0") // not live: still fine
	h.wantRuleset(h.applied(), "tun1")
	h.expect(0, "--config", h.cfgPath, "down", "--dev", "tun1")
	h.wantRuleset(h.applied())

	// The applied line names the state, backend, tunnel and duration.
	h.expect(0, "--config", h.cfgPath, "up", "--dev", "tun0")
	h.applied()
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(h.stderr.Bytes()), &line); err != nil {
		t.Fatalf("log is not one JSON line: %v: %s", err, h.stderr)
	}
	for k, v := range map[string]any{"state": "connected", "backend": "fake", "dev": "tun0", "event": "up", "message": "applied"} {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v (%s)", k, line[k], v, h.stderr)
		}
	}
	if _, ok := line["took"]; !ok {
		t.Errorf("log has no duration: %s", h.stderr)
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	h := newHarness(t, testConfig)
	h.env["VPNFW_CONFIG"] = h.cfgPath
	h.expect(0, "up", "--dev", "tun0")
	h.wantRuleset(h.applied(), "tun0")
	// --config wins over the environment.
	h.env["VPNFW_CONFIG"] = filepath.Join(h.dir, "missing.env")
	h.expect(0, "--config", h.cfgPath, "baseline")
	h.applied()
	h.expect(2, "baseline")
	h.noApply()
}

func TestUpRefusals(t *testing.T) {
	for _, c := range []struct {
		name string
		code int
		args []string
		msg  string
	}{
		{"server outside VPNFW_SERVERS", 1, []string{"--server", "203.0.113.5"}, "not in VPNFW_SERVERS"},
		{"mapped server outside", 1, []string{"--server", "::ffff:203.0.113.5"}, "not in VPNFW_SERVERS"},
		{"port not configured", 1, []string{"--server", "192.0.2.10", "--port", "1195", "--proto", "udp"}, "not in VPNFW_SERVER_PORTS"},
		{"proto not configured", 1, []string{"--server", "192.0.2.10", "--port", "1194", "--proto", "tcp"}, "not in VPNFW_SERVER_PORTS"},
		{"bad server", 2, []string{"--server", "vpn.example.com"}, "--server"},
		{"server with zone", 2, []string{"--server", "fe80::1%eth0"}, "--server"},
		{"port without proto", 2, []string{"--port", "1194"}, "--port/--proto"},
		{"proto without port", 2, []string{"--proto", "udp"}, "--port/--proto"},
		{"port 0", 2, []string{"--port", "0", "--proto", "udp"}, "--port/--proto"},
		{"port 65536", 2, []string{"--port", "65536", "--proto", "udp"}, "--port/--proto"},
		{"proto sctp", 2, []string{"--port", "1194", "--proto", "sctp"}, "--port/--proto"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, testConfig)
			h.be.live = []string{"tun1"}
			h.expect(c.code, append([]string{"--config", h.cfgPath, "up", "--dev", "tun0"}, c.args...)...)
			h.noApply()
			if !strings.Contains(h.stderr.String(), c.msg) {
				t.Errorf("stderr does not say %q: %s", c.msg, h.stderr)
			}
			if !slices.Equal(h.be.live, []string{"tun1"}) {
				t.Errorf("live tunnels changed to %v", h.be.live)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"--bogus", "baseline"},
		{"--log-format", "xml", "baseline"},
		{"up"},
		{"down"},
		{"up", "--dev", ""},
		{"up", "--dev"},
		{"up", "--dev", "tun0", "extra"},
		{"down", "--dev", "tun0", "tun1"},
		{"baseline", "extra"},
		{"baseline", "--dev", "tun0"},
		{"down", "--dev", "tun0", "--server", "192.0.2.10"},
		{"up", "--dev", "tun0", "--bogus"},
		{"up", "--dev", "eth0"},
		{"up", "--dev", "lo"},
		{"up", "--dev", "tun+"},
		{"up", "--dev", "tun0;id"},
		{"up", "--dev", "../x"},
		{"up", "--dev", "tun0123456789abc"},
		{"down", "--dev", "eth0"},
		{"disarm"},
		{"disarm", "--yes", "now"},
		{"disarm", "--yes=maybe"},
		{"version", "extra"},
		{"status", "extra"},
		{"check", "--json"},
		{"render", "frobnicate"},
		{"render", "up"},
		{"render", "up", "--dev", "eth0"},
		{"render", "baseline", "extra"},
		{"render", "baseline", "--boot"},
		{"baseline", "--boot=maybe"},
		{"baseline", "--boot", "extra"},
		{"up", "--dev", "tun0", "--boot"},
		{"down", "--dev", "tun0", "--boot"},
		{"UP", "--dev", "tun0"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			h := newHarness(t, testConfig)
			h.expect(2, append([]string{"--config", h.cfgPath}, args...)...)
			h.noApply()
			if h.stderr.Len() == 0 {
				t.Error("nothing on stderr")
			}
		})
	}
}

func TestNoCommandPrintsUsage(t *testing.T) {
	h := newHarness(t, testConfig)
	h.expect(2)
	if !strings.Contains(h.stderr.String(), "Usage: vpnfw-hook") {
		t.Errorf("no usage: %s", h.stderr)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"-help"},
		{"baseline", "--help"}, {"baseline", "--boot", "--help"}, {"up", "--help"}, {"down", "-h"}, {"status", "--help"}, {"check", "--help"},
		{"render", "--help"}, {"render", "up", "--help"}, {"disarm", "--help"}, {"version", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			h := newHarness(t, testConfig)
			h.expect(0, args...) // no --config: help needs none
			if !strings.Contains(h.stderr.String(), "Usage: vpnfw-hook") {
				t.Errorf("no usage on stderr: %q", h.stderr)
			}
			h.noApply()
			if h.backendCalls != 0 {
				t.Errorf("help created a backend")
			}
		})
	}
	h := newHarness(t, testConfig)
	h.expect(0, "help")
	if !strings.Contains(h.stdout.String(), "Usage: vpnfw-hook") || !strings.Contains(h.stdout.String(), "disarm --yes") {
		t.Errorf("help: %q", h.stdout)
	}
	h.expect(0, "baseline", "--help")
	if !strings.Contains(h.stderr.String(), "-boot") || !strings.Contains(h.stderr.String(), "lockdown") {
		t.Errorf("baseline --help does not describe --boot: %s", h.stderr)
	}
	h.expect(0, "--help")
	if !strings.Contains(h.stderr.String(), "baseline [--boot]") {
		t.Errorf("--help does not name baseline --boot: %s", h.stderr)
	}
	h.expect(0, "up", "--help")
	for _, flag := range []string{"-dev", "-server", "-port", "-proto"} {
		if !strings.Contains(h.stderr.String(), flag) {
			t.Errorf("up --help does not describe %s: %s", flag, h.stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	h := newHarness(t, testConfig)
	h.expect(0, "version")
	if !strings.HasPrefix(h.stdout.String(), "vpnfw-hook ") || !strings.HasSuffix(h.stdout.String(), "\n") {
		t.Errorf("version printed %q", h.stdout)
	}
	h.noApply()
}

func TestConfigErrorsExit2(t *testing.T) {
	for _, c := range []struct {
		name, config string
		mode         os.FileMode
		msg          string
	}{
		{"unknown key", testConfig + "VPNFW_SERVER=192.0.2.11\n", 0o600, "VPNFW_SERVER"},
		{"bad value", testConfig + "VPNFW_LAN=0.0.0.0/0\n", 0o600, "VPNFW_LAN"},
		{"servers without mark", "VPNFW_SERVERS=192.0.2.10\n", 0o600, "VPNFW_VPN_MARK or VPNFW_VPN_USER"},
		{"group-writable", testConfig, 0o620, "chmod go-w"},
		{"world-writable", testConfig, 0o606, "chmod go-w"},
		{"nftables backend not there yet", testConfig + "VPNFW_BACKEND=nftables\n", 0o600, "nftables"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, c.config)
			if err := os.Chmod(h.cfgPath, c.mode); err != nil {
				t.Fatal(err)
			}
			if c.name == "nftables backend not there yet" {
				h.backendErr = &rules.ConfigError{Key: "VPNFW_BACKEND", Value: "nftables", Expected: "the nftables backend is not in this version yet"}
			}
			for _, args := range [][]string{{"baseline"}, {"up", "--dev", "tun0"}, {"down", "--dev", "tun0"}} {
				h.expect(2, append([]string{"--config", h.cfgPath}, args...)...)
				if !strings.Contains(h.stderr.String(), c.msg) {
					t.Errorf("%v: stderr does not say %q: %s", args, c.msg, h.stderr)
				}
			}
			h.noApply()
		})
	}
	t.Run("missing file", func(t *testing.T) {
		h := newHarness(t, testConfig)
		h.expect(2, "--config", filepath.Join(h.dir, "nope.env"), "baseline")
		h.noApply()
	})
	t.Run("directory", func(t *testing.T) {
		h := newHarness(t, testConfig)
		h.expect(2, "--config", h.dir, "baseline")
		h.noApply()
	})
	t.Run("not owned by root", func(t *testing.T) {
		h := newHarness(t, testConfig)
		h.loadOpts.AllowNonRootOwner = false
		makeNonRootOwned(t, h.cfgPath)
		h.expect(2, "--config", h.cfgPath, "up", "--dev", "tun0")
		h.noApply()
		if !strings.Contains(h.stderr.String(), "must be owned by root") {
			t.Errorf("stderr: %s", h.stderr)
		}
	})
}

// makeNonRootOwned gives path to nobody when running as root; otherwise it
// already belongs to the unprivileged user running the test.
func makeNonRootOwned(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() == 0 {
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBackendFailuresExit1(t *testing.T) {
	h := newHarness(t, testConfig)
	h.backendErr = errors.New("no usable iptables")
	h.expect(1, "--config", h.cfgPath, "up", "--dev", "tun0")
	h.noApply()

	h = newHarness(t, testConfig)
	h.be.tunnelsErr = errors.New("iptables-save failed")
	h.expect(1, "--config", h.cfgPath, "up", "--dev", "tun0")
	h.noApply()

	h = newHarness(t, testConfig)
	h.be.live = []string{"tun1"}
	h.be.applyErr = errors.New("iptables-restore failed")
	h.expect(1, "--config", h.cfgPath, "up", "--dev", "tun0")
	if !strings.Contains(h.stderr.String(), "at least as closed as before") {
		t.Errorf("stderr: %s", h.stderr)
	}
	if !slices.Equal(h.be.live, []string{"tun1"}) {
		t.Errorf("live = %v", h.be.live)
	}
}

func TestNarrowedTunDevicesDropsOldTunnels(t *testing.T) {
	h := newHarness(t, testConfig+"VPNFW_TUN_DEVICES=tun0 tun1\n")
	// The second VPNFW_TUN_DEVICES line wins, as in a shell.
	h.be.live = []string{"ppp0", "tun1", "tun7"}
	h.expect(0, "--config", h.cfgPath, "up", "--dev", "tun0")
	h.wantRuleset(h.applied(), "tun0", "tun1")
}

func TestDisarm(t *testing.T) {
	h := newHarness(t, testConfig)
	h.expect(2, "--config", h.cfgPath, "disarm")
	if h.be.disarmed != 0 || h.backendCalls != 0 {
		t.Fatal("disarm without --yes touched the backend")
	}
	h.expect(0, "--config", h.cfgPath, "disarm", "--yes")
	if h.be.disarmed != 1 || len(h.be.applied) != 0 {
		t.Errorf("disarmed %d times, applied %d", h.be.disarmed, len(h.be.applied))
	}
}

// The way out must not depend on a configuration that may be the problem.
func TestDisarmWithBrokenConfig(t *testing.T) {
	h := newHarness(t, "VPNFW_SERVRES=192.0.2.10\n")
	h.expect(0, "--config", h.cfgPath, "disarm", "--yes")
	if h.be.disarmed != 1 {
		t.Errorf("disarmed %d times with a broken configuration, want 1", h.be.disarmed)
	}
	h2 := newHarness(t, testConfig)
	h2.expect(0, "--config", filepath.Join(h2.dir, "missing.env"), "disarm", "--yes")
	if h2.be.disarmed != 1 {
		t.Errorf("disarmed %d times with a missing configuration, want 1", h2.be.disarmed)
	}
}

func TestStatusAndCheck(t *testing.T) {
	h := newHarness(t, testConfig)
	h.be.live = []string{"tun0"}
	h.expect(0, "--config", h.cfgPath, "check")
	if !strings.HasPrefix(h.stdout.String(), "ok: connected state") || len(h.be.checked) != 1 {
		t.Errorf("check printed %q", h.stdout)
	} else {
		h.wantRuleset(h.be.checked[0], "tun0")
	}

	h.expect(0, "--config", h.cfgPath, "status")
	for _, want := range []string{"backend: fake (VPNFW_BACKEND=auto)", "state:   connected", "tunnels: tun0", "servers: 192.0.2.10/32 2001:db8::10/128", "check:   ok", "fail closed: reject everything else"} {
		if !strings.Contains(h.stdout.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, h.stdout)
		}
	}

	h.be.checkErr = errors.New("ipv4: OUTPUT policy is ACCEPT")
	h.expect(1, "--config", h.cfgPath, "check")
	if !strings.Contains(h.stderr.String(), "OUTPUT policy is ACCEPT") {
		t.Errorf("check stderr: %s", h.stderr)
	}
	h.expect(0, "--config", h.cfgPath, "status", "--json")
	var report struct {
		Backend    string   `json:"backend"`
		Configured string   `json:"configured_backend"`
		State      string   `json:"state"`
		Tunnels    []string `json:"tunnels"`
		Servers    []string `json:"servers"`
		Check      string   `json:"check"`
		Rules      []rules.Counter
	}
	if err := json.Unmarshal(h.stdout.Bytes(), &report); err != nil {
		t.Fatalf("status --json: %v: %s", err, h.stdout)
	}
	if report.Backend != "fake" || report.Configured != "auto" || report.State != "connected" || !slices.Equal(report.Tunnels, []string{"tun0"}) ||
		!slices.Equal(report.Servers, []string{"192.0.2.10/32", "2001:db8::10/128"}) ||
		!strings.Contains(report.Check, "OUTPUT policy is ACCEPT") || len(report.Rules) != 1 || report.Rules[0].Packets != 7 {
		t.Errorf("status --json: %+v", report)
	}

	// A live tunnel the configuration does not allow fails the check.
	h.be.checkErr = nil
	h.be.live = []string{"eth0"}
	h.expect(1, "--config", h.cfgPath, "check")
	if !strings.Contains(h.stderr.String(), "eth0") {
		t.Errorf("stderr: %s", h.stderr)
	}
	h.noApply()
}

func TestRenderWithoutRoot(t *testing.T) {
	h := newHarness(t, testConfig+"VPNFW_LAN=192.168.1.0/24\n")
	h.loadOpts = rules.LoadOptions{} // production options: render must still accept a user's file
	makeNonRootOwned(t, h.cfgPath)
	cfg, err := rules.Load(h.cfgPath, rules.LoadOptions{AllowNonRootOwner: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args    []string
		tunnels []string
	}{
		{[]string{"render"}, nil},
		{[]string{"render", "baseline"}, nil},
		{[]string{"render", "down", "--dev", "tun0"}, nil},
		{[]string{"render", "up", "--dev", "tun0"}, []string{"tun0"}},
		{[]string{"render", "up", "--dev", "tun0", "--server", "192.0.2.10", "--port", "443", "--proto", "tcp"}, []string{"tun0"}},
	} {
		h.expect(0, append([]string{"--config", h.cfgPath}, c.args...)...)
		out := h.stdout.String()
		if want := iptables.Render(rules.Policy(cfg, c.tunnels)); out != want {
			t.Errorf("%v printed:\n%s\nwant:\n%s", c.args, out, want)
		}
		i4, i6 := strings.Index(out, "# iptables-restore --noflush\n"), strings.Index(out, "# ip6tables-restore --noflush\n")
		if i4 != 0 || i6 <= i4 || strings.Count(out, "COMMIT\n") != 2 {
			t.Errorf("%v: not two sections, iptables-restore then ip6tables-restore:\n%s", c.args, out)
		}
	}
	// A refused tunnel is refused in render too.
	h.expect(1, "--config", h.cfgPath, "render", "up", "--dev", "tun0", "--server", "203.0.113.5")
	if h.backendCalls != 0 {
		t.Errorf("render created a backend %d times", h.backendCalls)
	}
	h.noApply()
	// Render still refuses a file others can write.
	if err := os.Chmod(h.cfgPath, 0o666); err != nil {
		t.Fatal(err)
	}
	h.expect(2, "--config", h.cfgPath, "render")
	// But the hot path refuses the non-root file render accepted.
	if err := os.Chmod(h.cfgPath, 0o600); err != nil {
		t.Fatal(err)
	}
	h.expect(2, "--config", h.cfgPath, "baseline")
	h.noApply()
}

func TestLockFileIsCreatedWhereConfigured(t *testing.T) {
	h := newHarness(t, testConfig)
	h.expect(0, "--config", h.cfgPath, "baseline")
	fi, err := os.Stat(filepath.Join(h.dir, "vpnfw.lock"))
	if err != nil {
		t.Fatalf("lock file: %v", err)
	}
	// Readable by all, so a VPN client running as its own user can lock it.
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("lock file mode %04o", fi.Mode().Perm())
	}
}

// lockdownRuleset is what the boot path applies when the configuration
// cannot be used: the blocked state of an empty configuration.
func lockdownRuleset() *rules.Ruleset { return rules.Policy(rules.Lockdown(), nil) }

// logLines parses the JSON log lines of one run.
func logLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %q", err, l)
		}
		out = append(out, m)
	}
	return out
}

func TestBootLockdown(t *testing.T) {
	for _, c := range []struct {
		name, config string
		mode         os.FileMode
		missing      bool
		msg          string
	}{
		{"missing file", "", 0o600, true, "cannot read the configuration"},
		{"unknown key", testConfig + "VPNFW_SERVER=192.0.2.11\n", 0o600, false, "VPNFW_SERVER"},
		{"bad value", testConfig + "VPNFW_LAN=0.0.0.0/0\n", 0o600, false, "VPNFW_LAN"},
		{"servers without mark", "VPNFW_SERVERS=192.0.2.10\n", 0o600, false, "VPNFW_VPN_MARK or VPNFW_VPN_USER"},
		{"missing user", testConfig + "VPNFW_VPN_USER=tunnel\n", 0o600, false, "no such user"},
		{"world-writable", testConfig, 0o606, false, "chmod go-w"},
		{"not a dotenv file", "VPNFW_SERVERS='192.0.2.10\n", 0o600, false, "dotenv"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, c.config)
			h.be.live = []string{"tun0"}
			cfgPath := h.cfgPath
			if c.missing {
				cfgPath = filepath.Join(h.dir, "missing.env")
			}
			if err := os.Chmod(h.cfgPath, c.mode); err != nil {
				t.Fatal(err)
			}
			// Without --boot a configuration error changes nothing.
			h.expect(2, "--config", cfgPath, "baseline")
			h.noApply()
			if !slices.Equal(h.be.live, []string{"tun0"}) {
				t.Fatalf("baseline without --boot changed the live tunnels to %v", h.be.live)
			}

			h.expect(2, "--config", cfgPath, "baseline", "--boot")
			rs := h.applied()
			if rs.State != rules.Blocked || len(rs.Tunnels) != 0 {
				t.Errorf("lockdown state %s with tunnels %v", rs.State, rs.Tunnels)
			}
			if got, want := iptables.Render(rs), iptables.Render(lockdownRuleset()); got != want {
				t.Errorf("the lockdown is not the blocked state of an empty configuration:\n%s", got)
			}
			if len(h.be.live) != 0 {
				t.Errorf("the lockdown left tunnels %v open", h.be.live)
			}
			// The log says why, then that the lockdown is in place, then the exit.
			lines := logLines(t, h.stderr.String())
			if len(lines) != 3 {
				t.Fatalf("want 3 log lines (cause, lockdown, exit), got %d:\n%s", len(lines), h.stderr)
			}
			cause, applied, exit := lines[0], lines[1], lines[2]
			if cause["level"] != "error" || !strings.Contains(cause["message"].(string), c.msg) || !strings.Contains(cause["message"].(string), "lockdown") {
				t.Errorf("first line does not give the cause %q: %v", c.msg, cause)
			}
			if applied["level"] != "warn" || applied["state"] != "lockdown" || applied["backend"] != "fake" ||
				!strings.HasPrefix(applied["message"].(string), "lockdown applied: only loopback passes") {
				t.Errorf("second line does not report the lockdown: %v", applied)
			}
			if exit["exit"] != float64(2) || !strings.Contains(exit["message"].(string), c.msg) || !strings.Contains(exit["message"].(string), "boot lockdown in place") {
				t.Errorf("last line: %v", exit)
			}
		})
	}
}

func TestBootWithGoodConfigIsBaseline(t *testing.T) {
	h := newHarness(t, testConfig)
	h.be.live = []string{"tun0"}
	h.expect(0, "--config", h.cfgPath, "baseline", "--boot")
	h.wantRuleset(h.applied())
	if strings.Contains(h.stderr.String(), "lockdown") {
		t.Errorf("a good configuration logged a lockdown: %s", h.stderr)
	}
}

func TestBootLockdownFailures(t *testing.T) {
	// The lockdown itself cannot be applied: exit 1, the rules could not be applied.
	h := newHarness(t, "VPNFW_BOGUS=1\n")
	h.be.applyErr = errors.New("iptables-restore failed")
	h.expect(1, "--config", h.cfgPath, "baseline", "--boot")
	if len(h.be.applied) != 1 {
		t.Errorf("%d applies, want the one lockdown attempt", len(h.be.applied))
	}
	for _, want := range []string{"applying the lockdown with fake", "iptables-restore failed", "VPNFW_BOGUS"} {
		if !strings.Contains(h.stderr.String(), want) {
			t.Errorf("stderr lacks %q: %s", want, h.stderr)
		}
	}
	// No usable iptables at all: exit 1 too.
	h = newHarness(t, "VPNFW_BOGUS=1\n")
	h.backendErr = errors.New("no usable iptables")
	h.expect(1, "--config", h.cfgPath, "baseline", "--boot")
	h.noApply()
	// A backend failure with a good configuration is no reason for a lockdown.
	h = newHarness(t, testConfig)
	h.be.applyErr = errors.New("iptables-restore failed")
	h.expect(1, "--config", h.cfgPath, "baseline", "--boot")
	if len(h.be.applied) != 1 || strings.Contains(h.stderr.String(), "lockdown") {
		t.Errorf("applied %d times; stderr: %s", len(h.be.applied), h.stderr)
	}
}

// render prints the table of the backend VPNFW_BACKEND picks on this host,
// or the one --backend names.
func TestRenderBackends(t *testing.T) {
	h := newHarness(t, testConfig)
	cfg, err := rules.Load(h.cfgPath, rules.LoadOptions{AllowNonRootOwner: true})
	if err != nil {
		t.Fatal(err)
	}
	rs := rules.Policy(cfg, []string{"tun0"})
	nft, err := nftables.Render(rs)
	if err != nil {
		t.Fatal(err)
	}
	ipt := iptables.Render(rs)
	for _, c := range []struct {
		name      string
		supported bool
		config    string
		args      []string
		want      string
	}{
		{"auto with nftables", true, testConfig, nil, nft},
		{"auto without nftables", false, testConfig, nil, ipt},
		{"configured iptables", true, testConfig + "VPNFW_BACKEND=iptables\n", nil, ipt},
		{"configured nftables", false, testConfig + "VPNFW_BACKEND=nftables\n", nil, nft},
		{"flag iptables", true, testConfig, []string{"--backend", "iptables"}, ipt},
		{"flag nftables", false, testConfig + "VPNFW_BACKEND=iptables\n", []string{"--backend", "nftables"}, nft},
	} {
		t.Run(c.name, func(t *testing.T) {
			h.writeConfig(c.config)
			h.nftSupported = c.supported
			h.expect(0, append([]string{"--config", h.cfgPath, "render", "up", "--dev", "tun0"}, c.args...)...)
			if got := h.stdout.String(); got != c.want {
				t.Errorf("printed:\n%s\nwant:\n%s", got, c.want)
			}
		})
	}
	// auto falling back says why.
	h.writeConfig(testConfig)
	h.nftSupported = false
	h.expect(0, "--config", h.cfgPath, "render")
	if !strings.Contains(h.stderr.String(), "VPNFW_BACKEND=auto: iptables") {
		t.Errorf("the fallback to iptables is not logged: %s", h.stderr)
	}
	h.expect(2, "--config", h.cfgPath, "render", "--backend", "pf")
	if h.backendCalls != 0 {
		t.Errorf("render created a backend %d times", h.backendCalls)
	}
}

// The armed marker follows what was applied: set by every apply, the boot
// lockdown included, removed by disarm, untouched by what changes nothing.
func TestArmedMarker(t *testing.T) {
	h := newHarness(t, testConfig)
	marker := filepath.Join(h.dir, "vpnfw.armed")
	armed := func() bool {
		_, err := os.Stat(marker)
		return err == nil
	}
	h.expect(0, "--config", h.cfgPath, "render")
	h.expect(0, "--config", h.cfgPath, "check")
	if armed() {
		t.Fatal("render or check marked vpnfw armed")
	}
	h.expect(0, "--config", h.cfgPath, "up", "--dev", "tun0")
	if !armed() {
		t.Fatal("up did not mark vpnfw armed")
	}
	h.expect(0, "--config", h.cfgPath, "disarm", "--yes")
	if armed() {
		t.Fatal("disarm left the marker")
	}
	h.be.applyErr = errors.New("refused")
	h.expect(1, "--config", h.cfgPath, "baseline")
	if armed() {
		t.Fatal("a failed apply marked vpnfw armed")
	}
	h.be.applyErr = nil
	h.writeConfig("VPNFW_SERVERS=nonsense\n")
	h.expect(2, "--config", h.cfgPath, "baseline", "--boot")
	if !armed() {
		t.Fatal("the boot lockdown did not mark vpnfw armed")
	}
}

// Only baseline and the boot lockdown sweep the other backend for leftovers:
// up and down run on every tunnel event and skip that read.
func TestSweepOnBaselineOnly(t *testing.T) {
	h := newHarness(t, testConfig)
	h.expect(0, "--config", h.cfgPath, "baseline")
	h.expect(0, "--config", h.cfgPath, "up", "--dev", "tun0")
	h.expect(0, "--config", h.cfgPath, "down", "--dev", "tun0")
	h.expect(0, "--config", h.cfgPath, "check")
	h.writeConfig("VPNFW_SERVERS=nonsense\n")
	h.expect(2, "--config", h.cfgPath, "baseline", "--boot")
	if want := []bool{true, false, false, false, true}; !slices.Equal(h.sweeps, want) {
		t.Errorf("sweeps %v, want %v (baseline, up, down, check, lockdown)", h.sweeps, want)
	}
}
