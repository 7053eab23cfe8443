// Command vpnfw-hook is the fail-closed firewall for VPN clients: it applies
// the blocked baseline and, called by OpenVPN as its up/route-up/down script,
// allows the tunnel device while it exists.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/vpnfw/vpnfw/rules"
	"github.com/vpnfw/vpnfw/rules/iptables"
	"github.com/vpnfw/vpnfw/rules/nftables"
)

const usageText = `vpnfw-hook: fail-closed firewall for VPN clients

Usage: vpnfw-hook [--config FILE] [--log-format auto|console|json] COMMAND [flags]

Commands:
  baseline [--boot]        apply the blocked state: only loopback and the VPN client's
                           own connection to its servers; with --boot (what the boot
                           unit and plugin run) a missing or invalid configuration
                           applies the lockdown (loopback only) and exits 2
  up --dev D [--server IP --port N --proto udp|tcp]
                           allow tunnel device D (and check the server it runs to)
  down --dev D             remove tunnel D's allowance; the blocked state stays
  status [--json]          state, allowed tunnels, servers and rule counters
  check                    exit 0 only if the live ruleset is fail-closed and matches the config
  render [baseline | up --dev D ...] [--backend iptables|nftables]
                           print the rules that would be applied; needs no root
  disarm --yes             remove every rule of vpnfw: the only way to fail open
  version                  version and build info

As OpenVPN's script (script_type=up, route-up or down in the environment) the
command comes from OpenVPN's variables and its positional arguments are ignored:
  up "/usr/local/bin/vpnfw-hook --config /etc/vpn-firewall/vpnfw.env"

The configuration is --config, else $VPNFW_CONFIG, else ` + rules.DefaultConfigPath + `.
Exit codes: 0 done; 1 the rules could not be applied or the tunnel was refused
(the host stays at least as closed as before); 2 usage or configuration error
(nothing was changed). Run vpnfw-hook COMMAND --help for a command's flags.
`

// app is one invocation: its inputs and outputs, no global state.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) (string, bool)
	configPath     string
	logFormat      string
	log            zerolog.Logger
	// loadOpts, newBackend and nftSupported are seams for tests.
	loadOpts     rules.LoadOptions
	newBackend   func(cfg *rules.Config, sweep bool) (rules.Backend, error)
	nftSupported func() (bool, error)
	lockPath     string
	// armedPath exists while vpnfw is armed: applied since boot and not
	// disarmed. After another tool flushed the ruleset the kernel no longer
	// tells, and nftables.service's drop-in re-arms vpnfw only if it was.
	armedPath string
}

func main() {
	a := &app{stdout: os.Stdout, stderr: os.Stderr, getenv: os.LookupEnv,
		nftSupported: nftables.Supported, lockPath: "/run/vpnfw.lock", armedPath: "/run/vpnfw.armed"}
	a.newBackend = a.systemBackend
	os.Exit(a.run(os.Args[1:]))
}

// run executes one command line and returns the exit code.
func (a *app) run(args []string) int {
	gfs := flag.NewFlagSet("vpnfw-hook", flag.ContinueOnError)
	gfs.SetOutput(a.stderr)
	gfs.Usage = func() { fmt.Fprint(a.stderr, usageText) }
	gfs.StringVar(&a.configPath, "config", "", "configuration `FILE`")
	gfs.StringVar(&a.logFormat, "log-format", "auto", "log format: auto (console on a terminal, else JSON), console or json")
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	a.log = newLogger(a.stderr, a.logFormat, zerolog.InfoLevel)
	if !slices.Contains([]string{"auto", "console", "json"}, a.logFormat) {
		return a.fail(usagef("--log-format %q: expected auto, console or json", a.logFormat))
	}
	if a.configPath == "" {
		a.configPath = rules.DefaultConfigPath
		if p, ok := a.getenv("VPNFW_CONFIG"); ok && p != "" {
			a.configPath = p
		}
	}
	if _, ok := a.getenv("script_type"); ok {
		// OpenVPN appends positional arguments (tun0 1500 0 10.8.0.2 ... init);
		// in hook mode the environment is the only source of the event.
		ev, err := openVPNEvent(a.getenv)
		if err != nil {
			return a.fail(err)
		}
		return a.fail(a.applyEvent(ev))
	}
	rest := gfs.Args()
	if len(rest) == 0 {
		fmt.Fprint(a.stderr, usageText)
		return 2
	}
	cmd, cargs := rest[0], rest[1:]
	var err error
	switch cmd {
	case "baseline", "up", "down":
		err = a.cmdEvent(cmd, cargs)
	case "status":
		err = a.cmdStatus(cargs)
	case "check":
		err = a.cmdCheck(cargs)
	case "render":
		err = a.cmdRender(cargs)
	case "disarm":
		err = a.cmdDisarm(cargs)
	case "version":
		err = a.cmdVersion(cargs)
	case "help":
		fmt.Fprint(a.stdout, usageText)
	default:
		err = usagef("unknown command %q; run vpnfw-hook --help", cmd)
	}
	return a.fail(err)
}

