package nftables

import (
	"context"
	"slices"
	"testing"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/vpnfw/vpnfw/rules"
)

// Tunnels reads back only names the hooks could have written; whatever
// else the kernel's set holds allows no tunnel the hook knows of.
func TestTunnelsIgnoresHostileElements(t *testing.T) {
	ctx := context.Background()
	b, k := fakeBackend()
	mustApply(t, b, rules.Policy(mustConfig(t, everythingEnv), nil))
	k.committed.set(TunnelSet).elems = []gnft.SetElement{
		{Key: ifname("wg0")},
		{Key: []byte("tun1")},                                   // not padded: 4 bytes
		{Key: append(ifname("tun2"), 0)},                        // 17 bytes
		{Key: append([]byte("tun3\x00x"), make([]byte, 10)...)}, // NUL inside
		{Key: append([]byte("\x00tun4"), make([]byte, 11)...)},  // NUL first
		{Key: ifname("eth0;x")},                                 // not an interface name
		{Key: ifname("tun 5")},                                  // space
		{Key: ifname("-tun6")},                                  // an option to iptables
		{Key: ifname("")},                                       // empty
		{Key: ifname(".")},                                      // not a name either
		{Key: []byte("abcdefghijklmnop")},                       // 16 bytes without NUL
		{Key: nil},                                              // no key at all
		{Key: append([]byte("tun7"), 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)}, // not text
		{Key: ifname("abcdefghijklmno")},                                     // 15 bytes: valid
		{Key: ifname("tun0")},
		{Key: ifname("ppp0")},
	}
	got, err := NewWithConn(k.newConn).Tunnels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"abcdefghijklmno", "ppp0", "tun0", "wg0"}; !slices.Equal(got, want) {
		t.Errorf("Tunnels = %q, want %q", got, want)
	}
	// Status reports the same tunnels, and Check reports the difference.
	st, err := NewWithConn(k.newConn).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Tunnels, got) || st.State != rules.Connected {
		t.Errorf("Status tunnels %q state %s", st.Tunnels, st.State)
	}
	if err := NewWithConn(k.newConn).Check(ctx, rules.Policy(mustConfig(t, everythingEnv), nil)); err == nil {
		t.Error("Check passed with foreign elements in the tunnel set")
	}
}

