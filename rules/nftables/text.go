package nftables

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The text form of our table reads like `nft list table inet vpnfw`. It is
// what render prints, what the golden files hold, and what Check compares:
// the desired and the live table are both rendered from their netlink
// expressions, and every expression the renderer does not know exactly is
// printed with all its fields, so two tables that differ never print alike.

// Text renders the whole table, chains nested as nft lists them.
func (t *table) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, l := range t.lines(true) {
		switch {
		case strings.HasPrefix(l, "set "):
			b.WriteString("\t" + l + "\n")
		case strings.HasPrefix(l, "chain "):
			if b.Len() > 0 && strings.Contains(b.String(), "\tchain ") {
				b.WriteString("\t}\n")
			}
			name, head, _ := strings.Cut(strings.TrimPrefix(l, "chain "), " {")
			b.WriteString("\tchain " + name + " {\n")
			if head = strings.TrimSpace(strings.TrimSuffix(head, "}")); head != "" {
				b.WriteString("\t\t" + head + "\n")
			}
		default:
			_, r, _ := strings.Cut(l, ": ")
			b.WriteString("\t\t" + r + "\n")
		}
	}
	if strings.Contains(b.String(), "\tchain ") {
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// sameBut reports whether t and o differ in nothing but the elements of
// set except: the question every up and down asks, so the named sets,
// which may hold many thousand addresses, are compared as bytes rather
// than as text.
func (t *table) sameBut(o *table, except string) bool {
	if !slices.Equal(t.lines(false), o.lines(false)) {
		return false
	}
	for _, s := range t.sets {
		if s.anonymous || s.name == except {
			continue
		}
		if os := o.set(s.name); os == nil || !slices.EqualFunc(sortedElems(s.elems), sortedElems(os.elems), elemEqual) {
			return false
		}
	}
	return true
}

func sortedElems(elems []gnft.SetElement) []gnft.SetElement {
	return slices.SortedFunc(slices.Values(elems), func(a, b gnft.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return cmpBool(a.IntervalEnd, b.IntervalEnd)
	})
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// lines renders the table a line per set, chain header and rule, sets and
// chains by name; without elements, the named sets' elements are left out.
func (t *table) lines(elements bool) []string {
	var out []string
	if t.flags != 0 {
		out = append(out, fmt.Sprintf("flags %#x", t.flags))
	}
	named := slices.DeleteFunc(slices.Clone(t.sets), func(s *set) bool { return s.anonymous })
	slices.SortFunc(named, func(a, b *set) int { return strings.Compare(a.name, b.name) })
	for _, s := range named {
		l := fmt.Sprintf("set %s { type %s;", s.name, s.keyType.Name)
		if s.interval {
			l += " flags interval;"
		}
		if elements {
			l += " elements = " + elemsText(s) + ";"
		}
		out = append(out, l+" }")
	}
	chains := slices.Clone(t.chains)
	slices.SortStableFunc(chains, func(a, b *chain) int { return strings.Compare(a.name, b.name) })
	for _, c := range chains {
		if c.hook != nil {
			policy := "drop"
			if c.policy != gnft.ChainPolicyDrop {
				policy = strconv.Itoa(int(c.policy))
			}
			priority := "filter"
			if c.priority != *gnft.ChainPriorityFilter {
				priority = strconv.Itoa(int(c.priority))
			}
			out = append(out, fmt.Sprintf("chain %s { type %s hook %s priority %s; policy %s; }", c.name, c.typ, hookName(*c.hook), priority, policy))
		} else {
			out = append(out, fmt.Sprintf("chain %s {}", c.name))
		}
		for _, r := range c.rules {
			out = append(out, fmt.Sprintf("  %s: %s comment %q", c.name, t.ruleText(r), commentPrefix+r.comment))
		}
	}
	return out
}

func hookName(h gnft.ChainHook) string {
	for name, n := range map[string]*gnft.ChainHook{"input": gnft.ChainHookInput, "output": gnft.ChainHookOutput, "forward": gnft.ChainHookForward} {
		if *n == h {
			return name
		}
	}
	return fmt.Sprintf("hook%d", h)
}

// ruleText renders the expressions of one rule. Registers are tracked by
// 32-bit slot, so a value loaded into one and compared from another does
// not print as a match. A load prints through what reads it; a load that
// nothing reads, or that a later load overwrites before it is read, still
// changes the rule (a load can end the rule's evaluation) and prints with
// all its fields, and overwriting part of a value unnames it.
func (t *table) ruleText(r *rule) string {
	type value struct {
		name  string
		slots uint32
		read  bool
		load  expr.Any
	}
	regs := map[uint32]*value{}
	var words []string
	anon := r.anon
	unread := func(v *value) {
		if !v.read {
			words = append(words, fmt.Sprintf("%T%+v", v.load, v.load))
		}
	}
	load := func(reg, size uint32, name string, e expr.Any) {
		at, n := slot(reg), max((size+3)/4, 1)
		var over []uint32
		for s, v := range regs {
			if s < at+n && at < s+v.slots {
				over = append(over, s)
			}
		}
		slices.Sort(over)
		for _, s := range over {
			unread(regs[s])
			delete(regs, s)
		}
		regs[at] = &value{name: name, slots: n, load: e}
	}
	lookupName := func(reg uint32) (string, bool) {
		v, ok := regs[slot(reg)]
		if !ok {
			return "", false
		}
		v.read = true
		return v.name, true
	}
	for _, e := range r.exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if name, ok := metaNames[e.Key]; ok && !e.SourceRegister {
				load(e.Register, metaLen[e.Key], name, e)
				continue
			}
		case *expr.Payload:
			if name, ok := payloadName(e); ok {
				load(e.DestRegister, e.Len, name, e)
				continue
			}
		case *expr.Ct:
			if name, ok := ctName(e); ok {
				load(e.Register, ctLen[e.Key], name, e)
				continue
			}
		case *expr.Bitwise:
			if v := regs[slot(e.SourceRegister)]; v != nil && v.name == "ct state" && e.DestRegister == e.SourceRegister && e.Len == 4 &&
				bytes.Equal(e.Mask, binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)) &&
				bytes.Equal(e.Xor, make([]byte, 4)) {
				v.read = true
				load(e.DestRegister, e.Len, "ct state established,related", e)
				continue
			}
		case *expr.Cmp:
			name, ok := lookupName(e.Register)
			if !ok {
				break
			}
			if name == "ct state established,related" && e.Op == expr.CmpOpNeq && bytes.Equal(e.Data, make([]byte, 4)) {
				words = append(words, name)
				continue
			}
			op := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= "}[e.Op]
			if e.Op != expr.CmpOpEq && e.Op != expr.CmpOpNeq {
				op = fmt.Sprintf("op%d ", e.Op)
			}
			words = append(words, fmt.Sprintf("%s %s%s", name, op, valueText(name, e.Data)))
			continue
		case *expr.Lookup:
			var s *set
			if n := t.set(e.SetName); n != nil && !n.anonymous {
				s = n
			} else if len(anon) > 0 {
				s, anon = anon[0], anon[1:]
			}
			if s == nil || e.IsDestRegSet {
				break
			}
			parts := len(gnft.ConcatSetTypeElements(s.keyType))
			var keys []string
			for i := range parts {
				k, ok := lookupName(slot(e.SourceRegister) + uint32(i))
				if !ok {
					k = fmt.Sprintf("reg%d", slot(e.SourceRegister)+uint32(i))
				}
				keys = append(keys, k)
			}
			target := "@" + s.name
			if s.anonymous {
				target = elemsText(s)
			}
			op := ""
			if e.Invert {
				op = "!= "
			}
			words = append(words, fmt.Sprintf("%s %s%s", strings.Join(keys, " . "), op, target))
			continue
		case *expr.Counter:
			words = append(words, "counter")
			continue
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				words = append(words, "accept")
				continue
			case expr.VerdictDrop:
				words = append(words, "drop")
				continue
			case expr.VerdictJump:
				words = append(words, "jump "+e.Chain)
				continue
			}
		case *expr.Reject:
			switch {
			case e.Type == unix.NFT_REJECT_ICMPX_UNREACH && e.Code == unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED:
				words = append(words, "reject with icmpx admin-prohibited")
				continue
			case e.Type == unix.NFT_REJECT_TCP_RST && e.Code == 0:
				words = append(words, "reject with tcp reset")
				continue
			}
		}
		// Not a form this backend writes: print every field.
		words = append(words, fmt.Sprintf("%T%+v", e, e))
	}
	for _, s := range slices.Sorted(maps.Keys(regs)) {
		unread(regs[s])
	}
	return strings.Join(words, " ")
}

