// Package netnstest runs test commands inside network namespaces that the
// test creates itself, never in the namespace the test runs in.
//
// Everything that touches netfilter, links, addresses or routes goes through
// an NS. New refuses a namespace it cannot prove to be a different one from
// the test process's own (and from PID 1's, when /proc/1 is readable), and
// every command re-checks that before it runs.
package netnstest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Timeout bounds every command run with Run and friends.
const Timeout = 30 * time.Second

// sbinDirs is where tools are looked for when PATH lacks them (a non-root
// PATH, or sudo's secure_path on some systems).
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"}

// RequireRoot skips t when not running as root, unless the CI environment
// variable is set: CI runs as root, so there a root-only test that would
// skip is a broken CI setup and fails instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("this test needs root (network namespaces, netfilter), and CI=%q is set: CI must run it as root", os.Getenv("CI"))
	}
	t.Skip("needs root (network namespaces, netfilter); run: sudo scripts/test.sh")
}

// Tool returns the absolute path of a system tool, from PATH or the usual
// sbin directories.
func Tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(sbinDirs, ", "))
}

// RequireTools skips t (fails it under CI) unless every tool is installed.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := Tool(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing tools: %s (scripts/test.sh installs them)", strings.Join(missing, " "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func mustTool(t testing.TB, name string) string {
	t.Helper()
	p, err := Tool(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// nsID identifies a network namespace: nsfs device and inode.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// NS is a network namespace this test created; it is deleted when the test
// ends. Use it from the goroutine of the test that created it: its helpers
// fail that test.
type NS struct {
	Name string
	t    testing.TB
	id   nsID
	ip   string
}

var seq atomic.Uint64

// New creates a namespace named after label, the process ID and a counter,
// so parallel tests and parallel runs never collide, with loopback up.
func New(t testing.TB, label string) *NS {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "ip")
	ns := &NS{Name: fmt.Sprintf("vpnfwt-%d-%d-%s", os.Getpid(), seq.Add(1), label), t: t, ip: mustTool(t, "ip")}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, ns.ip, "netns", "add", ns.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	// Registered before the guard runs: a namespace we made is always ours to delete.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if out, err := exec.CommandContext(ctx, ns.ip, "netns", "delete", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", ns.Name, err, out)
		}
	})
	if ns.id, err = distinct(ns.path(), "/proc/self/ns/net", "/proc/1/ns/net"); err != nil {
		t.Fatalf("netns guard: %s: %v", ns.Name, err)
	}
	ns.MustRun(ns.ip, "link", "set", "lo", "up")
	return ns
}

func (ns *NS) path() string { return filepath.Join("/run/netns", ns.Name) }

// distinct returns the identity of the network namespace at nsPath if it
// is provably not the one at selfPath (this process's), nor the one at
// initPath (PID 1's, the machine's) when that is readable: without
// CAP_SYS_PTRACE /proc/1 may be unreadable, and then the comparison with our
// own namespace has to do.
func distinct(nsPath, selfPath, initPath string) (nsID, error) {
	self, err := statNS(selfPath)
	if err != nil {
		return nsID{}, fmt.Errorf("cannot identify this process's network namespace: %w", err)
	}
	id, err := statNS(nsPath)
	if err != nil {
		return nsID{}, fmt.Errorf("cannot identify the namespace: %w", err)
	}
	if id == self {
		return nsID{}, errors.New("it is this process's own network namespace; refusing")
	}
	if init, err := statNS(initPath); err == nil && id == init {
		return nsID{}, errors.New("it is PID 1's network namespace; refusing")
	}
	return id, nil
}

// guard fails the test unless the namespace is still the one New created
// and still not the test process's own.
func (ns *NS) guard() {
	ns.t.Helper()
	id, err := distinct(ns.path(), "/proc/self/ns/net", "/proc/1/ns/net")
	if err == nil && id != ns.id {
		err = errors.New("it was replaced since the test created it")
	}
	if err != nil {
		ns.t.Fatalf("netns guard: %s: %v; refusing to run", ns.Name, err)
	}
}

