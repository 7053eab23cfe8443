package nftables

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	gnft "github.com/google/nftables"

	"github.com/vpnfw/vpnfw/rules"
)

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		p, err := rules.ParsePrefix(s)
		if err != nil {
			// The top of the space and ::/0 are refused by the config but
			// intervalElements has to handle them all the same.
			if p, err = netip.ParsePrefix(s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		out = append(out, p)
	}
	return out
}

// elemString prints elements as start and end addresses: "10.0.0.0 end 11.0.0.0".
func elemString(t *testing.T, elems []gnft.SetElement) string {
	t.Helper()
	var out []string
	for _, e := range elems {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			t.Fatalf("element key %x is not an address", e.Key)
		}
		if e.IntervalEnd {
			out = append(out, "end "+a.String())
		} else {
			out = append(out, a.String())
		}
	}
	return strings.Join(out, " ")
}

func TestIntervalElements(t *testing.T) {
	for _, c := range []struct {
		fam   rules.Family
		in    []string
		elems string
		text  string
	}{
		{rules.IPv4, []string{"192.0.2.10"}, "192.0.2.10 end 192.0.2.11", "192.0.2.10"},
		{rules.IPv4, []string{"192.0.2.10", "192.0.2.12"}, "192.0.2.10 end 192.0.2.11 192.0.2.12 end 192.0.2.13", "192.0.2.10, 192.0.2.12"},
		// Adjacent single addresses merge into a range, which prints as the prefix it is.
		{rules.IPv4, []string{"192.0.2.11", "192.0.2.10"}, "192.0.2.10 end 192.0.2.12", "192.0.2.10/31"},
		{rules.IPv4, []string{"192.0.2.9", "192.0.2.10"}, "192.0.2.9 end 192.0.2.11", "192.0.2.9-192.0.2.10"},
		// Overlapping: the covered prefix disappears, in either order.
		{rules.IPv4, []string{"10.0.0.0/8", "10.1.0.0/16"}, "10.0.0.0 end 11.0.0.0", "10.0.0.0/8"},
		{rules.IPv4, []string{"10.1.0.0/16", "10.0.0.0/8", "10.255.255.255"}, "10.0.0.0 end 11.0.0.0", "10.0.0.0/8"},
		// Adjacent prefixes that form a larger prefix.
		{rules.IPv4, []string{"198.51.100.0/24", "198.51.101.0/24"}, "198.51.100.0 end 198.51.102.0", "198.51.100.0/23"},
		// Adjacent prefixes that do not: a range.
		{rules.IPv4, []string{"198.51.101.0/24", "198.51.102.0/24"}, "198.51.101.0 end 198.51.103.0", "198.51.101.0-198.51.102.255"},
		{rules.IPv4, []string{"198.51.100.0/24", "198.51.101.0/24", "198.51.102.0/24"}, "198.51.100.0 end 198.51.103.0", "198.51.100.0-198.51.102.255"},
		// A gap of one address keeps two ranges.
		{rules.IPv4, []string{"198.51.100.0/25", "198.51.100.129/32"}, "198.51.100.0 end 198.51.100.128 198.51.100.129 end 198.51.100.130", "198.51.100.0/25, 198.51.100.129"},
		// The top of the address space: no end element.
		{rules.IPv4, []string{"255.255.255.255"}, "255.255.255.255", "255.255.255.255"},
		{rules.IPv4, []string{"255.255.255.254/31"}, "255.255.255.254", "255.255.255.254/31"},
		{rules.IPv4, []string{"128.0.0.0/1", "10.0.0.0/8"}, "10.0.0.0 end 11.0.0.0 128.0.0.0", "10.0.0.0/8, 128.0.0.0/1"},
		{rules.IPv4, []string{"255.255.255.253", "255.255.255.254/31"}, "255.255.255.253", "255.255.255.253-top"},
		{rules.IPv4, []string{"0.0.0.0/0"}, "0.0.0.0", "0.0.0.0/0"},
		{rules.IPv4, []string{"0.0.0.0/0", "192.0.2.10"}, "0.0.0.0", "0.0.0.0/0"},
		// The bottom of the space.
		{rules.IPv4, []string{"0.0.0.0/8"}, "0.0.0.0 end 1.0.0.0", "0.0.0.0/8"},
		// IPv6.
		{rules.IPv6, []string{"2001:db8::10"}, "2001:db8::10 end 2001:db8::11", "2001:db8::10"},
		{rules.IPv6, []string{"2001:db8:1::/48", "2001:db8::/32"}, "2001:db8:: end 2001:db9::", "2001:db8::/32"},
		{rules.IPv6, []string{"2001:db8::/48", "2001:db8:1::/48"}, "2001:db8:: end 2001:db8:2::", "2001:db8::/47"},
		{rules.IPv6, []string{"2001:db8:1::/48", "2001:db8:2::/48"}, "2001:db8:1:: end 2001:db8:3::", "2001:db8:1::-2001:db8:2:ffff:ffff:ffff:ffff:ffff"},
		{rules.IPv6, []string{"fd00::/64", "2001:db8::10"}, "2001:db8::10 end 2001:db8::11 fd00:: end fd00:0:0:1::", "2001:db8::10, fd00::/64"},
		{rules.IPv6, []string{"8000::/1"}, "8000::", "8000::/1"},
		{rules.IPv6, []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"}, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{rules.IPv6, []string{"::/0"}, "::", "::/0"},
	} {
		elems, err := intervalElements(c.fam, prefixes(t, c.in...))
		if err != nil {
			t.Errorf("%v %v: %v", c.fam, c.in, err)
			continue
		}
		if got := elemString(t, elems); got != c.elems {
			t.Errorf("%v %v: elements %s, want %s", c.fam, c.in, got, c.elems)
		}
		if got := strings.Join(intervalText(elems), ", "); got != c.text {
			t.Errorf("%v %v: text %s, want %s", c.fam, c.in, got, c.text)
		}
	}
}

func TestIntervalElementsRefusesOtherFamily(t *testing.T) {
	if _, err := intervalElements(rules.IPv4, prefixes(t, "192.0.2.10", "2001:db8::10")); err == nil {
		t.Error("an IPv6 prefix in an IPv4 set was accepted")
	}
	if _, err := intervalElements(rules.IPv6, prefixes(t, "192.0.2.10")); err == nil {
		t.Error("an IPv4 prefix in an IPv6 set was accepted")
	}
}

// The elements of random prefix lists cover exactly the addresses the
// prefixes do, as sorted, disjoint, non-adjacent ranges; their text lists
// them as prefixes where they are one. Addresses are drawn from two small
// windows, one at the top of the space.
func TestIntervalElementsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, base := range []netip.Addr{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("255.255.255.0"),
		netip.MustParseAddr("2001:db8::"), netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00")} {
		bits := base.BitLen()
		for range 2000 {
			var ps []netip.Prefix
			for range 1 + rng.IntN(6) {
				off := rng.IntN(256)
				b := bits - 8 + rng.IntN(9) // a /24 to a /32 in IPv4
				a := base.As16()
				if base.Is4() {
					a4 := base.As4()
					a4[3] = byte(off)
					ps = append(ps, netip.PrefixFrom(netip.AddrFrom4(a4), b).Masked())
				} else {
					a[15] = byte(off)
					ps = append(ps, netip.PrefixFrom(netip.AddrFrom16(a), b).Masked())
				}
			}
			fam := rules.IPv4
			if !base.Is4() {
				fam = rules.IPv6
			}
			elems, err := intervalElements(fam, ps)
			if err != nil {
				t.Fatal(err)
			}
			// Elements alternate start, end; keys strictly increase; a
			// start is never the end before it (adjacent ranges merge).
			for i, e := range elems {
				if e.IntervalEnd != (i%2 == 1) && !(i == len(elems)-1 && !e.IntervalEnd) {
					t.Fatalf("%v: element %d has IntervalEnd %v: %s", ps, i, e.IntervalEnd, elemString(t, elems))
				}
				if i > 0 && bytes.Compare(elems[i-1].Key, e.Key) >= 0 {
					t.Fatalf("%v: elements not strictly increasing: %s", ps, elemString(t, elems))
				}
			}
			// Membership of every address of the window.
			for off := range 256 {
				a := base.AsSlice()
				a[len(a)-1] = byte(off)
				addr, _ := netip.AddrFromSlice(a)
				want := slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(addr) })
				if got := inElements(elems, addr); got != want {
					t.Fatalf("%v: %s in elements = %v, want %v: %s", ps, addr, got, want, elemString(t, elems))
				}
			}
			// The text names the same addresses.
			for _, item := range intervalText(elems) {
				if strings.HasPrefix(item, "end ") || strings.Contains(item, "0x") {
					t.Fatalf("%v: text item %q", ps, item)
				}
			}
			round, err := intervalElements(fam, textPrefixes(t, intervalText(elems)))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(round, elems, elemEqual) {
				t.Fatalf("%v: text %v does not round-trip: %s vs %s", ps, intervalText(elems), elemString(t, round), elemString(t, elems))
			}
		}
	}
}

