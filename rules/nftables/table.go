// Package nftables applies a rules.Ruleset over netlink, without the nft
// program: one `table inet vpnfw` of the project's own, whose base chains
// drop by policy, changed in one batch per state change.
//
// In nftables a drop in any table is final, and an accept in another table
// is not: whatever ufw, firewalld, Docker or an administrator add elsewhere,
// a packet our table drops stays dropped.
package nftables

import (
	"fmt"
	"net/netip"
	"slices"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/vpnfw/vpnfw/rules"
)

// TableName is the project's table, in the inet family.
const TableName = "vpnfw"

// TunnelSet is the named set of the allowed tunnel devices: up and down
// change its elements and nothing else.
const TunnelSet = "tunnels"

const commentPrefix = "vpnfw: "

var hookNums = [...]*gnft.ChainHook{rules.Input: gnft.ChainHookInput, rules.Output: gnft.ChainHookOutput, rules.Forward: gnft.ChainHookForward}

// famSuffix names a family's regular chains and address sets.
var famSuffix = [...]string{rules.IPv4: "_v4", rules.IPv6: "_v6"}

var nfproto = [...]byte{rules.IPv4: unix.NFPROTO_IPV4, rules.IPv6: unix.NFPROTO_IPV6}

// Registers as nft uses them: a value in reg 1, the further parts of a
// concatenation in the 32-bit registers after it.
const (
	reg1    = unix.NFT_REG_1
	reg32_1 = unix.NFT_REG32_01
)

// table is the desired or the live content of our table, in the form both
// Apply and Check work on: named sets with their elements, then chains
// with their rules in order.
type table struct {
	// flags of a live table: another tool may have set them (dormant
	// unhooks every chain). Ours has none.
	flags  uint32
	sets   []*set
	chains []*chain
}

type set struct {
	name     string
	keyType  gnft.SetDatatype
	interval bool
	// anonymous sets belong to one rule and are never changed.
	anonymous bool
	concat    bool
	elems     []gnft.SetElement
	// id links an anonymous set to its rule's lookup within one batch.
	id uint32
}

type chain struct {
	name string
	hook *gnft.ChainHook // nil for a regular chain
	// type and priority of a base chain; ours are filter chains at the
	// filter priority.
	typ      gnft.ChainType
	priority gnft.ChainPriority
	// policy of a base chain; ours is always drop.
	policy gnft.ChainPolicy
	rules  []*rule
}

type rule struct {
	comment string
	exprs   []expr.Any
	anon    []*set
	counter *expr.Counter // live rules only
}

func (t *table) set(name string) *set {
	for _, s := range t.sets {
		if s.name == name {
			return s
		}
	}
	return nil
}

// build turns a ruleset into our table. One inet table holds both families:
// each base chain sends a packet to the regular chain of its family, which
// holds that family's rules in order. Tunnels and addresses are named sets,
// so the rule path per packet does not grow with their number.
func build(rs *rules.Ruleset) (*table, error) {
	t := &table{}
	tunnels := &set{name: TunnelSet, keyType: gnft.TypeIFName}
	for _, dev := range rs.Tunnels {
		tunnels.elems = append(tunnels.elems, gnft.SetElement{Key: ifname(dev)})
	}
	t.sets = append(t.sets, tunnels)
	for _, h := range rules.Hooks {
		base := &chain{name: h.String(), hook: hookNums[h], typ: gnft.ChainTypeFilter, priority: *gnft.ChainPriorityFilter, policy: gnft.ChainPolicyDrop}
		t.chains = append(t.chains, base)
		for _, tb := range rs.Tables {
			fam := tb.Family
			sub := &chain{name: h.String() + famSuffix[fam]}
			t.chains = append(t.chains, sub)
			base.rules = append(base.rules, &rule{comment: fam.String(), exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto[fam]}},
				&expr.Verdict{Kind: expr.VerdictJump, Chain: sub.name},
			}})
			for _, r := range tb.Chains[h].Rules {
				built, err := buildRule(t, fam, r)
				if err != nil {
					return nil, fmt.Errorf("%s %s: rule %q: %w", fam, h, r.Purpose, err)
				}
				sub.rules = append(sub.rules, built...)
			}
		}
	}
	return t, nil
}