// fail logs err and maps it to the exit code of the spec.
func (a *app) fail(err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	code := 1
	var ue *usageError
	var ce *rules.ConfigError
	if errors.As(err, &ue) || errors.As(err, &ce) {
		code = 2
	}
	a.log.Error().Int("exit", code).Msg(err.Error())
	return code
}

// flags parses a command's flags; positional arguments are an error.
func (a *app) flags(name, synopsis string, args []string, define func(fs *flag.FlagSet)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(a.stderr, "Usage: vpnfw-hook [--config FILE] %s\n", synopsis)
		fs.PrintDefaults()
	}
	define(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q; run vpnfw-hook %s --help", name, fs.Arg(0), name)
	}
	return nil
}

// eventFlags parses baseline/up/down flags into an event; prefix is "render "
// when render parses them, for its usage line, and backend its --backend.
func (a *app) eventFlags(prefix, cmd string, args []string, backend *string) (Event, error) {
	ev := Event{Command: cmd}
	var server, port, proto string
	synopsis := map[string]string{
		"baseline": "baseline [--boot]",
		"up":       "up --dev D [--server IP --port N --proto udp|tcp]",
		"down":     "down --dev D",
	}[cmd]
	if prefix != "" && cmd == "baseline" {
		synopsis = "[baseline | up --dev D ... | down --dev D]"
	}
	if backend != nil {
		synopsis += " [--backend iptables|nftables]"
	}
	err := a.flags(cmd, prefix+synopsis, args, func(fs *flag.FlagSet) {
		if backend != nil {
			fs.StringVar(backend, "backend", "", "render for this `backend` (default: the one VPNFW_BACKEND picks on this host)")
		}
		if cmd == "baseline" {
			if prefix == "" {
				fs.BoolVar(&ev.Boot, "boot", false, "the boot path: if the configuration is missing or invalid, apply the lockdown\n(only loopback passes) instead of changing nothing, log why, and exit 2")
			}
			return
		}
		fs.StringVar(&ev.Dev, "dev", "", "tunnel `device` (must match VPNFW_TUN_DEVICES)")
		if cmd == "up" {
			fs.StringVar(&server, "server", "", "the VPN server's `IP`; refused unless in VPNFW_SERVERS")
			fs.StringVar(&port, "port", "", "the server's `port`; with --proto, refused unless in VPNFW_SERVER_PORTS")
			fs.StringVar(&proto, "proto", "", "the server's `protocol`, udp or tcp")
		}
	})
	if err != nil {
		return ev, err
	}
	if cmd != "baseline" && ev.Dev == "" {
		return ev, usagef("%s needs --dev D", cmd)
	}
	if server != "" {
		if ev.Server, err = netip.ParseAddr(server); err != nil || ev.Server.Zone() != "" {
			return ev, usagef("--server %q: expected an IP address", server)
		}
		ev.Server = ev.Server.Unmap()
	}
	if port != "" || proto != "" {
		if ev.Endpoint, err = rules.ParseEndpoint(proto, port); err != nil {
			return ev, usagef("--port/--proto: %v (give both)", err)
		}
	}
	return ev, nil
}

func (a *app) cmdEvent(cmd string, args []string) error {
	ev, err := a.eventFlags("", cmd, args, nil)
	if err != nil {
		return err
	}
	err = a.applyEvent(ev)
	var ce *rules.ConfigError
	if ev.Boot && errors.As(err, &ce) {
		return a.lockdown(err)
	}
	return err
}

