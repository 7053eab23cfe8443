package nftables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpnfw/vpnfw/rules"
)

// Conn is the part of *nftables.Conn the backend uses: a seam for tests
// that inject a failing kernel.
type Conn interface {
	ListTableOfFamily(name string, family gnft.TableFamily) (*gnft.Table, error)
	ListChainsOfTableFamily(family gnft.TableFamily) ([]*gnft.Chain, error)
	GetRules(t *gnft.Table, c *gnft.Chain) ([]*gnft.Rule, error)
	GetSets(t *gnft.Table) ([]*gnft.Set, error)
	GetSetElements(s *gnft.Set) ([]gnft.SetElement, error)
	AddTable(t *gnft.Table) *gnft.Table
	DelTable(t *gnft.Table)
	AddChain(c *gnft.Chain) *gnft.Chain
	AddSet(s *gnft.Set, vals []gnft.SetElement) error
	SetAddElements(s *gnft.Set, vals []gnft.SetElement) error
	SetDeleteElements(s *gnft.Set, vals []gnft.SetElement) error
	AddRule(r *gnft.Rule) *gnft.Rule
	Flush() error
}

// Backend keeps our table in sync with a ruleset over netlink.
type Backend struct {
	// newConn opens a connection whose queued batch is sent by Flush, or
	// dropped with the connection: a batch that could not be queued
	// completely is never sent.
	newConn func() (Conn, error)
	// live caches the table read until the next write, as the iptables
	// backend does: one invocation reads the kernel once.
	live   *table
	loaded bool
}

// New returns the backend for this network namespace.
func New() *Backend {
	return NewWithConn(func() (Conn, error) { return dial() })
}

// dial opens a connection whose sockets can send a whole batch: thousands
// of addresses make a batch larger than the default socket send buffer,
// which the kernel refuses with EMSGSIZE.
func dial(opts ...gnft.ConnOption) (*gnft.Conn, error) {
	return gnft.New(append(opts, gnft.WithSockOptions(largeSendBuffer))...)
}

// sendBuffer is the send buffer a batch may fill, as nft raises its own:
// a table with 100,000 addresses fits.
const sendBuffer = 32 << 20

// largeSendBuffer raises the socket's send buffer, beyond the system's
// limit where it has the privilege to (SO_SNDBUFFORCE). It never fails:
// without it the kernel refuses only the batches that are too large.
func largeSendBuffer(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
		}
	})
	return nil
}

// NewWithConn returns a backend that talks through the connections newConn
// opens.
func NewWithConn(newConn func() (Conn, error)) *Backend {
	return &Backend{newConn: newConn}
}

// Supported reports whether the kernel answers nftables requests. Without
// the privilege to ask (EPERM), it cannot tell and says yes: every kernel
// Debian and Ubuntu ship has nf_tables, and the caller will meet the
// permission error with its first real request.
func Supported() (bool, error) {
	c, err := gnft.New()
	if err != nil {
		return false, err
	}
	_, err = c.ListTablesOfFamily(gnft.TableFamilyINet)
	if err == nil || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return true, nil
	}
	return false, err
}

// Name implements rules.Backend.
func (b *Backend) Name() string { return "nftables (table inet " + TableName + ")" }

func (b *Backend) tableRef() *gnft.Table {
	return &gnft.Table{Name: TableName, Family: gnft.TableFamilyINet}
}

