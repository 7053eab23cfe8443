package nftables

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/vpnfw/vpnfw/rules"
	"github.com/vpnfw/vpnfw/rules/netnstest"
)

// The tests below talk netlink to the kernel from this process, through
// sockets opened inside a network namespace the test creates
// (netnstest.New); nothing of them reaches the namespace the test runs in.

// nsConns returns a fresh namespace and a Conn factory whose connections
// live in it.
func nsConns(t *testing.T) (*netnstest.NS, func() (Conn, error)) {
	t.Helper()
	ns := netnstest.New(t, "nft")
	f, err := os.Open(filepath.Join("/run/netns", ns.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	// The descriptor must name that namespace and not ours: gnft treats fd 0
	// as "this namespace", so refuse it as well.
	var st, self syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat("/proc/self/ns/net", &self); err != nil {
		t.Fatal(err)
	}
	if f.Fd() == 0 || st.Dev == self.Dev && st.Ino == self.Ino {
		t.Fatalf("netns guard: %s is this process's network namespace; refusing", ns.Name)
	}
	var init syscall.Stat_t
	if err := syscall.Stat("/proc/1/ns/net", &init); err == nil && st.Dev == init.Dev && st.Ino == init.Ino {
		t.Fatalf("netns guard: %s is PID 1's network namespace; refusing", ns.Name)
	}
	fd := int(f.Fd())
	return ns, func() (Conn, error) {
		c, err := dial(gnft.WithNetNSFd(fd))
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// recorder wraps the connections of a factory: it records what each
// queues, and can add to a batch just before it is flushed.
type recorder struct {
	mu     sync.Mutex
	ops    []string
	inject func(c Conn)
}

type recConn struct {
	Conn
	r *recorder
}

func (r *recorder) wrap(newConn func() (Conn, error)) func() (Conn, error) {
	return func() (Conn, error) {
		c, err := newConn()
		if err != nil {
			return nil, err
		}
		return &recConn{Conn: c, r: r}, nil
	}
}

func (r *recorder) add(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
}

// take returns the operations recorded since the last take.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := r.ops
	r.ops = nil
	return ops
}

func (c *recConn) AddTable(t *gnft.Table) *gnft.Table { c.r.add("AddTable"); return c.Conn.AddTable(t) }
func (c *recConn) DelTable(t *gnft.Table)             { c.r.add("DelTable"); c.Conn.DelTable(t) }
func (c *recConn) AddChain(ch *gnft.Chain) *gnft.Chain {
	c.r.add("AddChain " + ch.Name)
	return c.Conn.AddChain(ch)
}
func (c *recConn) AddSet(s *gnft.Set, vals []gnft.SetElement) error {
	c.r.add("AddSet " + s.Name)
	return c.Conn.AddSet(s, vals)
}
func (c *recConn) SetAddElements(s *gnft.Set, vals []gnft.SetElement) error {
	c.r.add("SetAddElements " + s.Name + " " + elemsDesc(vals))
	return c.Conn.SetAddElements(s, vals)
}
func (c *recConn) SetDeleteElements(s *gnft.Set, vals []gnft.SetElement) error {
	c.r.add("SetDeleteElements " + s.Name + " " + elemsDesc(vals))
	return c.Conn.SetDeleteElements(s, vals)
}
func (c *recConn) AddRule(r *gnft.Rule) *gnft.Rule { c.r.add("AddRule"); return c.Conn.AddRule(r) }
func (c *recConn) Flush() error {
	if f := c.r.inject; f != nil {
		f(c.Conn)
	}
	c.r.add("Flush")
	return c.Conn.Flush()
}

var tref = &gnft.Table{Name: TableName, Family: gnft.TableFamilyINet}

// nftList runs the nft program in the namespace, if it is installed.
func nftList(t *testing.T, ns *netnstest.NS, args ...string) (string, bool) {
	t.Helper()
	nft, err := netnstest.Tool("nft")
	if err != nil {
		return "", false
	}
	r := ns.Run(append([]string{nft}, args...)...)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("nft %s: %s", strings.Join(args, " "), r)
	}
	return r.Stdout, true
}

// A batch the kernel refuses changes nothing: the old table stays, whole,
// whether the batch replaced the table or changed the tunnel set.
func TestNetnsRefusedBatchChangesNothing(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	ns, newConn := nsConns(t)
	cfg := mustConfig(t, everythingEnv)
	base := rules.Policy(cfg, []string{"wg0"})
	b := NewWithConn(newConn)
	if err := b.Apply(ctx, base); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	if err := NewWithConn(newConn).Check(ctx, base); err != nil {
		t.Fatalf("Check after baseline: %v", err)
	}
	before, _ := nftList(t, ns, "list", "table", "inet", TableName)

	for _, c := range []struct {
		name   string
		want   *rules.Ruleset
		inject func(c Conn)
	}{
		{"replace with a jump to a missing chain", rules.Policy(mustConfig(t, serversEnv("192.0.2.20 2001:db8::20")), nil), func(c Conn) {
			c.AddRule(&gnft.Rule{Table: tref, Chain: &gnft.Chain{Name: "output_v4", Table: tref},
				Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "nosuch"}}})
		}},
		{"tunnel up with a jump to a missing chain", rules.Policy(cfg, []string{"tun0", "wg0"}), func(c Conn) {
			c.AddRule(&gnft.Rule{Table: tref, Chain: &gnft.Chain{Name: "output_v4", Table: tref},
				Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "nosuch"}}})
		}},
		{"tunnel up with an element that is not there to delete", rules.Policy(cfg, []string{"tun0", "wg0"}), func(c Conn) {
			if err := c.SetDeleteElements(&gnft.Set{Table: tref, Name: TunnelSet, KeyType: gnft.TypeIFName},
				[]gnft.SetElement{{Key: ifname("tun9")}}); err != nil {
				t.Error(err)
			}
		}},
		{"tunnel down with a set that already exists", rules.Policy(cfg, nil), func(c Conn) {
			if err := c.AddSet(&gnft.Set{Table: tref, Name: "servers_v4", KeyType: gnft.TypeIFName}, nil); err != nil {
				t.Error(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{inject: c.inject}
			err := NewWithConn(rec.wrap(newConn)).Apply(ctx, c.want)
			if err == nil {
				t.Fatalf("Apply succeeded; the kernel should have refused the batch %v", rec.take())
			}
			if !strings.Contains(err.Error(), "nothing of it was applied") {
				t.Errorf("Apply error %q does not say that nothing was applied", err)
			}
			t.Logf("refused as expected: %v", err)
			// Read back by a backend of its own: the old table, unchanged.
			fresh := NewWithConn(newConn)
			if err := fresh.Check(ctx, base); err != nil {
				t.Errorf("Check of the old state after the refused batch: %v", err)
			}
			if tun, err := fresh.Tunnels(ctx); err != nil || !slices.Equal(tun, []string{"wg0"}) {
				t.Errorf("Tunnels after the refused batch = %v, %v; want [wg0]", tun, err)
			}
			if after, ok := nftList(t, ns, "list", "table", "inet", TableName); ok && after != before {
				t.Errorf("nft lists another table after the refused batch:\n%s\nbefore:\n%s", after, before)
			}
		})
	}

	// And the table still blocks: a packet to an address that is neither a
	// server nor the LAN meets the final reject of output_v4.
	ping, err := netnstest.Tool("ping")
	if err != nil {
		t.Log("ping is not installed; not sending a packet")
		return
	}
	ns.IP("link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.IP("addr", "add", "198.51.100.1/24", "dev", "v0")
	ns.IP("link", "set", "v0", "up")
	ns.IP("link", "set", "v1", "up")
	count := func() uint64 {
		st, err := NewWithConn(newConn).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range st.Rules {
			if r.Chain == "output_v4" && r.Purpose == "fail closed: reject everything else" {
				return r.Packets
			}
		}
		t.Fatal("no final reject in output_v4")
		return 0
	}
	n := count()
	if r := ns.Run(ping, "-n", "-c", "1", "-W", "1", "198.51.100.99"); r.Code == 0 {
		t.Errorf("ping to an address outside servers and LAN went through: %s", r)
	}
	if m := count(); m <= n {
		t.Errorf("the final reject counted %d packets before the ping and %d after", n, m)
	}
}

// 10,000 servers: one set, the same rules as one server, and up and down
// still change only the tunnel set.
func TestNetnsManyServers(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	ns, newConn := nsConns(t)

	ruleCountLive := func() int {
		st, err := NewWithConn(newConn).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Armed {
			t.Fatalf("the table is not armed: %+v", st)
		}
		return len(st.Rules)
	}
	one := rules.Policy(mustConfig(t, serversEnv("192.0.2.10 2001:db8::10")), nil)
	if err := NewWithConn(newConn).Apply(ctx, one); err != nil {
		t.Fatalf("Apply with one server: %v", err)
	}
	oneRules := ruleCountLive()

	cfg := mustConfig(t, serversEnv(manyServers(10000)+" 2001:db8::10"))
	if n := len(cfg.Servers); n != 10001 {
		t.Fatalf("test bug: %d servers", n)
	}
	many := rules.Policy(cfg, nil)
	start := time.Now()
	if err := NewWithConn(newConn).Apply(ctx, many); err != nil {
		t.Fatalf("Apply with 10,000 servers: %v", err)
	}
	t.Logf("applied 10,000 servers in %v", time.Since(start))
	start = time.Now()
	if err := NewWithConn(newConn).Check(ctx, many); err != nil {
		t.Fatalf("Check with 10,000 servers: %v", err)
	}
	t.Logf("checked 10,000 servers in %v", time.Since(start))
	if n := ruleCountLive(); n != oneRules {
		t.Errorf("%d live rules with 10,000 servers, %d with one", n, oneRules)
	}
	if out, ok := nftList(t, ns, "list", "set", "inet", TableName, "servers_v4"); ok {
		for _, a := range []string{"198.18.0.0", "198.18.78.30"} {
			if !strings.Contains(out, a) {
				t.Errorf("nft does not list server %s in servers_v4", a)
			}
		}
		if strings.Contains(out, "198.18.0.1,") || strings.Contains(out, "198.18.0.1 ") {
			t.Errorf("nft lists 198.18.0.1, which is not a server")
		}
	}

	rec := &recorder{}
	b := NewWithConn(rec.wrap(newConn))
	for _, step := range []struct {
		tunnels []string
		want    []string
	}{
		{[]string{"tun0"}, []string{`SetAddElements tunnels ["tun0"]`, "Flush"}},
		{[]string{"tun0", "wg0"}, []string{`SetAddElements tunnels ["wg0"]`, "Flush"}},
		{[]string{"wg0"}, []string{`SetDeleteElements tunnels ["tun0"]`, "Flush"}},
		{[]string{"wg0"}, nil},
		{nil, []string{`SetDeleteElements tunnels ["wg0"]`, "Flush"}},
	} {
		rs := rules.Policy(cfg, step.tunnels)
		if err := b.Apply(ctx, rs); err != nil {
			t.Fatalf("tunnels %v: %v", step.tunnels, err)
		}
		if ops := rec.take(); !slices.Equal(ops, step.want) {
			t.Errorf("tunnels %v: queued %q, want %q", step.tunnels, ops, step.want)
		}
		if err := NewWithConn(newConn).Check(ctx, rs); err != nil {
			t.Errorf("tunnels %v: Check: %v", step.tunnels, err)
		}
		got, err := NewWithConn(newConn).Tunnels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, rs.Tunnels) && len(got)+len(rs.Tunnels) > 0 {
			t.Errorf("Tunnels = %v, want %v", got, rs.Tunnels)
		}
	}

	// Back to one server: the whole table is replaced, the set shrinks.
	if err := b.Apply(ctx, one); err != nil {
		t.Fatal(err)
	}
	if ops := rec.take(); !fullReplace(ops) {
		t.Errorf("config change queued %v, want a full replace", ops[:min(len(ops), 5)])
	}
	if err := NewWithConn(newConn).Check(ctx, one); err != nil {
		t.Errorf("Check after going back to one server: %v", err)
	}
}

