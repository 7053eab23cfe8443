package nftables

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// fakeKernel stands in for nf_tables behind the Conn seam. Every Conn it
// opens queues operations; Flush applies a connection's whole queue to a
// copy of the committed table and commits it only if every operation was
// valid, as the kernel does with a batch. Reads return what the last
// successful Flush committed, so Apply, Check and Status meet the table
// their own batches built.
type fakeKernel struct {
	mu        sync.Mutex
	committed *fakeTable // nil: no table inet vpnfw
	conns     []*fakeConn
	// flushes counts every call of Flush, failed ones too; reads counts
	// the reads of the table, one per Backend.read that reached the kernel.
	flushes, reads int

	// Failure knobs.
	failAddSet         func(s *gnft.Set) error
	failSetAddElements error
	failFlush          error
	// beforeFlush runs on the queue just before a Flush applies it.
	beforeFlush func(c *fakeConn)

	nextSetID  uint32
	nextAnon   int
	nextHandle uint64
}

type fakeTable struct {
	flags  uint32 // as another tool may set them
	sets   []*fakeSet
	chains []*fakeChain
}

type fakeSet struct {
	gs    gnft.Set
	elems []gnft.SetElement
}

type fakeChain struct {
	gc    gnft.Chain
	rules []*gnft.Rule
}

func (t *fakeTable) clone() *fakeTable {
	if t == nil {
		return nil
	}
	out := &fakeTable{}
	for _, s := range t.sets {
		out.sets = append(out.sets, &fakeSet{gs: s.gs, elems: slices.Clone(s.elems)})
	}
	for _, c := range t.chains {
		nc := &fakeChain{gc: c.gc}
		for _, r := range c.rules {
			nc.rules = append(nc.rules, cloneRule(r))
		}
		out.chains = append(out.chains, nc)
	}
	return out
}

// cloneRule copies a rule with its counters and lookups, the expressions a
// test or a later batch may change in place.
func cloneRule(r *gnft.Rule) *gnft.Rule {
	nr := *r
	nr.Exprs = make([]expr.Any, len(r.Exprs))
	for i, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Counter:
			c := *e
			nr.Exprs[i] = &c
		case *expr.Lookup:
			l := *e
			nr.Exprs[i] = &l
		default:
			nr.Exprs[i] = e
		}
	}
	nr.UserData = slices.Clone(r.UserData)
	return &nr
}

func (t *fakeTable) set(name string) *fakeSet {
	for _, s := range t.sets {
		if s.gs.Name == name {
			return s
		}
	}
	return nil
}

func (t *fakeTable) chain(name string) *fakeChain {
	for _, c := range t.chains {
		if c.gc.Name == name {
			return c
		}
	}
	return nil
}

// batch is the state a Flush builds: the table and the sets created in it,
// by the ID the rules refer to them with.
type batch struct {
	t   *fakeTable
	ids map[uint32]string
}

type fakeOp struct {
	desc  string
	apply func(b *batch) error
}

type fakeConn struct {
	k       *fakeKernel
	ops     []fakeOp
	flushed bool
}

func (k *fakeKernel) newConn() (Conn, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := &fakeConn{k: k}
	k.conns = append(k.conns, c)
	return c, nil
}

// last returns the connection opened last.
func (k *fakeKernel) last() *fakeConn {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.conns[len(k.conns)-1]
}

// queued lists what every connection opened since connection n queued.
func (k *fakeKernel) queuedSince(n int) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, c := range k.conns[n:] {
		out = append(out, c.descs()...)
	}
	return out
}

func (c *fakeConn) descs() []string {
	var out []string
	for _, op := range c.ops {
		out = append(out, op.desc)
	}
	return out
}

func (c *fakeConn) queue(desc string, apply func(b *batch) error) {
	c.ops = append(c.ops, fakeOp{desc, apply})
}

func isOurs(t *gnft.Table) bool {
	return t != nil && t.Name == TableName && t.Family == gnft.TableFamilyINet
}

var errNoTable = fmt.Errorf("no such table: %w", unix.ENOENT)

// Reads.

func (c *fakeConn) ListTableOfFamily(name string, family gnft.TableFamily) (*gnft.Table, error) {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	c.k.reads++
	if c.k.committed == nil || name != TableName || family != gnft.TableFamilyINet {
		return nil, errNoTable
	}
	return &gnft.Table{Name: TableName, Family: gnft.TableFamilyINet, Flags: c.k.committed.flags}, nil
}

func (c *fakeConn) ListChainsOfTableFamily(family gnft.TableFamily) ([]*gnft.Chain, error) {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if c.k.committed == nil || family != gnft.TableFamilyINet {
		return nil, nil
	}
	var out []*gnft.Chain
	for _, ch := range c.k.committed.chains {
		gc := ch.gc
		gc.Table = &gnft.Table{Name: TableName, Family: gnft.TableFamilyINet}
		out = append(out, &gc)
	}
	return out, nil
}

