package nftables

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/vpnfw/vpnfw/rules"
)

// copyExpr returns a shallow copy of the struct e points to.
func copyExpr(e expr.Any) expr.Any {
	v := reflect.ValueOf(e).Elem()
	c := reflect.New(v.Type())
	c.Elem().Set(v)
	return c.Interface().(expr.Any)
}

// nth replaces the n-th expression of type T in r by a copy and returns the
// copy, for the test to change.
func nth[T expr.Any](t *testing.T, r *rule, n int) T {
	t.Helper()
	for i, e := range r.exprs {
		if _, ok := e.(T); !ok {
			continue
		}
		if n > 0 {
			n--
			continue
		}
		c := copyExpr(e)
		r.exprs[i] = c
		return c.(T)
	}
	var zero T
	t.Fatalf("rule %q has no such %T", r.comment, zero)
	return zero
}

// index returns the position of the n-th expression of type T.
func index[T expr.Any](t *testing.T, r *rule, n int) int {
	t.Helper()
	for i, e := range r.exprs {
		if _, ok := e.(T); ok {
			if n == 0 {
				return i
			}
			n--
		}
	}
	var zero T
	t.Fatalf("rule %q has no such %T", r.comment, zero)
	return -1
}

func insert(r *rule, at int, e expr.Any) { r.exprs = slices.Insert(r.exprs, at, e) }

func cloneTableRule(r *rule) *rule {
	c := &rule{comment: r.comment, exprs: slices.Clone(r.exprs)}
	for _, s := range r.anon {
		ns := *s
		ns.elems = slices.Clone(s.elems)
		c.anon = append(c.anon, &ns)
	}
	return c
}

func findRule(t *testing.T, tb *table, chainName, comment string) *rule {
	t.Helper()
	for _, c := range tb.chains {
		if c.name != chainName {
			continue
		}
		for _, r := range c.rules {
			if r.comment == comment {
				return r
			}
		}
	}
	t.Fatalf("no rule %q in chain %s", comment, chainName)
	return nil
}