// Command returns `ip netns exec NAME argv...`. ip execs argv in place, so
// the process's PID is argv's own.
func (ns *NS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	ns.t.Helper()
	ns.guard()
	cmd := exec.CommandContext(ctx, ns.ip, append([]string{"netns", "exec", ns.Name}, argv...)...)
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Result is how a command ended.
type Result struct {
	Stdout, Stderr string
	// Code is the exit status, or -1 when the command did not exit by
	// itself (it could not start, or Timeout killed it).
	Code int
	Err  error
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d (%v)\nstdout: %s\nstderr: %s", r.Code, r.Err, r.Stdout, r.Stderr)
}

// Run runs argv in the namespace, bounded by Timeout.
func (ns *NS) Run(argv ...string) Result {
	ns.t.Helper()
	return ns.RunEnv(nil, argv...)
}

// RunEnv is Run with env added to the test's environment.
func (ns *NS) RunEnv(env []string, argv ...string) Result {
	ns.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	cmd := ns.Command(ctx, argv...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), Code: -1, Err: err}
	var ee *exec.ExitError
	if err == nil {
		r.Code = 0
	} else if errors.As(err, &ee) && ee.Exited() && ctx.Err() == nil {
		r.Code = ee.ExitCode()
	}
	return r
}

// MustRun runs argv and fails the test unless it exits 0; it returns stdout.
func (ns *NS) MustRun(argv ...string) string {
	ns.t.Helper()
	r := ns.Run(argv...)
	if r.Code != 0 {
		ns.t.Fatalf("in %s: %s: %s", ns.Name, strings.Join(argv, " "), r)
	}
	return r.Stdout
}

// IP runs the ip tool in the namespace and fails the test unless it exits 0.
func (ns *NS) IP(args ...string) string {
	ns.t.Helper()
	return ns.MustRun(append([]string{ns.ip}, args...)...)
}

// Proc is a background process in a namespace.
type Proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	done   chan struct{}
	stderr bytes.Buffer
	err    error
}

// Start starts argv in the background with env added. The process is killed
// by its PID when the test ends, and at the latest after maxLife.
func (ns *NS) Start(env []string, maxLife time.Duration, argv ...string) *Proc {
	ns.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), maxLife)
	p := &Proc{cmd: ns.Command(ctx, argv...), lines: make(chan string, 64), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		cancel()
		ns.t.Fatal(err)
	}
	// Through an io.Pipe, Wait returns only once exec has copied all output.
	pr, pw := io.Pipe()
	p.cmd.Stdout = pw
	if err := p.cmd.Start(); err != nil {
		cancel()
		ns.t.Fatalf("starting %s in %s: %v", strings.Join(argv, " "), ns.Name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		cancel()
		close(p.done)
	}()
	ns.t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill() // our own child, by its PID
			<-p.done
		}
	})
	return p
}

// Line returns the next line the process prints, or fails the test after timeout.
func (p *Proc) Line(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			t.Fatalf("%s ended without output: %v: %s", p.cmd.Path, p.err, p.stderr.String())
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("no output from %s within %v", strings.Join(p.cmd.Args, " "), timeout)
	}
	return ""
}

// Send writes a line to the process's standard input.
func (p *Proc) Send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		t.Fatalf("writing to %s: %v", p.cmd.Path, err)
	}
}

// Sysctl sets a network sysctl of the namespace, such as
// net.ipv4.conf.all.rp_filter: /proc/sys/net belongs to the namespace of the
// process that opens it.
func (ns *NS) Sysctl(key, value string) {
	ns.t.Helper()
	for _, r := range key + value {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			ns.t.Fatalf("sysctl %s=%s: unexpected character %q", key, value, r)
		}
	}
	if !strings.HasPrefix(key, "net.") {
		ns.t.Fatalf("sysctl %s: only net.* sysctls belong to a network namespace", key)
	}
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	ns.MustRun("sh", "-c", "echo "+value+" > "+path)
}

// Veth connects a and b with a veth pair, aName in a and bName in b, both up.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	b.guard()
	a.IP("link", "add", "name", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.IP("link", "set", aName, "up")
	b.IP("link", "set", bName, "up")
}