// read returns the live table, nil if there is none, read at most once
// until the next write.
func (b *Backend) read() (*table, error) {
	if b.loaded {
		return b.live, nil
	}
	c, err := b.newConn()
	if err != nil {
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	t, err := readTable(c)
	if err != nil {
		return nil, fmt.Errorf("reading table inet %s: %w", TableName, err)
	}
	b.live, b.loaded = t, true
	return t, nil
}

func readTable(c Conn) (*table, error) {
	tref, err := c.ListTableOfFamily(TableName, gnft.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t := &table{flags: tref.Flags}
	sets, err := c.GetSets(tref)
	if err != nil {
		return nil, fmt.Errorf("listing sets: %w", err)
	}
	for _, s := range sets {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("listing the elements of set %s: %w", s.Name, err)
		}
		t.sets = append(t.sets, &set{name: s.Name, keyType: s.KeyType, interval: s.Interval, anonymous: s.Anonymous,
			concat: s.Concatenation, elems: elems})
	}
	chains, err := c.ListChainsOfTableFamily(gnft.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	for _, gc := range chains {
		if gc.Table == nil || gc.Table.Name != TableName {
			continue
		}
		ch := &chain{name: gc.Name, hook: gc.Hooknum, typ: gc.Type}
		if gc.Hooknum != nil {
			ch.policy = gnft.ChainPolicyAccept
			if gc.Policy != nil {
				ch.policy = *gc.Policy
			}
			if gc.Priority != nil {
				ch.priority = *gc.Priority
			}
		}
		grs, err := c.GetRules(tref, gc)
		if err != nil {
			return nil, fmt.Errorf("listing the rules of chain %s: %w", gc.Name, err)
		}
		for _, gr := range grs {
			r := &rule{exprs: gr.Exprs}
			r.comment, _ = userdata.GetString(gr.UserData, userdata.TypeComment)
			r.comment = strings.TrimPrefix(r.comment, commentPrefix)
			for _, e := range gr.Exprs {
				switch e := e.(type) {
				case *expr.Lookup:
					if s := t.set(e.SetName); s != nil && s.anonymous {
						r.anon = append(r.anon, s)
					}
				case *expr.Counter:
					r.counter = e
				}
			}
			ch.rules = append(ch.rules, r)
		}
		t.chains = append(t.chains, ch)
	}
	return t, nil
}

// Apply implements rules.Backend in one netlink batch. When the live table
// differs from the desired one only in the tunnel set, the batch changes
// those elements and nothing else, so counters and the rules stay as they
// are; otherwise it replaces the whole table (delete and recreate in the
// same batch: the kernel switches from the old to the new table at once).
// The same state applied again sends nothing.
func (b *Backend) Apply(ctx context.Context, rs *rules.Ruleset) error {
	want, live, err := b.wantAndLive(rs)
	if err != nil {
		return err
	}
	c, err := b.newConn()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	var queued bool
	if live != nil && live.sameBut(want, TunnelSet) {
		queued, err = queueTunnels(c, b.tableRef(), live.set(TunnelSet), want.set(TunnelSet))
	} else {
		queued, err = true, queueTable(c, b.tableRef(), want)
	}
	if err != nil {
		// The connection and its partial batch are dropped unsent.
		return fmt.Errorf("preparing the batch (nothing was sent): %w", err)
	}
	if !queued {
		return nil
	}
	b.loaded = false
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("the kernel refused the batch, so nothing of it was applied: %w", err)
	}
	return nil
}

// wantAndLive builds the table rs becomes and reads the live one.
func (b *Backend) wantAndLive(rs *rules.Ruleset) (want, live *table, err error) {
	if want, err = build(rs); err != nil {
		return nil, nil, err
	}
	if live, err = b.read(); err != nil {
		return nil, nil, err
	}
	return want, live, nil
}

// queueTunnels queues the changes of the tunnel set's elements.
func queueTunnels(c Conn, tref *gnft.Table, live, want *set) (bool, error) {
	gs := &gnft.Set{Table: tref, Name: TunnelSet, KeyType: gnft.TypeIFName}
	var add, del []gnft.SetElement
	for _, e := range want.elems {
		if !slices.ContainsFunc(live.elems, func(l gnft.SetElement) bool { return elemEqual(l, e) }) {
			add = append(add, e)
		}
	}
	for _, e := range live.elems {
		if !slices.ContainsFunc(want.elems, func(w gnft.SetElement) bool { return elemEqual(w, e) }) {
			del = append(del, gnft.SetElement{Key: e.Key})
		}
	}
	// New tunnels first: within the batch order does not matter, but the
	// batch reads in the order of its intent.
	for _, p := range chunks(add) {
		if len(p) > 0 {
			if err := c.SetAddElements(gs, p); err != nil {
				return false, err
			}
		}
	}
	for _, p := range chunks(del) {
		if len(p) > 0 {
			if err := c.SetDeleteElements(gs, p); err != nil {
				return false, err
			}
		}
	}
	return len(add)+len(del) > 0, nil
}

// maxListBytes is the most a message's element list may take.
// google/nftables v0.3.0 puts the list in one netlink attribute, whose
// 16-bit length silently wraps beyond 64 KiB: the kernel then reads a
// truncated list, and the rest of it as garbage.
const maxListBytes = 1<<16 - 1 - 4

// chunks splits elements into runs whose lists fit one message each; it
// returns one run, maybe empty, at least.
func chunks(elems []gnft.SetElement) [][]gnft.SetElement {
	out := [][]gnft.SetElement{nil}
	size := 0
	for _, e := range elems {
		// The element's, its key's and the key value's attribute headers,
		// the key padded to 4 bytes, and the flags of an interval's end.
		n := 12 + (len(e.Key)+3)&^3
		if e.IntervalEnd {
			n += 8
		}
		if size+n > maxListBytes {
			out = append(out, nil)
			size = 0
		}
		out[len(out)-1] = append(out[len(out)-1], e)
		size += n
	}
	return out
}

// queueTable queues the replacement of the whole table.
func queueTable(c Conn, tref *gnft.Table, t *table) error {
	// Adding first makes the delete valid when there is no table yet.
	c.AddTable(tref)
	c.DelTable(tref)
	c.AddTable(tref)
	ids := map[string]*gnft.Set{}
	for _, s := range t.sets {
		// The byte order is only a hint for nft, which lists interface
		// names as empty strings without it: they are host-endian to it.
		gs := &gnft.Set{Table: tref, Name: s.name, KeyType: s.keyType, Interval: s.interval, KeyByteOrder: binaryutil.NativeEndian}
		parts := chunks(s.elems)
		if err := c.AddSet(gs, parts[0]); err != nil {
			return fmt.Errorf("set %s: %w", s.name, err)
		}
		for _, p := range parts[1:] {
			if err := c.SetAddElements(gs, p); err != nil {
				return fmt.Errorf("set %s: %w", s.name, err)
			}
		}
		ids[s.name] = gs
	}
	chains := map[string]*gnft.Chain{}
	for _, ch := range t.chains {
		gc := &gnft.Chain{Name: ch.name, Table: tref}
		if ch.hook != nil {
			policy, priority := ch.policy, ch.priority
			gc.Hooknum, gc.Priority, gc.Type, gc.Policy = ch.hook, &priority, ch.typ, &policy
		}
		chains[ch.name] = c.AddChain(gc)
	}
	for _, ch := range t.chains {
		for _, r := range ch.rules {
			anon := r.anon
			exprs := make([]expr.Any, len(r.exprs))
			for i, e := range r.exprs {
				exprs[i] = e
				l, ok := e.(*expr.Lookup)
				if !ok {
					continue
				}
				lookup := *l
				if s := ids[l.SetName]; s != nil {
					lookup.SetID = s.ID
				} else {
					if len(anon) == 0 {
						return fmt.Errorf("chain %s: rule %q looks up a set it does not have", ch.name, r.comment)
					}
					if len(chunks(anon[0].elems)) > 1 {
						// A constant set cannot be filled by later messages.
						return fmt.Errorf("chain %s: rule %q: %d elements are too many for one anonymous set", ch.name, r.comment, len(anon[0].elems))
					}
					gs := &gnft.Set{Table: tref, Anonymous: true, Constant: true, KeyType: anon[0].keyType, Concatenation: anon[0].concat}
					if err := c.AddSet(gs, anon[0].elems); err != nil {
						return fmt.Errorf("chain %s: rule %q: %w", ch.name, r.comment, err)
					}
					anon = anon[1:]
					lookup.SetName, lookup.SetID = gs.Name, gs.ID
				}
				exprs[i] = &lookup
			}
			c.AddRule(&gnft.Rule{Table: tref, Chain: chains[ch.name], Exprs: exprs, UserData: comment(r.comment)})
		}
	}
	return nil
}

// Tunnels implements rules.Backend: the elements of the tunnel set.
func (b *Backend) Tunnels(ctx context.Context) ([]string, error) {
	live, err := b.read()
	if err != nil || live == nil {
		return nil, err
	}
	s := live.set(TunnelSet)
	if s == nil {
		return nil, nil
	}
	var devs []string
	for _, e := range s.elems {
		name := strings.TrimRight(string(e.Key), "\x00")
		// Only names the hooks could have written count: anything else in
		// the set allows nothing we know of, and check reports it.
		if len(e.Key) == unix.IFNAMSIZ && rules.ValidIfaceName(name) == nil && !strings.Contains(name, "\x00") {
			devs = append(devs, name)
		}
	}
	slices.Sort(devs)
	return devs, nil
}

// Present implements rules.Backend: whether our table exists.
func (b *Backend) Present(ctx context.Context) (bool, error) {
	live, err := b.read()
	return live != nil, err
}

// Check implements rules.Backend: the live table, rendered, must equal the
// desired one line for line.
func (b *Backend) Check(ctx context.Context, rs *rules.Ruleset) error {
	want, live, err := b.wantAndLive(rs)
	if err != nil {
		return err
	}
	if live == nil {
		return fmt.Errorf("table inet %s is missing (deleted, or `nft flush ruleset` ran); run vpnfw-hook baseline", TableName)
	}
	if err := armed(live); err != nil {
		return fmt.Errorf("%w; run vpnfw-hook baseline", err)
	}
	w, l := want.lines(true), live.lines(true)
	for i := range max(len(w), len(l)) {
		switch {
		case i >= len(l):
			return fmt.Errorf("missing from table inet %s: %s; run vpnfw-hook baseline", TableName, w[i])
		case i >= len(w):
			return fmt.Errorf("unexpected in table inet %s: %s; run vpnfw-hook baseline", TableName, l[i])
		case l[i] != w[i]:
			return fmt.Errorf("table inet %s has %s, expected %s; run vpnfw-hook baseline", TableName, strings.TrimSpace(l[i]), strings.TrimSpace(w[i]))
		}
	}
	return nil
}

// armed says why the table would not close the host: every hook needs a
// base chain of ours with policy drop. Whatever else it holds, such a table
// lets nothing pass that its rules do not accept.
func armed(t *table) error {
	if t.flags&unix.NFT_TABLE_F_DORMANT != 0 {
		return fmt.Errorf("table inet %s is dormant: its chains are unhooked and see no packet", TableName)
	}
	for _, h := range rules.Hooks {
		i := slices.IndexFunc(t.chains, func(c *chain) bool { return c.name == h.String() })
		switch {
		case i < 0 || t.chains[i].hook == nil || *t.chains[i].hook != *hookNums[h] || t.chains[i].typ != gnft.ChainTypeFilter:
			return fmt.Errorf("table inet %s has no %s filter base chain", TableName, h)
		case t.chains[i].policy != gnft.ChainPolicyDrop:
			return fmt.Errorf("the policy of chain %s is not drop", h)
		}
	}
	return nil
}

// Status implements rules.Backend, with the counter of every rule.
func (b *Backend) Status(ctx context.Context) (*rules.Status, error) {
	live, err := b.read()
	if err != nil {
		return nil, err
	}
	st := &rules.Status{Backend: b.Name(), Tunnels: []string{}, Rules: []rules.Counter{}, State: rules.Disarmed}
	if live == nil {
		return st, nil
	}
	st.Armed = armed(live) == nil
	for _, ch := range live.chains {
		fam := "inet"
		for f, suffix := range famSuffix {
			if strings.HasSuffix(ch.name, suffix) {
				fam = rules.Family(f).String()
			}
		}
		for _, r := range ch.rules {
			c := rules.Counter{Family: fam, Chain: ch.name, Purpose: r.comment, Verdict: verdictOf(r)}
			if r.comment == "" {
				c.Purpose = "(not ours)"
			}
			if r.counter != nil {
				c.Packets, c.Bytes = r.counter.Packets, r.counter.Bytes
			}
			st.Rules = append(st.Rules, c)
		}
	}
	tunnels, err := b.Tunnels(ctx)
	if err != nil {
		return nil, err
	}
	st.Tunnels = append(st.Tunnels, tunnels...)
	st.State = rules.LiveState(st.Armed, tunnels)
	return st, nil
}

func verdictOf(r *rule) string {
	for _, e := range slices.Backward(r.exprs) {
		switch e := e.(type) {
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				return "accept"
			case expr.VerdictDrop:
				return "drop"
			case expr.VerdictJump:
				return "jump"
			}
		case *expr.Reject:
			return "reject"
		}
	}
	return "-"
}

// Disarm implements rules.Backend: our table is deleted, in one batch.
func (b *Backend) Disarm(ctx context.Context) error {
	live, err := b.read()
	if err != nil || live == nil {
		return err
	}
	c, err := b.newConn()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	c.DelTable(b.tableRef())
	b.loaded = false
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting table inet %s: %w", TableName, err)
	}
	return nil
}

// Render prints the table a ruleset becomes, for `vpnfw-hook render` and
// the golden files.
func Render(rs *rules.Ruleset) (string, error) {
	t, err := build(rs)
	if err != nil {
		return "", err
	}
	return t.Text(), nil
}