// lockdown is the boot path's answer to a configuration it cannot use: the
// blocked state of an empty configuration, so only loopback passes, with the
// auto backend. A host must not boot open because of a typo or a missing
// file. The configuration error is still returned: the boot fails visibly
// (exit 2) with the lockdown in place.
func (a *app) lockdown(cause error) error {
	start := time.Now()
	a.log.Error().Str("event", "baseline --boot").Msg("the configuration cannot be used at boot: " + cause.Error() + "; applying the lockdown (only loopback passes)")
	cfg := rules.Lockdown()
	err := a.locked(cfg, true, func(ctx context.Context, be rules.Backend) error {
		rs := rules.Policy(cfg, nil)
		if err := be.Apply(ctx, rs); err != nil {
			return fmt.Errorf("applying the lockdown with %s: %w", be.Name(), err)
		}
		a.markArmed(true)
		a.log.Warn().Str("event", "baseline --boot").Str("state", "lockdown").Str("backend", be.Name()).Strs("tunnels", rs.Tunnels).
			Str("took", time.Since(start).Round(10*time.Microsecond).String()).
			Msg("lockdown applied: only loopback passes until the configuration is fixed and vpnfw-hook baseline runs")
		return nil
	})
	if err != nil {
		// Not wrapped: the rules could not be applied, which is exit 1.
		return fmt.Errorf("%v; the boot lockdown was meant to answer this configuration error: %s", err, cause)
	}
	return fmt.Errorf("boot lockdown in place (only loopback passes): %w", cause)
}

// loadConfig reads the configuration and sets the log level from it.
func (a *app) loadConfig(opts rules.LoadOptions) (*rules.Config, error) {
	cfg, err := rules.Load(a.configPath, opts)
	if err != nil {
		return nil, err
	}
	if lvl, err := zerolog.ParseLevel(cfg.LogLevel); err == nil {
		a.log = a.log.Level(lvl)
	}
	return cfg, nil
}

// applyEvent is the hot path of every hook call: validate, read the live
// tunnels, compute the new state, apply it in one transaction per family.
func (a *app) applyEvent(ev Event) error {
	start := time.Now()
	cfg, err := a.loadConfig(a.loadOpts)
	if err != nil {
		return err
	}
	if err := ev.validate(cfg); err != nil {
		return err
	}
	return a.locked(cfg, ev.Command == "baseline", func(ctx context.Context, be rules.Backend) error {
		tunnels, err := nextTunnels(ctx, be, cfg, ev)
		if err != nil {
			return err
		}
		rs := rules.Policy(cfg, tunnels)
		if err := be.Apply(ctx, rs); err != nil {
			return fmt.Errorf("applying the %s state with %s: %w; the host stays at least as closed as before", rs.State, be.Name(), err)
		}
		a.markArmed(true)
		a.log.Info().Str("event", ev.Command).Str("state", string(rs.State)).Str("backend", be.Name()).
			Str("dev", ev.Dev).Strs("tunnels", rs.Tunnels).Str("took", time.Since(start).Round(10*time.Microsecond).String()).Msg("applied")
		return nil
	})
}

// locked runs fn with the lock held and the backend set up (sweep: see
// systemBackend). The lock comes first: what the backend reads must still
// be true when it writes.
func (a *app) locked(cfg *rules.Config, sweep bool, fn func(context.Context, rules.Backend) error) error {
	unlock, err := lock(a.lockPath, 30*time.Second)
	if err != nil {
		return err
	}
	defer unlock()
	be, err := a.newBackend(cfg, sweep)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return fn(ctx, be)
}

// markArmed creates or removes armedPath. Failing to is logged, not fatal:
// the rules are what protects the host, and without root (the VPN client's
// user) /run is not writable; the boot path runs as root and sets it.
func (a *app) markArmed(armed bool) {
	var err error
	if armed {
		err = os.WriteFile(a.armedPath, nil, 0o644)
	} else if err = os.Remove(a.armedPath); errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err != nil {
		a.log.Debug().Err(err).Msg("cannot record whether vpnfw is armed")
	}
}