// slot maps a register to its first 32-bit slot: reg 1 is slots 8 to 11.
func slot(reg uint32) uint32 {
	if reg >= unix.NFT_REG_1 && reg <= unix.NFT_REG_4 {
		return unix.NFT_REG32_00 + (reg-unix.NFT_REG_1)*4
	}
	return reg
}

// metaLen and ctLen are the sizes of the values the named loads write.
var metaLen = map[expr.MetaKey]uint32{
	expr.MetaKeyNFPROTO: 1, expr.MetaKeyIIFNAME: unix.IFNAMSIZ, expr.MetaKeyOIFNAME: unix.IFNAMSIZ,
	expr.MetaKeyL4PROTO: 1, expr.MetaKeyMARK: 4, expr.MetaKeySKUID: 4,
}

var ctLen = map[expr.CtKey]uint32{expr.CtKeySTATE: 4, expr.CtKeyDIRECTION: 1}

var metaNames = map[expr.MetaKey]string{
	expr.MetaKeyNFPROTO: "meta nfproto",
	expr.MetaKeyIIFNAME: "iifname",
	expr.MetaKeyOIFNAME: "oifname",
	expr.MetaKeyL4PROTO: "meta l4proto",
	expr.MetaKeyMARK:    "meta mark",
	expr.MetaKeySKUID:   "meta skuid",
}