// Every tampering with a rule's expressions, however small, changes its
// text: Check compares texts, so a rule that prints like ours is ours.
func TestRuleTextIsStrict(t *testing.T) {
	tb := mustBuild(t, rules.Policy(mustConfig(t, everythingEnv), []string{"tun0", "wg0"}))
	const (
		lo        = "loopback in"
		servers   = "vpn client to its servers"
		replies   = "replies from vpn servers"
		tunOut    = "tunnels out"
		tunIn     = "tunnel replies"
		rejectAll = "fail closed: reject everything else"
		nd        = "ipv6 neighbour discovery in"
	)
	cases := []struct {
		chain, comment, name string
		mutate               func(t *testing.T, r *rule)
	}{
		// Registers.
		{"input_v4", lo, "cmp from another register", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Register = unix.NFT_REG_2 }},
		{"input_v4", lo, "load into another 32-bit register", func(t *testing.T, r *rule) { nth[*expr.Meta](t, r, 0).Register = unix.NFT_REG32_01 }},
		{"input_v4", lo, "cmp from a 32-bit register inside reg 1", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Register = unix.NFT_REG32_02 }},
		{"output_v4", tunOut, "lookup from another register", func(t *testing.T, r *rule) { nth[*expr.Lookup](t, r, 0).SourceRegister = unix.NFT_REG_2 }},
		{"output_v4", servers, "concat part in the wrong register", func(t *testing.T, r *rule) {
			nth[*expr.Payload](t, r, 1).DestRegister = unix.NFT_REG32_02
		}},
		{"output_v4", servers, "anonymous lookup from another register", func(t *testing.T, r *rule) {
			nth[*expr.Lookup](t, r, 1).SourceRegister = unix.NFT_REG32_01
		}},
		// Comparisons.
		{"input_v4", lo, "cmp neq", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Op = expr.CmpOpNeq }},
		{"input_v4", lo, "cmp lt", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Op = expr.CmpOpLt }},
		{"input_v4", lo, "ifname without padding (lo*)", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Data = []byte("lo") }},
		{"input_v4", lo, "ifname prefix (l*)", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Data = []byte("l") }},
		{"input_v4", lo, "ifname with NUL inside", func(t *testing.T, r *rule) {
			nth[*expr.Cmp](t, r, 0).Data = append([]byte("lo\x00x"), make([]byte, 12)...)
		}},
		{"input_v4", lo, "ifname 16 bytes without NUL", func(t *testing.T, r *rule) {
			nth[*expr.Cmp](t, r, 0).Data = []byte("lo0123456789abcd")
		}},
		{"input_v4", lo, "ifname padded beyond IFNAMSIZ", func(t *testing.T, r *rule) {
			nth[*expr.Cmp](t, r, 0).Data = append(ifname("lo"), 0, 0, 0, 0)
		}},
		{"output_v4", servers, "other nfproto", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Data = []byte{unix.NFPROTO_IPV6} }},
		{"output_v4", servers, "other mark", func(t *testing.T, r *rule) {
			nth[*expr.Cmp](t, r, 1).Data = binaryutil.NativeEndian.PutUint32(0x78)
		}},
		{"output_v4", servers, "mark in the other byte order", func(t *testing.T, r *rule) {
			nth[*expr.Cmp](t, r, 1).Data = binaryutil.BigEndian.PutUint32(119)
		}},
		{"output_v4", servers, "other uid", func(t *testing.T, r *rule) {
			nth[*expr.Cmp](t, r, 2).Data = binaryutil.NativeEndian.PutUint32(0)
		}},
		{"input_v4", replies, "ct direction original", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 1).Data = []byte{0} }},
		{"input_v4", replies, "ct direction of another length", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 1).Data = []byte{1, 0, 0, 0} }},
		{"input_v6", nd, "hop limit 254", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 2).Data = []byte{254} }},
		{"input_v4", tunIn, "ct state eq 0", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Op = expr.CmpOpEq }},
		{"input_v4", tunIn, "ct state neq 1", func(t *testing.T, r *rule) { nth[*expr.Cmp](t, r, 0).Data = []byte{1, 0, 0, 0} }},
		// Loads.
		{"input_v4", lo, "oifname instead of iifname", func(t *testing.T, r *rule) { nth[*expr.Meta](t, r, 0).Key = expr.MetaKeyOIFNAME }},
		{"input_v4", lo, "iif index instead of name", func(t *testing.T, r *rule) { nth[*expr.Meta](t, r, 0).Key = expr.MetaKeyIIF }},
		{"input_v4", lo, "meta set instead of load", func(t *testing.T, r *rule) { nth[*expr.Meta](t, r, 0).SourceRegister = true }},
		{"output_v4", servers, "payload at the source address", func(t *testing.T, r *rule) { nth[*expr.Payload](t, r, 0).Offset = 12 }},
		{"output_v4", servers, "payload at another offset", func(t *testing.T, r *rule) { nth[*expr.Payload](t, r, 0).Offset = 20 }},
		{"output_v4", servers, "payload of another length", func(t *testing.T, r *rule) { nth[*expr.Payload](t, r, 0).Len = 3 }},
		{"output_v4", servers, "payload from the transport header", func(t *testing.T, r *rule) {
			nth[*expr.Payload](t, r, 0).Base = expr.PayloadBaseTransportHeader
		}},
		{"output_v4", servers, "payload write", func(t *testing.T, r *rule) {
			nth[*expr.Payload](t, r, 0).OperationType = expr.PayloadWrite
		}},
		{"output_v4", servers, "payload with a checksum", func(t *testing.T, r *rule) {
			nth[*expr.Payload](t, r, 0).CsumType = expr.CsumTypeInet
		}},
		{"output_v4", servers, "source port instead of destination port", func(t *testing.T, r *rule) {
			nth[*expr.Payload](t, r, 1).Offset = 0
		}},
		{"output_v4", servers, "mark replaced by skuid", func(t *testing.T, r *rule) { nth[*expr.Meta](t, r, 2).Key = expr.MetaKeySKUID }},
		{"input_v4", replies, "ct with a direction", func(t *testing.T, r *rule) { nth[*expr.Ct](t, r, 1).Direction = 1 }},
		{"input_v4", replies, "ct set instead of load", func(t *testing.T, r *rule) { nth[*expr.Ct](t, r, 1).SourceRegister = true }},
		{"input_v4", tunIn, "ct state mask established only", func(t *testing.T, r *rule) {
			nth[*expr.Bitwise](t, r, 0).Mask = binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED)
		}},
		{"input_v4", tunIn, "ct state with xor", func(t *testing.T, r *rule) {
			nth[*expr.Bitwise](t, r, 0).Xor = binaryutil.NativeEndian.PutUint32(1)
		}},
		{"input_v4", tunIn, "ct mark instead of ct state", func(t *testing.T, r *rule) { nth[*expr.Ct](t, r, 0).Key = expr.CtKeyMARK }},
		// Lookups and sets.
		{"output_v4", tunOut, "lookup of a missing set", func(t *testing.T, r *rule) { nth[*expr.Lookup](t, r, 0).SetName = "nosuch" }},
		{"output_v4", tunOut, "lookup of another set", func(t *testing.T, r *rule) { nth[*expr.Lookup](t, r, 0).SetName = "lan_v4" }},
		{"output_v4", tunOut, "inverted lookup", func(t *testing.T, r *rule) { nth[*expr.Lookup](t, r, 0).Invert = true }},
		{"output_v4", tunOut, "map lookup", func(t *testing.T, r *rule) {
			l := nth[*expr.Lookup](t, r, 0)
			l.IsDestRegSet, l.DestRegister = true, unix.NFT_REG_2
		}},
		{"output_v4", servers, "named lookup of a missing set", func(t *testing.T, r *rule) { nth[*expr.Lookup](t, r, 0).SetName = "nosuch" }},
		{"output_v4", servers, "other server set", func(t *testing.T, r *rule) { nth[*expr.Lookup](t, r, 0).SetName = "lan_v4" }},
		{"output_v4", servers, "anonymous set with another port", func(t *testing.T, r *rule) {
			r.anon[0].elems[0].Key = concatKey([][]byte{{unix.IPPROTO_TCP}, binaryutil.BigEndian.PutUint16(444)}, true)
		}},
		{"output_v4", servers, "anonymous set with an extra element", func(t *testing.T, r *rule) {
			r.anon[0].elems = append(r.anon[0].elems, gnft.SetElement{Key: concatKey([][]byte{{unix.IPPROTO_TCP}, binaryutil.BigEndian.PutUint16(22)}, true)})
		}},
		{"output_v4", servers, "anonymous set without its lookup", func(t *testing.T, r *rule) {
			i := index[*expr.Lookup](t, r, 1)
			r.exprs = slices.Delete(r.exprs, i, i+1)
		}},
		{"input_v6", nd, "icmpv6 type set with echo request", func(t *testing.T, r *rule) {
			r.anon[0].elems = append(r.anon[0].elems, gnft.SetElement{Key: []byte{128}})
		}},
		// Verdicts.
		{"input", "ipv4", "jump elsewhere", func(t *testing.T, r *rule) { nth[*expr.Verdict](t, r, 0).Chain = "forward_v4" }},
		{"input", "ipv4", "goto instead of jump", func(t *testing.T, r *rule) { nth[*expr.Verdict](t, r, 0).Kind = expr.VerdictGoto }},
		{"output_v4", tunOut, "return instead of accept", func(t *testing.T, r *rule) { nth[*expr.Verdict](t, r, 0).Kind = expr.VerdictReturn }},
		{"output_v4", rejectAll, "reject port unreachable", func(t *testing.T, r *rule) {
			nth[*expr.Reject](t, r, 0).Code = unix.NFT_REJECT_ICMPX_PORT_UNREACH
		}},
		{"output_v4", rejectAll, "reject with icmp, not icmpx", func(t *testing.T, r *rule) {
			nth[*expr.Reject](t, r, 0).Type = unix.NFT_REJECT_ICMP_UNREACH
		}},
		{"output_v4", "fail closed: reset other tcp", "tcp reset with a code", func(t *testing.T, r *rule) {
			nth[*expr.Reject](t, r, 0).Code = 1
		}},
		{"output_v4", rejectAll, "accept instead of reject", func(t *testing.T, r *rule) {
			r.exprs[len(r.exprs)-1] = &expr.Verdict{Kind: expr.VerdictAccept}
		}},
		// Expressions of types the backend never writes.
		{"output_v4", rejectAll, "log before the verdict", func(t *testing.T, r *rule) { insert(r, len(r.exprs)-1, &expr.Log{}) }},
		{"output_v4", rejectAll, "limit instead of counter", func(t *testing.T, r *rule) {
			r.exprs[index[*expr.Counter](t, r, 0)] = &expr.Limit{Type: expr.LimitTypePkts, Rate: 1, Unit: expr.LimitTimeSecond}
		}},
		{"input_v4", lo, "immediate overwriting the register", func(t *testing.T, r *rule) {
			insert(r, index[*expr.Cmp](t, r, 0), &expr.Immediate{Register: unix.NFT_REG_1, Data: ifname("lo")})
		}},
		{"input_v4", lo, "notrack", func(t *testing.T, r *rule) { insert(r, 0, &expr.Notrack{}) }},
		{"output_v4", tunOut, "counter removed", func(t *testing.T, r *rule) {
			i := index[*expr.Counter](t, r, 0)
			r.exprs = slices.Delete(r.exprs, i, i+1)
		}},
		// Loads that change what a later comparison sees without being
		// compared themselves.
		{"output_v4", servers, "load overwriting part of the address register", func(t *testing.T, r *rule) {
			insert(r, index[*expr.Payload](t, r, 0)+1, &expr.Meta{Key: expr.MetaKeyMARK, Register: unix.NFT_REG32_00})
		}},
		{"output_v6", servers, "load overwriting the middle of the IPv6 address", func(t *testing.T, r *rule) {
			insert(r, index[*expr.Payload](t, r, 0)+1, &expr.Meta{Key: expr.MetaKeyMARK, Register: unix.NFT_REG32_01})
		}},
		{"input_v4", lo, "load overwritten before its comparison", func(t *testing.T, r *rule) {
			// meta skuid breaks the rule for packets without a socket, even
			// though iifname overwrites its value.
			insert(r, 0, &expr.Meta{Key: expr.MetaKeySKUID, Register: unix.NFT_REG_1})
		}},
		{"output_v4", rejectAll, "load that is never compared", func(t *testing.T, r *rule) {
			// meta skuid breaks the rule for packets without a socket.
			insert(r, 0, &expr.Meta{Key: expr.MetaKeySKUID, Register: unix.NFT_REG_2})
		}},
	}
	for _, c := range cases {
		orig := findRule(t, tb, c.chain, c.comment)
		mut := cloneTableRule(orig)
		c.mutate(t, mut)
		want, got := tb.ruleText(orig), tb.ruleText(mut)
		if got == want {
			t.Errorf("%s: %s %q: the tampered rule prints like the original: %s", c.name, c.chain, c.comment, got)
		}
	}
	// The original rules are untouched by the cases above.
	if got, want := tb.Text(), mustBuild(t, rules.Policy(mustConfig(t, everythingEnv), []string{"tun0", "wg0"})).Text(); got != want {
		t.Fatalf("test bug: the cases changed the built table")
	}
}

