package nftables

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	gnft "github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/vpnfw/vpnfw/rules"
)

// fakeBackend returns a backend over a fresh fake kernel.
func fakeBackend() (*Backend, *fakeKernel) {
	k := &fakeKernel{}
	return NewWithConn(k.newConn), k
}

func mustApply(t *testing.T, b *Backend, rs *rules.Ruleset) {
	t.Helper()
	if err := b.Apply(context.Background(), rs); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := b.Check(context.Background(), rs); err != nil {
		t.Fatalf("Check after Apply: %v", err)
	}
}

func fullReplace(ops []string) bool {
	return len(ops) >= 3 && ops[0] == "AddTable" && ops[1] == "DelTable" && ops[2] == "AddTable"
}

// The library queues a set before it fails on its elements (google/nftables
// issue #323): a batch that could not be queued completely must never be
// flushed, neither for a named set, nor an anonymous one, nor elements.
func TestApplyQueueErrorNeverFlushes(t *testing.T) {
	ctx := context.Background()
	cfg := mustConfig(t, everythingEnv)
	errQueue := errors.New("makeElemList: attribute too large")
	for _, c := range []struct {
		name string
		// baseline applies the blocked state first, so the failing apply
		// changes only the tunnel set.
		baseline bool
		arm      func(k *fakeKernel)
	}{
		{"named set", false, func(k *fakeKernel) {
			k.failAddSet = func(s *gnft.Set) error {
				if s.Name == "servers_v4" {
					return errQueue
				}
				return nil
			}
		}},
		{"first set", false, func(k *fakeKernel) { k.failAddSet = func(*gnft.Set) error { return errQueue } }},
		{"anonymous set", false, func(k *fakeKernel) {
			k.failAddSet = func(s *gnft.Set) error {
				if s.Anonymous {
					return errQueue
				}
				return nil
			}
		}},
		{"tunnel elements", true, func(k *fakeKernel) { k.failSetAddElements = errQueue }},
		{"full replace after baseline", true, func(k *fakeKernel) { k.failAddSet = func(*gnft.Set) error { return errQueue } }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, k := fakeBackend()
			base := rules.Policy(cfg, nil)
			if c.baseline {
				mustApply(t, b, base)
			}
			before := k.committed.clone()
			flushes := k.flushes
			c.arm(k)
			want := rules.Policy(cfg, []string{"tun0"})
			if c.name == "full replace after baseline" {
				want = rules.Policy(mustConfig(t, serversEnv("192.0.2.20")), nil)
			}
			err := b.Apply(ctx, want)
			if !errors.Is(err, errQueue) {
				t.Fatalf("Apply = %v, want the queueing error", err)
			}
			if !strings.Contains(err.Error(), "nothing was sent") {
				t.Errorf("Apply error %q does not say that nothing was sent", err)
			}
			if k.flushes != flushes {
				t.Fatalf("Flush was called %d times after the queueing error: the partial batch %v was sent",
					k.flushes-flushes, k.last().descs())
			}
			if ops := k.last().descs(); len(ops) == 0 && c.name != "tunnel elements" {
				t.Errorf("the fake queued nothing before failing; the test does not exercise a partial batch")
			}
			if got, want := tableText(t, k.committed), tableText(t, before); got != want {
				t.Errorf("the kernel table changed:\n%s\nwant\n%s", got, want)
			}
			// The failed apply left nothing queued behind for a later one.
			k.failAddSet, k.failSetAddElements = nil, nil
			mustApply(t, b, want)
			if n := k.flushes - flushes; n != 1 {
				t.Errorf("%d flushes for one successful apply", n)
			}
		})
	}
}

// tableText renders a committed fake table through the backend's own reader.
func tableText(t *testing.T, ft *fakeTable) string {
	t.Helper()
	k := &fakeKernel{committed: ft.clone()}
	c, _ := k.newConn()
	live, err := readTable(c)
	if err != nil {
		t.Fatal(err)
	}
	if live == nil {
		return "(no table)"
	}
	return live.Text()
}