func payloadName(p *expr.Payload) (string, bool) {
	if p.OperationType != expr.PayloadLoad || p.SourceRegister != 0 || p.CsumType != 0 || p.CsumOffset != 0 || p.CsumFlags != 0 {
		return "", false
	}
	type at struct {
		base     expr.PayloadBase
		off, len uint32
	}
	name, ok := map[at]string{
		{expr.PayloadBaseNetworkHeader, 12, 4}:  "ip saddr",
		{expr.PayloadBaseNetworkHeader, 16, 4}:  "ip daddr",
		{expr.PayloadBaseNetworkHeader, 8, 16}:  "ip6 saddr",
		{expr.PayloadBaseNetworkHeader, 24, 16}: "ip6 daddr",
		{expr.PayloadBaseNetworkHeader, 7, 1}:   "ip6 hoplimit",
		{expr.PayloadBaseTransportHeader, 0, 2}: "th sport",
		{expr.PayloadBaseTransportHeader, 2, 2}: "th dport",
		{expr.PayloadBaseTransportHeader, 0, 1}: "icmpv6 type",
	}[at{p.Base, p.Offset, p.Len}]
	return name, ok
}

func ctName(c *expr.Ct) (string, bool) {
	if c.SourceRegister || c.Direction != 0 {
		return "", false
	}
	name, ok := map[expr.CtKey]string{expr.CtKeySTATE: "ct state", expr.CtKeyDIRECTION: "ct direction"}[c.Key]
	return name, ok
}

var protoNames = map[byte]string{unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_ICMPV6: "ipv6-icmp", unix.IPPROTO_GRE: "gre"}

// valueText prints a compared value the way its load reads; a value of an
// unexpected length prints in hex.
func valueText(name string, d []byte) string {
	switch {
	case (name == "iifname" || name == "oifname") && len(d) == unix.IFNAMSIZ:
		if i := bytes.IndexByte(d, 0); i > 0 && !slices.ContainsFunc(d[i:], func(c byte) bool { return c != 0 }) {
			return strconv.Quote(string(d[:i]))
		}
	case name == "meta nfproto" && len(d) == 1:
		if n, ok := map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[d[0]]; ok {
			return n
		}
	case name == "ct direction" && len(d) == 1:
		if n, ok := map[byte]string{0: "original", 1: "reply"}[d[0]]; ok {
			return n
		}
	case name == "meta l4proto" && len(d) == 1:
		if n, ok := protoNames[d[0]]; ok {
			return n
		}
		return strconv.Itoa(int(d[0]))
	case strings.HasSuffix(name, "port") && len(d) == 2:
		return strconv.Itoa(int(binaryutil.BigEndian.Uint16(d)))
	case name == "meta mark" && len(d) == 4:
		return fmt.Sprintf("0x%08x", binaryutil.NativeEndian.Uint32(d))
	case name == "meta skuid" && len(d) == 4:
		return strconv.FormatUint(uint64(binaryutil.NativeEndian.Uint32(d)), 10)
	case (name == "ip6 hoplimit" || name == "icmpv6 type") && len(d) == 1:
		return strconv.Itoa(int(d[0]))
	}
	return "0x" + hex.EncodeToString(d)
}