func inElements(elems []gnft.SetElement, a netip.Addr) bool {
	in := false
	for _, e := range elems {
		if bytes.Compare(e.Key, a.AsSlice()) > 0 {
			break
		}
		in = !e.IntervalEnd
	}
	return in
}

// textPrefixes parses intervalText's items back into prefixes: a prefix, an
// address, or a range lo-hi ("top" for the end of the space) split into the
// prefixes that cover it.
func textPrefixes(t *testing.T, items []string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, item := range items {
		if lo, hi, ok := strings.Cut(item, "-"); ok {
			a := netip.MustParseAddr(lo)
			var last netip.Addr
			if hi == "top" {
				last = lastAddr(netip.PrefixFrom(a, 0))
			} else {
				last = netip.MustParseAddr(hi)
			}
			for a.IsValid() && a.Compare(last) <= 0 {
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
				a = a.Next()
			}
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			t.Fatalf("text item %q is neither a range, a prefix nor an address", item)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// Elements the renderer does not expect are printed raw, never as a
// plausible range.
func TestIntervalTextOddElements(t *testing.T) {
	for _, c := range []struct {
		elems []gnft.SetElement
		want  string
	}{
		{[]gnft.SetElement{{Key: []byte{192, 0, 2, 11}, IntervalEnd: true}}, "end 0xc000020b"},
		{[]gnft.SetElement{{Key: []byte{192, 0, 2}}}, "end 0xc00002"},
		{[]gnft.SetElement{{Key: []byte{192, 0, 2, 10}}, {Key: []byte{192, 0, 2, 11, 0}, IntervalEnd: true}}, "192.0.2.10-0xc000020b00"},
		// Two starts: the first runs to the top.
		{[]gnft.SetElement{{Key: []byte{192, 0, 2, 10}}, {Key: []byte{192, 0, 2, 12}}}, "192.0.2.10-top, 192.0.2.12-top"},
	} {
		if got := strings.Join(intervalText(c.elems), ", "); got != c.want {
			t.Errorf("intervalText(%v) = %q, want %q", c.elems, got, c.want)
		}
	}
}