// The same, end to end: a rule tampered with in the kernel fails Check.
func TestCheckCatchesTamperedRules(t *testing.T) {
	ctx := context.Background()
	rs := rules.Policy(mustConfig(t, everythingEnv), []string{"tun0"})
	for _, c := range []struct {
		name   string
		tamper func(ft *fakeTable)
	}{
		{"wildcard loopback", func(ft *fakeTable) {
			r := ft.chain("input_v4").rules[0]
			r.Exprs[1] = &expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte("lo")}
		}},
		{"register", func(ft *fakeTable) {
			r := ft.chain("output_v4").rules[0]
			r.Exprs[1] = &expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_2, Data: ifname("lo")}
		}},
		{"comment", func(ft *fakeTable) { ft.chain("output_v4").rules[0].UserData = comment("loopback in") }},
		{"foreign rule appended", func(ft *fakeTable) {
			c := ft.chain("output_v4")
			c.rules = append(c.rules, &gnft.Rule{Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		}},
		{"rule order", func(ft *fakeTable) { c := ft.chain("output_v4"); c.rules[0], c.rules[1] = c.rules[1], c.rules[0] }},
		{"extra tunnel", func(ft *fakeTable) {
			s := ft.set(TunnelSet)
			s.elems = append(s.elems, gnft.SetElement{Key: ifname("tun9")})
		}},
		{"extra chain", func(ft *fakeTable) {
			ft.chains = append(ft.chains, &fakeChain{gc: gnft.Chain{Name: "zzz"}})
		}},
		{"set flags", func(ft *fakeTable) { ft.set(TunnelSet).gs.Interval = true }},
		{"hook", func(ft *fakeTable) { ft.chain("forward").gc.Hooknum = gnft.ChainHookPrerouting }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, k := fakeBackend()
			mustApply(t, b, rs)
			c.tamper(k.committed)
			err := NewWithConn(k.newConn).Check(ctx, rs)
			if err == nil {
				t.Fatal("Check passed")
			}
			t.Log(err)
		})
	}
}