// elemsText prints a set's elements, sorted, each as its key type reads.
func elemsText(s *set) string {
	var items []string
	if s.interval {
		items = intervalText(s.elems)
	} else {
		types := gnft.ConcatSetTypeElements(s.keyType)
		for _, e := range s.elems {
			items = append(items, keyText(e.Key, types, s.concat))
		}
	}
	slices.Sort(items)
	if len(items) == 0 {
		return "{ }"
	}
	return "{ " + strings.Join(items, ", ") + " }"
}

func keyText(k []byte, types []gnft.SetDatatype, concat bool) string {
	var parts []string
	for _, t := range types {
		n := int(t.Bytes)
		if len(k) < n {
			return "0x" + hex.EncodeToString(k)
		}
		v := k[:n]
		step := n
		if concat && n%4 != 0 {
			step += 4 - n%4
		}
		if len(k) < step {
			return "0x" + hex.EncodeToString(k)
		}
		k = k[step:]
		switch t.Name {
		case gnft.TypeIFName.Name:
			parts = append(parts, valueText("iifname", v))
		case gnft.TypeInetProto.Name:
			parts = append(parts, valueText("meta l4proto", v))
		case gnft.TypeInetService.Name:
			parts = append(parts, valueText("th dport", v))
		case gnft.TypeICMP6Type.Name:
			parts = append(parts, valueText("icmpv6 type", v))
		default:
			parts = append(parts, "0x"+hex.EncodeToString(v))
		}
	}
	if len(k) > 0 {
		parts = append(parts, "0x"+hex.EncodeToString(k))
	}
	return strings.Join(parts, " . ")
}

// intervalText prints an interval set's elements as prefixes where they are
// one, else as ranges; a start without an end runs to the top.
func intervalText(elems []gnft.SetElement) []string {
	sorted := slices.Clone(elems)
	slices.SortStableFunc(sorted, func(a, b gnft.SetElement) int { return bytes.Compare(a.Key, b.Key) })
	var out []string
	for i := 0; i < len(sorted); i++ {
		e := sorted[i]
		lo, ok := netip.AddrFromSlice(e.Key)
		if !ok || e.IntervalEnd {
			out = append(out, fmt.Sprintf("end 0x%s", hex.EncodeToString(e.Key)))
			continue
		}
		var hi netip.Addr // exclusive; invalid: the top of the space
		if i+1 < len(sorted) && sorted[i+1].IntervalEnd {
			if hi, ok = netip.AddrFromSlice(sorted[i+1].Key); !ok || hi.BitLen() != lo.BitLen() {
				out = append(out, fmt.Sprintf("%s-0x%s", lo, hex.EncodeToString(sorted[i+1].Key)))
				i++
				continue
			}
			i++
		}
		out = append(out, rangeText(lo, hi))
	}
	return out
}

// rangeText prints [lo, hi) as a prefix when it is one.
func rangeText(lo, hi netip.Addr) string {
	for bits := 0; bits <= lo.BitLen(); bits++ {
		p := netip.PrefixFrom(lo, bits)
		if p.Masked().Addr() != lo {
			continue
		}
		next := lastAddr(p).Next()
		if next == hi || !hi.IsValid() && !next.IsValid() {
			if p.IsSingleIP() {
				return lo.String()
			}
			return p.String()
		}
	}
	last := "top"
	if hi.IsValid() {
		last = hi.Prev().String()
	}
	return lo.String() + "-" + last
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(a)*8; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	addr, _ := netip.AddrFromSlice(a)
	return addr
}