// buildRule renders one rule of the policy. Its L4 entries of one shape
// (protocol only, with ports, with an ICMPv6 type) share one rule and one
// set lookup; entries of different shapes need a rule each, with the same
// comment.
func buildRule(t *table, fam rules.Family, r rules.Rule) ([]*rule, error) {
	var head []expr.Any
	if len(r.Src) > 0 || len(r.Dst) > 0 || r.HopLimit255 {
		// Redundant in the family's own chain, but without it nft lists the
		// addresses as raw header bits (@nh,96,32) instead of ip saddr.
		head = append(head, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto[fam]}})
	}
	if r.InIface != "" {
		head = append(head, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname(r.InIface)})
	}
	if r.OutIface != "" {
		head = append(head, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname(r.OutIface)})
	}
	if r.InTunnel {
		head = append(head, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: TunnelSet})
	}
	if r.OutTunnel {
		head = append(head, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: TunnelSet})
	}
	if r.CtOriginal {
		// A reply is matched by its own header in the reply direction of its
		// flow: its source is where the flow went, its source port the port
		// it went to. google/nftables v0.3.0 cannot read back a ct
		// expression with a direction (ct original daddr), and what the
		// backend cannot read back it cannot check. The difference from
		// the original tuple: ICMP errors that routers on the way send
		// about the flow are not let in; replies of the flow are.
		head = append(head, &expr.Ct{Key: expr.CtKeyDIRECTION, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}})
	}
	for _, a := range []struct {
		prefixes []netip.Prefix
		src      bool
	}{{r.Src, true}, {r.Dst, r.CtOriginal}} {
		if len(a.prefixes) == 0 {
			continue
		}
		name, err := addrSet(t, fam, r.AddrSet, a.prefixes)
		if err != nil {
			return nil, err
		}
		head = append(head, addrLoad(fam, a.src), &expr.Lookup{SourceRegister: reg1, SetName: name})
	}
	var tail []expr.Any
	if r.HopLimit255 {
		if fam != rules.IPv6 {
			return nil, fmt.Errorf("a hop limit match is IPv6 only")
		}
		tail = append(tail, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 7, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{255}})
	}
	if r.Mark != 0 {
		tail = append(tail, &expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(r.Mark)})
	}
	if r.UID != nil {
		tail = append(tail, &expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(*r.UID)})
	}
	if r.CtEstablished {
		tail = append(tail, &expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)})
	}
	verdict, err := verdictExprs(r.Verdict)
	if err != nil {
		return nil, err
	}
	groups, err := l4Groups(fam, r)
	if err != nil {
		return nil, err
	}
	var out []*rule
	for _, g := range groups {
		var l4 []expr.Any
		var gAnon []*set
		loads, keys, types := g.loads, g.keys, g.types
		if len(loads) > 1 && !slices.ContainsFunc(keys, func(k [][]byte) bool { return k[0][0] != keys[0][0][0] }) {
			// One protocol: matched on its own, which is also what nft needs
			// to list the ports or type that follow by name.
			l4 = append(l4, loads[0](reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: keys[0][0]})
			loads, types = loads[1:], types[1:]
			keys = slices.Clone(keys)
			for i := range keys {
				keys[i] = keys[i][1:]
			}
		}
		switch {
		case len(keys) == 1:
			for i, load := range loads {
				l4 = append(l4, load(reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: keys[0][i]})
			}
		default:
			s := &set{anonymous: true, keyType: types[0], concat: len(types) > 1}
			if s.concat {
				s.keyType = gnft.MustConcatSetType(types...)
			}
			for _, k := range keys {
				s.elems = append(s.elems, gnft.SetElement{Key: concatKey(k, s.concat)})
			}
			for i, load := range loads {
				reg := uint32(reg1)
				if i > 0 {
					reg = uint32(reg32_1 + i - 1)
				}
				l4 = append(l4, load(reg))
			}
			l4 = append(l4, &expr.Lookup{SourceRegister: reg1})
			gAnon = append(gAnon, s)
		}
		exprs := slices.Concat(head, l4, tail, []expr.Any{&expr.Counter{}}, verdict)
		out = append(out, &rule{comment: r.Purpose, exprs: exprs, anon: gAnon})
	}
	return out, nil
}