// nextTunnels is the set of tunnels allowed after ev: the live ones, plus or
// minus ev's device. baseline allows none.
func nextTunnels(ctx context.Context, be rules.Backend, cfg *rules.Config, ev Event) ([]string, error) {
	if ev.Command == "baseline" {
		return nil, nil
	}
	live, err := be.Tunnels(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the allowed tunnels: %w", err)
	}
	var tunnels []string
	// A tunnel the configuration no longer allows is dropped here, so
	// narrowing VPNFW_TUN_DEVICES takes effect at the next event.
	for _, d := range live {
		if cfg.AllowsDevice(d) && d != ev.Dev {
			tunnels = append(tunnels, d)
		}
	}
	if ev.Command == "up" {
		tunnels = append(tunnels, ev.Dev)
	}
	return tunnels, nil
}

// backendChoice resolves VPNFW_BACKEND: auto is nftables where the kernel
// answers nftables requests, iptables otherwise.
func (a *app) backendChoice(cfg *rules.Config) string {
	if cfg.Backend != "auto" {
		return cfg.Backend
	}
	ok, err := a.nftSupported()
	if !ok {
		a.log.Info().Str("backend", "iptables").Msgf("VPNFW_BACKEND=auto: iptables, as the kernel does not answer nftables requests (%v)", err)
		return "iptables"
	}
	a.log.Debug().Str("backend", "nftables").Msg("VPNFW_BACKEND=auto: nftables, which the kernel supports")
	return "nftables"
}