func (c *fakeConn) GetRules(t *gnft.Table, ch *gnft.Chain) ([]*gnft.Rule, error) {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if c.k.committed == nil || !isOurs(t) {
		return nil, errNoTable
	}
	fc := c.k.committed.chain(ch.Name)
	if fc == nil {
		return nil, fmt.Errorf("no chain %s: %w", ch.Name, unix.ENOENT)
	}
	var out []*gnft.Rule
	for _, r := range fc.rules {
		out = append(out, cloneRule(r))
	}
	return out, nil
}

func (c *fakeConn) GetSets(t *gnft.Table) ([]*gnft.Set, error) {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if c.k.committed == nil || !isOurs(t) {
		return nil, errNoTable
	}
	var out []*gnft.Set
	for _, s := range c.k.committed.sets {
		gs := s.gs
		out = append(out, &gs)
	}
	return out, nil
}

func (c *fakeConn) GetSetElements(s *gnft.Set) ([]gnft.SetElement, error) {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if c.k.committed == nil {
		return nil, errNoTable
	}
	fs := c.k.committed.set(s.Name)
	if fs == nil {
		return nil, fmt.Errorf("no set %s: %w", s.Name, unix.ENOENT)
	}
	return slices.Clone(fs.elems), nil
}

// Writes: queued, applied by Flush.

func (c *fakeConn) AddTable(t *gnft.Table) *gnft.Table {
	c.queue("AddTable", func(b *batch) error {
		if !isOurs(t) {
			return fmt.Errorf("AddTable %+v: not our table", t)
		}
		if b.t == nil {
			b.t = &fakeTable{}
		}
		return nil
	})
	return t
}

func (c *fakeConn) DelTable(t *gnft.Table) {
	c.queue("DelTable", func(b *batch) error {
		if b.t == nil || !isOurs(t) {
			return errNoTable
		}
		b.t = nil
		return nil
	})
}

func (c *fakeConn) AddChain(ch *gnft.Chain) *gnft.Chain {
	gc := *ch
	c.queue("AddChain "+ch.Name, func(b *batch) error {
		if b.t == nil || !isOurs(gc.Table) {
			return errNoTable
		}
		if b.t.chain(gc.Name) != nil {
			return fmt.Errorf("chain %s exists: %w", gc.Name, unix.EEXIST)
		}
		b.t.chains = append(b.t.chains, &fakeChain{gc: gc})
		return nil
	})
	return ch
}

func elemsDesc(vals []gnft.SetElement) string {
	if len(vals) > 8 {
		return fmt.Sprintf("(%d elements)", len(vals))
	}
	var out []string
	for _, v := range vals {
		s := string(bytes.TrimRight(v.Key, "\x00"))
		if v.IntervalEnd {
			s = "end:" + s
		}
		out = append(out, fmt.Sprintf("%q", s))
	}
	return "[" + strings.Join(out, " ") + "]"
}

// checkElems refuses keys of the wrong length, as the kernel does, and
// element lists longer than the 16-bit length of the netlink attribute that
// google/nftables v0.3.0 puts them in (it wraps silently; the kernel reads
// garbage).
func checkElems(s *gnft.Set, vals []gnft.SetElement) error {
	size := 0
	for _, v := range vals {
		size += 4 + 8 + (len(v.Key)+3)&^3
		if v.IntervalEnd {
			size += 8
		}
	}
	if size+4 > 1<<16-1 {
		return fmt.Errorf("set %s: %d elements take %d bytes, more than one netlink attribute holds: %w", s.Name, len(vals), size, unix.EINVAL)
	}
	for _, v := range vals {
		if uint32(len(v.Key)) != s.KeyType.Bytes {
			return fmt.Errorf("set %s: key %x of %d bytes, want %d: %w", s.Name, v.Key, len(v.Key), s.KeyType.Bytes, unix.EINVAL)
		}
	}
	return nil
}

// AddSet mimics google/nftables v0.3.0: it assigns the set an ID (and an
// anonymous set its name template), queues the set, and only then may fail
// on the elements, leaving the set queued (issue #323).
func (c *fakeConn) AddSet(s *gnft.Set, vals []gnft.SetElement) error {
	c.k.mu.Lock()
	if s.ID == 0 {
		c.k.nextSetID++
		s.ID = c.k.nextSetID
		if s.Anonymous {
			s.Name = "__set%d"
		}
	}
	fail := c.k.failAddSet
	c.k.mu.Unlock()
	gs := *s
	gs.ID = 0
	vals = slices.Clone(vals)
	id := s.ID
	desc := "AddSet " + s.Name
	if s.Anonymous {
		desc = "AddSet (anonymous)"
	}
	c.queue(desc, func(b *batch) error {
		if b.t == nil || !isOurs(gs.Table) {
			return errNoTable
		}
		if gs.Anonymous {
			gs.Name = fmt.Sprintf("__set%d", c.k.nextAnon)
			c.k.nextAnon++
		} else if b.t.set(gs.Name) != nil {
			return fmt.Errorf("set %s exists: %w", gs.Name, unix.EEXIST)
		}
		if err := checkElems(&gs, vals); err != nil {
			return err
		}
		b.t.sets = append(b.t.sets, &fakeSet{gs: gs, elems: vals})
		b.ids[id] = gs.Name
		return nil
	})
	if fail != nil {
		if err := fail(s); err != nil {
			return err
		}
	}
	return nil
}