// addrLoad loads a packet's source or destination address.
func addrLoad(fam rules.Family, src bool) expr.Any {
	off, n := uint32(16), uint32(4)
	if src {
		off = 12
	}
	if fam == rules.IPv6 {
		off, n = 24, 16
		if src {
			off = 8
		}
	}
	return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
}

// addrSet declares the named address set of a rule, or checks that the set
// already declared under that name holds the same addresses.
func addrSet(t *table, fam rules.Family, name string, prefixes []netip.Prefix) (string, error) {
	if name == "" {
		return "", fmt.Errorf("addresses without a set name")
	}
	name += famSuffix[fam]
	keyType := gnft.TypeIPAddr
	if fam == rules.IPv6 {
		keyType = gnft.TypeIP6Addr
	}
	elems, err := intervalElements(fam, prefixes)
	if err != nil {
		return "", err
	}
	if s := t.set(name); s != nil {
		if !slices.EqualFunc(s.elems, elems, elemEqual) {
			return "", fmt.Errorf("set %s is declared twice with different addresses", name)
		}
		return name, nil
	}
	t.sets = append(t.sets, &set{name: name, keyType: keyType, interval: true, elems: elems})
	return name, nil
}

func elemEqual(a, b gnft.SetElement) bool {
	return slices.Equal(a.Key, b.Key) && a.IntervalEnd == b.IntervalEnd
}