func TestApplyFlushErrorResetsCache(t *testing.T) {
	ctx := context.Background()
	b, k := fakeBackend()
	cfg := mustConfig(t, everythingEnv)
	mustApply(t, b, rules.Policy(cfg, nil))

	k.failFlush = errors.New("netlink receive: invalid argument")
	reads := k.reads
	err := b.Apply(ctx, rules.Policy(cfg, []string{"tun0"}))
	if err == nil || !errors.Is(err, k.failFlush) {
		t.Fatalf("Apply = %v, want the flush error", err)
	}
	if !strings.Contains(err.Error(), "nothing") || !strings.Contains(err.Error(), "applied") {
		t.Errorf("Apply error %q does not say that nothing was applied", err)
	}
	k.failFlush = nil
	// The cache was dropped: the next read asks the kernel, which still
	// has the blocked state.
	readsAfterApply := k.reads
	tun, err := b.Tunnels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if k.reads != readsAfterApply+1 {
		t.Errorf("Tunnels after a failed flush read the kernel %d times, want 1 (the cache must be reset)", k.reads-readsAfterApply)
	}
	if len(tun) != 0 {
		t.Errorf("Tunnels = %v after a refused batch, want none", tun)
	}
	if err := b.Check(ctx, rules.Policy(cfg, nil)); err != nil {
		t.Errorf("Check of the old state after a refused batch: %v", err)
	}
	if k.reads-reads != 1 {
		t.Errorf("the failed apply and the reads after it read the kernel %d times, want 1 (the apply itself uses the table Check read)", k.reads-reads)
	}
	// A cached read is not repeated until the next write.
	r := k.reads
	if _, err := b.Present(ctx); err != nil {
		t.Fatal(err)
	}
	if k.reads != r {
		t.Errorf("Present read the kernel again without a write in between")
	}
}

func TestApplySameStateQueuesNothing(t *testing.T) {
	ctx := context.Background()
	for _, tunnels := range [][]string{nil, {"tun0"}, {"tun0", "wg0"}} {
		b, k := fakeBackend()
		rs := rules.Policy(mustConfig(t, everythingEnv), tunnels)
		mustApply(t, b, rs)
		flushes, conns := k.flushes, len(k.conns)
		for range 3 {
			if err := b.Apply(ctx, rs); err != nil {
				t.Fatalf("re-apply %v: %v", tunnels, err)
			}
		}
		if ops := k.queuedSince(conns); len(ops) > 0 {
			t.Errorf("re-applying %v queued %v", tunnels, ops)
		}
		if k.flushes != flushes {
			t.Errorf("re-applying %v flushed %d times", tunnels, k.flushes-flushes)
		}
	}
}

func TestApplyTunnelsChangeOnlySetElements(t *testing.T) {
	ctx := context.Background()
	b, k := fakeBackend()
	cfg := mustConfig(t, everythingEnv)

	n := len(k.conns)
	mustApply(t, b, rules.Policy(cfg, nil))
	if ops := k.queuedSince(n); !fullReplace(ops) {
		t.Fatalf("first apply queued %v, want a full table replace", ops)
	}
	ruleHandles := func() []uint64 {
		var hs []uint64
		for _, c := range k.committed.chains {
			for _, r := range c.rules {
				hs = append(hs, r.Handle)
			}
		}
		return hs
	}
	handles := ruleHandles()

	for _, step := range []struct {
		tunnels []string
		want    []string
	}{
		{[]string{"tun0"}, []string{`SetAddElements tunnels ["tun0"]`}},
		{[]string{"tun0", "wg0"}, []string{`SetAddElements tunnels ["wg0"]`}},
		{[]string{"wg0"}, []string{`SetDeleteElements tunnels ["tun0"]`}},
		{[]string{"tun1"}, []string{`SetAddElements tunnels ["tun1"]`, `SetDeleteElements tunnels ["wg0"]`}},
		{nil, []string{`SetDeleteElements tunnels ["tun1"]`}},
	} {
		n := len(k.conns)
		flushes := k.flushes
		rs := rules.Policy(cfg, step.tunnels)
		mustApply(t, b, rs)
		if ops := k.queuedSince(n); !slices.Equal(ops, step.want) {
			t.Errorf("tunnels %v: queued %q, want %q", step.tunnels, ops, step.want)
		}
		if k.flushes != flushes+1 {
			t.Errorf("tunnels %v: %d flushes, want 1", step.tunnels, k.flushes-flushes)
		}
		got, err := b.Tunnels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := rs.Tunnels; !slices.Equal(got, want) && len(got)+len(want) > 0 {
			t.Errorf("Tunnels = %v, want %v", got, want)
		}
		if h := ruleHandles(); !slices.Equal(h, handles) {
			t.Errorf("tunnels %v: rules were replaced (handles %v, were %v)", step.tunnels, h, handles)
		}
	}

	// A configuration change replaces the table, tunnels included.
	for _, env := range []map[string]string{
		serversEnv("192.0.2.20 2001:db8::10"),
		serversEnv("192.0.2.20 198.51.100.0/24 2001:db8::10"),
		func() map[string]string { e := serversEnv("192.0.2.20"); e["VPNFW_ALLOW_DHCP"] = "no"; return e }(),
	} {
		n := len(k.conns)
		rs := rules.Policy(mustConfig(t, env), []string{"tun0"})
		mustApply(t, b, rs)
		ops := k.queuedSince(n)
		if !fullReplace(ops) {
			t.Errorf("config %v: queued %v, want a full replace", env, ops)
		}
		if slices.ContainsFunc(ops, func(s string) bool {
			return strings.HasPrefix(s, "SetAddElements") || strings.HasPrefix(s, "SetDeleteElements")
		}) {
			t.Errorf("config %v: a full replace also changed elements: %v", env, ops)
		}
		if !slices.Contains(ops, "AddSet tunnels") || !slices.Contains(ops, "AddChain input") {
			t.Errorf("config %v: the replace lacks the tunnel set or a base chain: %v", env, ops)
		}
	}
}