// The header of a base chain says everything that decides which packets
// the chain sees: hook, type, priority and policy.
func TestCheckCatchesBaseChainHeader(t *testing.T) {
	ctx := context.Background()
	rs := rules.Policy(mustConfig(t, everythingEnv), nil)
	for _, c := range []struct {
		name   string
		tamper func(gc *gnft.Chain)
	}{
		{"policy accept", func(gc *gnft.Chain) { p := gnft.ChainPolicyAccept; gc.Policy = &p }},
		{"nat type", func(gc *gnft.Chain) { gc.Type = gnft.ChainTypeNAT }},
		{"route type", func(gc *gnft.Chain) { gc.Type = gnft.ChainTypeRoute }},
		{"priority", func(gc *gnft.Chain) { p := gnft.ChainPriority(*gnft.ChainPriorityFilter + 10); gc.Priority = &p }},
		{"other hook", func(gc *gnft.Chain) { gc.Hooknum = gnft.ChainHookPrerouting }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, k := fakeBackend()
			mustApply(t, b, rs)
			c.tamper(&k.committed.chain("output").gc)
			if err := NewWithConn(k.newConn).Check(ctx, rs); err == nil {
				t.Fatalf("Check passed with the output chain's %s changed", c.name)
			} else {
				t.Log(err)
			}
		})
	}
}

// The text of a table read back equals the text it was built from, for the
// golden configurations.
func TestTextRoundTripThroughFake(t *testing.T) {
	for i, env := range testConfigs() {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			rs := rules.Policy(mustConfig(t, env.env), env.tunnels)
			b, k := fakeBackend()
			mustApply(t, b, rs)
			want := mustBuild(t, rs).Text()
			if got := tableText(t, k.committed); got != want {
				t.Errorf("read back:\n%s\nbuilt:\n%s", got, want)
			}
			if !strings.HasPrefix(want, "table inet vpnfw {\n") {
				t.Errorf("text does not start with the table: %s", want)
			}
		})
	}
}