// intervalElements turns prefixes into the elements of an interval set:
// overlapping and adjacent prefixes merged (the kernel refuses overlaps),
// each range as its first address and, flagged as its end, the address
// after its last. A range that ends at the top of the address space has no
// end element.
func intervalElements(fam rules.Family, prefixes []netip.Prefix) ([]gnft.SetElement, error) {
	bits := 32
	if fam == rules.IPv6 {
		bits = 128
	}
	type span struct{ lo, last netip.Addr } // last is inclusive
	spans := make([]span, 0, len(prefixes))
	for _, p := range prefixes {
		if p.Addr().BitLen() != bits {
			return nil, fmt.Errorf("%s is not an %s prefix", p, fam)
		}
		p = p.Masked()
		spans = append(spans, span{p.Addr(), lastAddr(p)})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo.Compare(b.lo) })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 {
			// Overlapping or adjacent: the kernel wants one range. A range
			// that reaches the top takes everything after it.
			m := &merged[n-1]
			if next := m.last.Next(); !next.IsValid() || s.lo.Compare(next) <= 0 {
				if s.last.Compare(m.last) > 0 {
					m.last = s.last
				}
				continue
			}
		}
		merged = append(merged, s)
	}
	out := make([]gnft.SetElement, 0, 2*len(merged))
	for _, s := range merged {
		out = append(out, gnft.SetElement{Key: s.lo.AsSlice()})
		if end := s.last.Next(); end.IsValid() {
			out = append(out, gnft.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out, nil
}

// l4Group is the L4 entries of one shape: what is loaded, and each entry's
// value for every load.
type l4Group struct {
	entries []rules.L4
	loads   []func(reg uint32) expr.Any
	keys    [][][]byte
	types   []gnft.SetDatatype
}

func l4Groups(fam rules.Family, r rules.Rule) ([]l4Group, error) {
	if len(r.L4) == 0 {
		return []l4Group{{entries: []rules.L4{{}}, keys: [][][]byte{nil}}}, nil
	}
	type shape struct{ sport, dport, icmp bool }
	var order []shape
	groups := map[shape]*l4Group{}
	for _, l := range r.L4 {
		proto, err := protoNumber(l.Proto)
		if err != nil {
			return nil, err
		}
		if l.Proto == rules.ICMPv6 && fam != rules.IPv6 {
			return nil, fmt.Errorf("ICMPv6 in %s", fam)
		}
		if (l.SrcPort != 0 || l.DstPort != 0) && l.Proto != rules.TCP && l.Proto != rules.UDP {
			return nil, fmt.Errorf("ports on %s", l.Proto)
		}
		sport, dport := l.SrcPort, l.DstPort
		if r.CtOriginal {
			// The reply's ports are the flow's, swapped.
			sport, dport = dport, sport
		}
		sh := shape{sport: sport != 0, dport: dport != 0, icmp: l.ICMPType != 0}
		g := groups[sh]
		if g == nil {
			g = &l4Group{}
			g.loads = append(g.loads, func(reg uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg} })
			types := []gnft.SetDatatype{gnft.TypeInetProto}
			for _, p := range []struct {
				on  bool
				off uint32
			}{{sh.sport, 0}, {sh.dport, 2}} {
				if !p.on {
					continue
				}
				types = append(types, gnft.TypeInetService)
				g.loads = append(g.loads, func(reg uint32) expr.Any {
					return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: p.off, Len: 2}
				})
			}
			if sh.icmp {
				types = append(types, gnft.TypeICMP6Type)
				g.loads = append(g.loads, func(reg uint32) expr.Any {
					return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1}
				})
			}
			g.types = types
			groups[sh] = g
			order = append(order, sh)
		}
		key := [][]byte{{proto}}
		if sh.sport {
			key = append(key, binaryutil.BigEndian.PutUint16(sport))
		}
		if sh.dport {
			key = append(key, binaryutil.BigEndian.PutUint16(dport))
		}
		if sh.icmp {
			key = append(key, []byte{l.ICMPType})
		}
		g.entries = append(g.entries, l)
		g.keys = append(g.keys, key)
	}
	out := make([]l4Group, 0, len(order)+1)
	for _, sh := range order {
		out = append(out, *groups[sh])
	}
	if r.CtOriginal {
		// The flows' ICMP errors from the same addresses (a server's port
		// unreachable): the tuple they belong to is one of the flows
		// above, which the reply direction and the source stand for.
		icmp := byte(unix.IPPROTO_ICMP)
		if fam == rules.IPv6 {
			icmp = unix.IPPROTO_ICMPV6
		}
		out = append(out, l4Group{entries: []rules.L4{{}}, keys: [][][]byte{{{icmp}}}, types: []gnft.SetDatatype{gnft.TypeInetProto},
			loads: []func(uint32) expr.Any{func(reg uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg} }}})
	}
	return out, nil
}

// concatKey joins the parts of a key; in a concatenation each part fills
// whole 32-bit registers.
func concatKey(parts [][]byte, concat bool) []byte {
	var k []byte
	for _, p := range parts {
		k = append(k, p...)
		if concat && len(p)%4 != 0 {
			k = append(k, make([]byte, 4-len(p)%4)...)
		}
	}
	return k
}

func protoNumber(p rules.Proto) (byte, error) {
	switch p {
	case rules.TCP:
		return unix.IPPROTO_TCP, nil
	case rules.UDP:
		return unix.IPPROTO_UDP, nil
	case rules.ICMPv6:
		return unix.IPPROTO_ICMPV6, nil
	case rules.GRE:
		return unix.IPPROTO_GRE, nil
	}
	return 0, fmt.Errorf("unknown protocol %q", p)
}

func verdictExprs(v rules.Verdict) ([]expr.Any, error) {
	switch v {
	case rules.Accept:
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}, nil
	case rules.Drop:
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}, nil
	case rules.Reject:
		// ICMPX picks ICMP or ICMPv6 by the packet: administratively prohibited.
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}, nil
	case rules.RejectTCPReset:
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}, nil
	}
	return nil, fmt.Errorf("unknown verdict %v", v)
}

// ifname is an interface name as the kernel compares it: NUL-padded to
// IFNAMSIZ, so "tun1" never matches "tun10".
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func comment(c string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, commentPrefix+c)
}