func TestTunnelsWithoutTableOrSet(t *testing.T) {
	ctx := context.Background()
	b, k := fakeBackend()
	if got, err := b.Tunnels(ctx); err != nil || len(got) != 0 {
		t.Errorf("Tunnels without a table = %v, %v", got, err)
	}
	mustApply(t, b, rules.Policy(mustConfig(t, everythingEnv), []string{"tun0"}))
	k.committed.sets = slices.DeleteFunc(k.committed.sets, func(s *fakeSet) bool { return s.gs.Name == TunnelSet })
	if got, err := NewWithConn(k.newConn).Tunnels(ctx); err != nil || len(got) != 0 {
		t.Errorf("Tunnels without the tunnel set = %v, %v", got, err)
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	b, k := fakeBackend()
	st, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Armed || st.State != rules.Disarmed || st.Tunnels == nil || st.Rules == nil || len(st.Rules) != 0 {
		t.Errorf("Status without a table: %+v, want disarmed with empty (not nil) lists", st)
	}
	if st.Backend != b.Name() {
		t.Errorf("Status backend %q, want %q", st.Backend, b.Name())
	}

	cfg := mustConfig(t, everythingEnv)
	mustApply(t, b, rules.Policy(cfg, nil))
	st, err = b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Armed || st.State != rules.Blocked || len(st.Tunnels) != 0 {
		t.Errorf("baseline status: armed %v state %s tunnels %v", st.Armed, st.State, st.Tunnels)
	}

	// Counters as the kernel reports them, by rule.
	setCounter := func(chainName string, i int, packets, bytes uint64) {
		for _, e := range k.committed.chain(chainName).rules[i].Exprs {
			if c, ok := e.(*expr.Counter); ok {
				c.Packets, c.Bytes = packets, bytes
			}
		}
	}
	mustApply(t, b, rules.Policy(cfg, []string{"wg0", "tun0"}))
	setCounter("output_v4", 6, 7, 420)
	setCounter("input_v6", 0, 3, 300)
	// A rule of someone else's, without comment or counter.
	in := k.committed.chain("input")
	in.rules = append(in.rules, &gnft.Rule{Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})

	st, err = NewWithConn(k.newConn).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Armed || st.State != rules.Connected || !slices.Equal(st.Tunnels, []string{"tun0", "wg0"}) {
		t.Errorf("connected status: armed %v state %s tunnels %v", st.Armed, st.State, st.Tunnels)
	}
	want := map[rules.Counter]bool{
		{Family: "inet", Chain: "input", Purpose: "ipv4", Verdict: "jump"}:                                                              true,
		{Family: "inet", Chain: "input", Purpose: "(not ours)", Verdict: "accept"}:                                                      true,
		{Family: "ipv4", Chain: "output_v4", Purpose: "fail closed: reject everything else", Verdict: "reject", Packets: 7, Bytes: 420}: true,
		{Family: "ipv4", Chain: "output_v4", Purpose: "fail closed: reset other tcp", Verdict: "reject"}:                                true,
		{Family: "ipv6", Chain: "input_v6", Purpose: "loopback in", Verdict: "accept", Packets: 3, Bytes: 300}:                          true,
		{Family: "ipv4", Chain: "forward_v4", Purpose: "fail closed: no forwarding", Verdict: "drop"}:                                   true,
		{Family: "ipv6", Chain: "output_v6", Purpose: "tunnels out", Verdict: "accept"}:                                                 true,
	}
	n := 0
	for _, c := range k.committed.chains {
		n += len(c.rules)
	}
	if len(st.Rules) != n {
		t.Errorf("Status lists %d rules, the table has %d", len(st.Rules), n)
	}
	for _, c := range st.Rules {
		delete(want, c)
		if c.Family == "inet" && c.Chain != "input" && c.Chain != "output" && c.Chain != "forward" {
			t.Errorf("rule of chain %s counted as inet", c.Chain)
		}
	}
	for c := range want {
		t.Errorf("Status lacks %+v", c)
	}

	// A base chain that accepts by policy: the table does not close the host.
	p := gnft.ChainPolicyAccept
	k.committed.chain("forward").gc.Policy = &p
	st, err = NewWithConn(k.newConn).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Armed || st.State != rules.Disarmed {
		t.Errorf("status with forward policy accept: armed %v state %s, want disarmed", st.Armed, st.State)
	}
	if !slices.Equal(st.Tunnels, []string{"tun0", "wg0"}) {
		t.Errorf("status with forward policy accept: tunnels %v", st.Tunnels)
	}
	// A base chain without a policy is an accepting one.
	k.committed.chain("forward").gc.Policy = nil
	if st, err := NewWithConn(k.newConn).Status(ctx); err != nil || st.Armed || st.State != rules.Disarmed {
		t.Errorf("status with forward policy unset: %+v, %v", st, err)
	}
	// A dormant table: its chains are unhooked.
	k.committed.flags = unix.NFT_TABLE_F_DORMANT
	if st, err := NewWithConn(k.newConn).Status(ctx); err != nil || st.Armed || st.State != rules.Disarmed {
		t.Errorf("status with a dormant table: armed %v state %s, %v", st.Armed, st.State, err)
	}
	k.committed.flags = 0
	// A nat chain with policy drop sees only a flow's first packet.
	dp := gnft.ChainPolicyDrop
	k.committed.chain("forward").gc.Policy = &dp
	k.committed.chain("forward").gc.Type = gnft.ChainTypeNAT
	if st, err := NewWithConn(k.newConn).Status(ctx); err != nil || st.Armed || st.State != rules.Disarmed {
		t.Errorf("status with a nat forward chain: armed %v state %s, %v", st.Armed, st.State, err)
	}
	k.committed.chain("forward").gc.Type = gnft.ChainTypeFilter
	// A missing base chain.
	k.committed.chains = slices.DeleteFunc(k.committed.chains, func(c *fakeChain) bool { return c.gc.Name == "input" })
	if st, err := NewWithConn(k.newConn).Status(ctx); err != nil || st.Armed || st.State != rules.Disarmed {
		t.Errorf("status without the input chain: armed %v state %s, %v", st.Armed, st.State, err)
	}
	// The input chain turned into a regular chain.
	k.committed.chains = append(k.committed.chains, &fakeChain{gc: gnft.Chain{Name: "input"}})
	if st, err := NewWithConn(k.newConn).Status(ctx); err != nil || st.Armed || st.State != rules.Disarmed {
		t.Errorf("status with a regular input chain: armed %v state %s, %v", st.Armed, st.State, err)
	}
	// The table gone.
	k.committed = nil
	if st, err := NewWithConn(k.newConn).Status(ctx); err != nil || st.Armed || st.State != rules.Disarmed || len(st.Rules) != 0 {
		t.Errorf("status without the table: %+v, %v", st, err)
	}
}