// systemBackend returns the backend VPNFW_BACKEND picks, with the other one
// behind it: rules left there by an earlier choice are removed once the
// chosen backend is armed; with sweep (baseline, the boot lockdown) after
// every apply, not only the first.
func (a *app) systemBackend(cfg *rules.Config, sweep bool) (rules.Backend, error) {
	openIPT := func(ctx context.Context) (rules.Backend, error) { return iptables.Detect(ctx) }
	openNFT := func(context.Context) (rules.Backend, error) {
		if ok, err := a.nftSupported(); !ok {
			return nil, err
		}
		return nftables.New(), nil
	}
	if a.backendChoice(cfg) == "nftables" {
		return &rules.Switch{Chosen: nftables.New(), Others: []func(context.Context) (rules.Backend, error){openIPT}, Sweep: sweep}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ipt, err := iptables.Detect(ctx)
	if err != nil {
		return nil, err
	}
	return &rules.Switch{Chosen: ipt, Others: []func(context.Context) (rules.Backend, error){openNFT}, Sweep: sweep}, nil
}

// liveState loads the config, the backend and the desired ruleset for the
// tunnels the kernel currently allows.
func (a *app) liveState(ctx context.Context) (*rules.Config, rules.Backend, *rules.Ruleset, error) {
	cfg, err := a.loadConfig(a.loadOpts)
	if err != nil {
		return nil, nil, nil, err
	}
	be, err := a.newBackend(cfg, false)
	if err != nil {
		return nil, nil, nil, err
	}
	tunnels, err := be.Tunnels(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading the allowed tunnels: %w", err)
	}
	for _, d := range tunnels {
		if !cfg.AllowsDevice(d) {
			return cfg, be, nil, fmt.Errorf("the live ruleset allows tunnel %s, which VPNFW_TUN_DEVICES does not; run vpnfw-hook baseline (or the next up or down drops it)", d)
		}
	}
	return cfg, be, rules.Policy(cfg, tunnels), nil
}

func (a *app) cmdCheck(args []string) error {
	if err := a.flags("check", "check", args, func(*flag.FlagSet) {}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, be, rs, err := a.liveState(ctx)
	if err != nil {
		return err
	}
	if err := be.Check(ctx, rs); err != nil {
		return fmt.Errorf("check failed (%s): %w", be.Name(), err)
	}
	fmt.Fprintf(a.stdout, "ok: %s state is live and fail-closed (%s, tunnels: %s)\n", rs.State, be.Name(), listOrNone(rs.Tunnels))
	return nil
}

func (a *app) cmdStatus(args []string) error {
	var asJSON bool
	if err := a.flags("status", "status [--json]", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, be, rs, err := a.liveState(ctx)
	if err != nil && be == nil {
		return err
	}
	checkErr := err
	if checkErr == nil {
		checkErr = be.Check(ctx, rs)
	}
	st, err := be.Status(ctx)
	if err != nil {
		return err
	}
	report := struct {
		*rules.Status
		// Configured is VPNFW_BACKEND, which Backend resolves (auto).
		Configured string   `json:"configured_backend"`
		Servers    []string `json:"servers"`
		Check      string   `json:"check"`
	}{Status: st, Configured: cfg.Backend, Servers: prefixes(cfg.Servers), Check: "ok"}
	if checkErr != nil {
		report.Check = checkErr.Error()
	}
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	w := a.stdout
	fmt.Fprintf(w, "backend: %s (VPNFW_BACKEND=%s)\narmed:   %v\nstate:   %s\ntunnels: %s\nservers: %s\ncheck:   %s\n",
		st.Backend, cfg.Backend, st.Armed, st.State, listOrNone(st.Tunnels), listOrNone(report.Servers), report.Check)
	fmt.Fprintln(w, "rules (packets bytes verdict family purpose):")
	for _, c := range st.Rules {
		fmt.Fprintf(w, "  %8d %10d %-7s %s %s\n", c.Packets, c.Bytes, c.Verdict, c.Family, c.Purpose)
	}
	return nil
}

func (a *app) cmdRender(args []string) error {
	cmd := "baseline"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	if cmd != "baseline" && cmd != "up" && cmd != "down" {
		return usagef("render %q: expected baseline, up or down", cmd)
	}
	var backend string
	ev, err := a.eventFlags("render ", cmd, args, &backend)
	if err != nil {
		return err
	}
	if backend != "" && backend != "iptables" && backend != "nftables" {
		return usagef("render --backend %q: expected iptables or nftables", backend)
	}
	// Rendering applies nothing, so a configuration owned by the user running
	// it is fine: that is how to try a configuration before installing it.
	opts := a.loadOpts
	opts.AllowNonRootOwner = true
	cfg, err := a.loadConfig(opts)
	if err != nil {
		return err
	}
	if err := ev.validate(cfg); err != nil {
		return err
	}
	var tunnels []string
	if ev.Command == "up" {
		tunnels = []string{ev.Dev}
	}
	rs := rules.Policy(cfg, tunnels)
	if backend == "" {
		backend = a.backendChoice(cfg)
	}
	if backend == "iptables" {
		fmt.Fprint(a.stdout, iptables.Render(rs))
		return nil
	}
	text, err := nftables.Render(rs)
	if err != nil {
		return err
	}
	fmt.Fprint(a.stdout, text)
	return nil
}

func (a *app) cmdDisarm(args []string) error {
	var yes bool
	if err := a.flags("disarm", "disarm --yes", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&yes, "yes", false, "confirm: remove every rule of vpnfw, leaving the host open")
	}); err != nil {
		return err
	}
	if !yes {
		return usagef("disarm removes the kill switch and leaves the host open; confirm with disarm --yes")
	}
	// The configuration only picks the backend here. A broken or missing one
	// must not leave the administrator without the way out, so disarm then
	// uses the defaults, whose auto backend finds the rules where they are.
	cfg, err := a.loadConfig(a.loadOpts)
	var ce *rules.ConfigError
	if errors.As(err, &ce) {
		a.log.Warn().Msg("the configuration cannot be used (" + err.Error() + "); disarming with the default backend choice")
		cfg, err = rules.Lockdown(), nil
	}
	if err != nil {
		return err
	}
	return a.locked(cfg, false, func(ctx context.Context, be rules.Backend) error {
		if err := be.Disarm(ctx); err != nil {
			return fmt.Errorf("disarming %s: %w", be.Name(), err)
		}
		a.markArmed(false)
		a.log.Warn().Str("backend", be.Name()).Msg("disarmed: every vpnfw rule is removed and traffic is no longer forced through the VPN")
		return nil
	})
}

func (a *app) cmdVersion(args []string) error {
	if err := a.flags("version", "version", args, func(*flag.FlagSet) {}); err != nil {
		return err
	}
	version, revision, built := "(devel)", "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				built = " " + s.Value
			case "vcs.modified":
				if s.Value == "true" {
					revision += "+dirty"
				}
			}
		}
		built += ", " + bi.GoVersion
	}
	fmt.Fprintf(a.stdout, "vpnfw-hook %s (commit %s%s)\n", version, revision, built)
	return nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

func prefixes(ps []netip.Prefix) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
