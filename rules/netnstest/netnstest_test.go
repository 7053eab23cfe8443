package netnstest

import (
	"strings"
	"testing"
)

// The guard itself needs no root: it only compares namespace identities.

func TestDistinctRefusesOwnNamespace(t *testing.T) {
	if _, err := distinct("/proc/self/ns/net", "/proc/self/ns/net", "/nonexistent"); err == nil {
		t.Fatal("the process's own namespace passed the guard")
	}
}

func TestDistinctRefusesInitNamespace(t *testing.T) {
	// Any other namespace file stands in for "this process's" here, so
	// that only the comparison with PID 1's can refuse.
	if _, err := distinct("/proc/self/ns/net", "/proc/self/ns/uts", "/proc/self/ns/net"); err == nil || !strings.Contains(err.Error(), "PID 1") {
		t.Fatalf("PID 1's namespace passed the guard: %v", err)
	}
}

func TestDistinctRefusesWhatItCannotIdentify(t *testing.T) {
	if _, err := distinct("/run/netns/vpnfwt-does-not-exist", "/proc/self/ns/net", "/proc/1/ns/net"); err == nil {
		t.Fatal("a missing namespace passed the guard")
	}
	if _, err := distinct("/proc/self/ns/net", "/nonexistent", "/proc/1/ns/net"); err == nil {
		t.Fatal("the guard passed without knowing this process's namespace")
	}
}

func TestNewRunVeth(t *testing.T) {
	a, b := New(t, "a"), New(t, "b")
	if a.id == b.id {
		t.Fatal("two namespaces with one identity")
	}
	Veth(t, a, "va", b, "vb")
	if out := b.IP("-o", "link", "show", "vb"); !strings.Contains(out, "vb@") {
		t.Fatalf("vb is not in b: %s", out)
	}
	if r := a.Run(a.ip, "link", "show", "vb"); r.Code == 0 {
		t.Fatalf("vb is in a too: %s", r)
	}
	a.Sysctl("net.ipv4.conf.all.forwarding", "1")
	if out := a.MustRun("cat", "/proc/sys/net/ipv4/conf/all/forwarding"); strings.TrimSpace(out) != "1" {
		t.Fatalf("sysctl in a: %q", out)
	}
	if out := b.MustRun("cat", "/proc/sys/net/ipv4/conf/all/forwarding"); strings.TrimSpace(out) != "0" {
		t.Fatalf("a's sysctl leaked into b: %q", out)
	}
	if r := a.Run("sh", "-c", "exit 7"); r.Code != 7 {
		t.Fatalf("exit code: %s", r)
	}
}