func (c *fakeConn) SetAddElements(s *gnft.Set, vals []gnft.SetElement) error {
	if err := c.k.failSetAddElements; err != nil {
		return err
	}
	name := s.Name
	vals = slices.Clone(vals)
	c.queue("SetAddElements "+name+" "+elemsDesc(vals), func(b *batch) error {
		if b.t == nil {
			return errNoTable
		}
		fs := b.t.set(name)
		if fs == nil {
			return fmt.Errorf("no set %s: %w", name, unix.ENOENT)
		}
		if err := checkElems(&fs.gs, vals); err != nil {
			return err
		}
		have := map[string]bool{}
		key := func(e gnft.SetElement) string { return fmt.Sprint(e.IntervalEnd, e.Key) }
		for _, e := range fs.elems {
			have[key(e)] = true
		}
		for _, v := range vals {
			if !have[key(v)] {
				fs.elems = append(fs.elems, v)
				have[key(v)] = true
			}
		}
		return nil
	})
	return nil
}

func (c *fakeConn) SetDeleteElements(s *gnft.Set, vals []gnft.SetElement) error {
	name := s.Name
	vals = slices.Clone(vals)
	c.queue("SetDeleteElements "+name+" "+elemsDesc(vals), func(b *batch) error {
		if b.t == nil {
			return errNoTable
		}
		fs := b.t.set(name)
		if fs == nil {
			return fmt.Errorf("no set %s: %w", name, unix.ENOENT)
		}
		for _, v := range vals {
			i := slices.IndexFunc(fs.elems, func(e gnft.SetElement) bool { return elemEqual(e, v) })
			if i < 0 {
				return fmt.Errorf("set %s has no element %x: %w", name, v.Key, unix.ENOENT)
			}
			fs.elems = slices.Delete(fs.elems, i, i+1)
		}
		return nil
	})
	return nil
}

func (c *fakeConn) AddRule(r *gnft.Rule) *gnft.Rule {
	nr := cloneRule(r)
	chainName := ""
	if r.Chain != nil {
		chainName = r.Chain.Name
	}
	c.queue("AddRule "+chainName, func(b *batch) error {
		if b.t == nil || !isOurs(nr.Table) {
			return errNoTable
		}
		fc := b.t.chain(chainName)
		if fc == nil {
			return fmt.Errorf("no chain %q: %w", chainName, unix.ENOENT)
		}
		for _, e := range nr.Exprs {
			switch e := e.(type) {
			case *expr.Lookup:
				// The kernel binds a lookup by name, or by the ID of a set
				// created in the same batch; it reports the name only.
				if name, ok := b.ids[e.SetID]; ok && e.SetID != 0 {
					e.SetName = name
				}
				if b.t.set(e.SetName) == nil {
					return fmt.Errorf("lookup of missing set %q: %w", e.SetName, unix.ENOENT)
				}
				e.SetID = 0
			case *expr.Verdict:
				if (e.Kind == expr.VerdictJump || e.Kind == expr.VerdictGoto) && b.t.chain(e.Chain) == nil {
					return fmt.Errorf("jump to missing chain %q: %w", e.Chain, unix.ENOENT)
				}
			}
		}
		c.k.nextHandle++
		nr.Handle = c.k.nextHandle
		nr.Chain = &gnft.Chain{Name: chainName}
		fc.rules = append(fc.rules, nr)
		return nil
	})
	return r
}

var errFlushedTwice = errors.New("fake: Flush called twice on one connection")

func (c *fakeConn) Flush() error {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	c.k.flushes++
	if c.flushed {
		return errFlushedTwice
	}
	c.flushed = true
	if hook := c.k.beforeFlush; hook != nil {
		c.k.mu.Unlock()
		hook(c)
		c.k.mu.Lock()
	}
	if c.k.failFlush != nil {
		return c.k.failFlush
	}
	b := &batch{t: c.k.committed.clone(), ids: map[uint32]string{}}
	for i, op := range c.ops {
		if err := op.apply(b); err != nil {
			return fmt.Errorf("batch message %d (%s): %w", i, op.desc, err)
		}
	}
	c.k.committed = b.t
	return nil
}

var _ Conn = (*fakeConn)(nil)