// A table changed behind the backend's back (another tool, an
// administrator) is not patched: anything but the tunnel elements differing
// makes the next apply replace the whole table.
func TestApplyRepairsTamperedTable(t *testing.T) {
	ctx := context.Background()
	cfg := mustConfig(t, everythingEnv)
	for _, c := range []struct {
		name   string
		tamper func(ft *fakeTable)
	}{
		{"policy accept", func(ft *fakeTable) { p := gnft.ChainPolicyAccept; ft.chain("output").gc.Policy = &p }},
		{"rule deleted", func(ft *fakeTable) { c := ft.chain("output_v4"); c.rules = c.rules[:len(c.rules)-1] }},
		{"server added", func(ft *fakeTable) {
			s := ft.set("servers_v4")
			s.elems = append(s.elems, gnft.SetElement{Key: []byte{203, 0, 113, 1}}, gnft.SetElement{Key: []byte{203, 0, 113, 2}, IntervalEnd: true})
		}},
		{"table deleted", nil},
		{"table dormant", func(ft *fakeTable) { ft.flags = unix.NFT_TABLE_F_DORMANT }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, k := fakeBackend()
			rs := rules.Policy(cfg, []string{"tun0"})
			mustApply(t, b, rs)
			if c.tamper == nil {
				k.committed = nil
			} else {
				c.tamper(k.committed)
			}
			b2 := NewWithConn(k.newConn)
			if err := b2.Check(ctx, rs); err == nil {
				t.Fatalf("Check passed on a tampered table")
			}
			n := len(k.conns)
			mustApply(t, b2, rs)
			if ops := k.queuedSince(n); !fullReplace(ops) {
				t.Errorf("repair queued %v, want a full replace", ops)
			}
			if k.committed.flags != 0 {
				t.Errorf("the repaired table has flags %#x", k.committed.flags)
			}
		})
	}
}

// A context cancelled before the flush sends nothing.
func TestApplyCancelled(t *testing.T) {
	b, k := fakeBackend()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Apply(ctx, rules.Policy(mustConfig(t, everythingEnv), nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply = %v, want context.Canceled", err)
	}
	if k.flushes != 0 || k.committed != nil {
		t.Errorf("a cancelled apply flushed %d times", k.flushes)
	}
}

func TestDisarm(t *testing.T) {
	ctx := context.Background()
	b, k := fakeBackend()
	if err := b.Disarm(ctx); err != nil || k.flushes != 0 {
		t.Fatalf("Disarm without a table = %v, %d flushes; want nil and none", err, k.flushes)
	}
	mustApply(t, b, rules.Policy(mustConfig(t, everythingEnv), []string{"tun0"}))
	if ok, err := b.Present(ctx); err != nil || !ok {
		t.Fatalf("Present = %v, %v after apply", ok, err)
	}
	n := len(k.conns)
	if err := b.Disarm(ctx); err != nil {
		t.Fatal(err)
	}
	if ops := k.queuedSince(n); !slices.Equal(ops, []string{"DelTable"}) {
		t.Errorf("Disarm queued %v, want only DelTable", ops)
	}
	if ok, err := b.Present(ctx); err != nil || ok {
		t.Errorf("Present = %v, %v after disarm", ok, err)
	}
}