// Every test configuration, applied to a real kernel, reads back as built:
// Check passes, applying again sends nothing, and nft itself can list the
// table (an expression nft cannot decode made it abort once).
func TestNetnsRoundTripAndNftList(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	ns, newConn := nsConns(t)
	_, haveNft := nftList(t, ns, "list", "ruleset")
	if !haveNft {
		if os.Getenv("CI") != "" {
			t.Fatal("nft is not installed, and CI is set")
		}
		t.Log("nft is not installed: checking the round trip only")
	}
	for i, c := range testConfigs() {
		rs := rules.Policy(mustConfig(t, c.env), c.tunnels)
		rec := &recorder{}
		b := NewWithConn(rec.wrap(newConn))
		if err := b.Apply(ctx, rs); err != nil {
			t.Fatalf("config %d %v: Apply: %v", i, c.env, err)
		}
		rec.take()
		if err := NewWithConn(newConn).Check(ctx, rs); err != nil {
			t.Errorf("config %d %v: Check: %v", i, c.env, err)
			continue
		}
		if err := b.Apply(ctx, rs); err != nil {
			t.Fatalf("config %d: re-apply: %v", i, err)
		}
		if ops := rec.take(); len(ops) > 0 {
			t.Errorf("config %d: re-apply queued %v", i, ops)
		}
		if !haveNft {
			continue
		}
		out, _ := nftList(t, ns, "list", "ruleset")
		for _, want := range []string{
			"table inet vpnfw {",
			"type filter hook output priority filter; policy drop;",
			`oifname "lo" counter packets 0 bytes 0 accept comment "vpnfw: loopback out"`,
			`counter packets 0 bytes 0 reject with icmpx admin-prohibited comment "vpnfw: fail closed: reject everything else"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("config %d: nft list ruleset lacks %q:\n%s", i, want, out)
			}
		}
		if _, ok := c.env["VPNFW_SERVERS"]; ok && !strings.Contains(out, "daddr @servers_v") {
			t.Errorf("config %d: nft does not list the server lookup by name:\n%s", i, out)
		}
		// nft's JSON output decodes every expression too.
		if _, ok := nftList(t, ns, "-j", "list", "ruleset"); !ok {
			t.Fatal("nft vanished")
		}
	}
}

// The everything configuration as nft lists it, for the reader of a failed
// test; and nft's own reading of the table: what our text calls a rule is
// what nft prints, on the points that matter.
func TestNetnsNftListsEverything(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	ns, newConn := nsConns(t)
	rs := rules.Policy(mustConfig(t, everythingEnv), []string{"wg0", "tun0"})
	if err := NewWithConn(newConn).Apply(ctx, rs); err != nil {
		t.Fatal(err)
	}
	out, ok := nftList(t, ns, "list", "ruleset")
	if !ok {
		netnstest.RequireTools(t, "nft")
	}
	for _, want := range []string{
		`set tunnels {`,
		`meta nfproto ipv4 jump input_v4 comment "vpnfw: ipv4"`,
		`iifname "lo" counter packets 0 bytes 0 accept`,
		`ip daddr @servers_v4`,
		`ip6 daddr @servers_v6`,
		`meta mark 0x00000077 meta skuid 998`,
		`oifname @tunnels counter packets 0 bytes 0 accept`,
		`iifname @tunnels ct state established,related counter packets 0 bytes 0 accept`,
		`ip6 hoplimit 255`,
		`meta l4proto tcp counter packets 0 bytes 0 reject with tcp reset`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nft list ruleset lacks %q", want)
		}
	}
	_, after, _ := strings.Cut(out, "set tunnels {")
	if set, _, _ := strings.Cut(after, "}"); !strings.Contains(set, `"tun0"`) || !strings.Contains(set, `"wg0"`) {
		t.Errorf("nft lists the tunnel set as %s", set)
	}
	if t.Failed() {
		t.Logf("nft list ruleset:\n%s", out)
	}
	// The address sets hold what nft calls the configured networks.
	set, _ := nftList(t, ns, "list", "set", "inet", TableName, "lan_v4")
	if !strings.Contains(set, "192.168.1.0/24") {
		t.Errorf("nft lists lan_v4 as:\n%s", set)
	}
	// Deleted by Disarm, as nft sees it.
	if err := NewWithConn(newConn).Disarm(ctx); err != nil {
		t.Fatal(err)
	}
	if out, _ := nftList(t, ns, "list", "ruleset"); strings.Contains(out, "vpnfw") {
		t.Errorf("nft still lists our table after Disarm:\n%s", out)
	}
	if _, err := NewWithConn(newConn).Status(ctx); err != nil {
		t.Error(err)
	}
}
