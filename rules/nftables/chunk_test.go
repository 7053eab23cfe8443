package nftables

import (
	"context"
	"fmt"
	"strings"
	"testing"

	gnft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpnfw/vpnfw/rules"
)

// manyServersV6 returns n IPv6 server addresses, none adjacent to another.
func manyServersV6(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "2001:db8:%x::%x ", i/1000, 2*(i%1000)+1)
	}
	return b.String()
}

// The batch google/nftables v0.3.0 builds for a table with thousands of
// addresses, captured from the library itself: every element list fits its
// netlink attribute (the library wraps a longer one's 16-bit length
// silently), and every element arrives.
func TestLargeSetsFitNetlinkAttributes(t *testing.T) {
	cfg := mustConfig(t, serversEnv(manyServers(10000)+manyServersV6(3000)))
	tb := mustBuild(t, rules.Policy(cfg, []string{"tun0"}))
	var msgs []netlink.Message
	c, err := gnft.New(gnft.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		msgs = append(msgs, req...)
		return req, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := queueTable(c, tref, tb); err != nil {
		t.Fatal(err)
	}
	_ = c.Flush() // the fake socket's replies are not acks; the batch is what counts

	got := map[string]int{}
	newSetElem := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM)
	for _, m := range msgs {
		if m.Header.Type != newSetElem {
			continue
		}
		attrs, err := netlink.UnmarshalAttributes(m.Data[4:])
		if err != nil {
			t.Fatalf("a NEWSETELEM message does not parse: %v", err)
		}
		name, n := "", -1
		for _, a := range attrs {
			switch a.Type & nlaTypeMask {
			case unix.NFTA_SET_ELEM_LIST_SET:
				name = strings.TrimRight(string(a.Data), "\x00")
			case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
				elems, err := netlink.UnmarshalAttributes(a.Data)
				if err != nil {
					t.Fatalf("an element list does not parse: %v", err)
				}
				n = len(elems)
			default:
				if a.Type&nlaTypeMask > unix.NFTA_SET_ELEM_LIST_SET_ID {
					t.Errorf("NEWSETELEM attribute of type %d: the message is garbled", a.Type)
				}
			}
		}
		if n < 0 {
			t.Errorf("NEWSETELEM for %q without elements", name)
		}
		got[name] += n
	}
	for _, s := range tb.sets {
		if got[s.name] != len(s.elems) {
			t.Errorf("set %s: %d elements sent, want %d", s.name, got[s.name], len(s.elems))
		}
	}
	if len(tb.set("servers_v4").elems) != 20000 || len(tb.set("servers_v6").elems) != 6000 {
		t.Fatalf("test bug: %d and %d server elements", len(tb.set("servers_v4").elems), len(tb.set("servers_v6").elems))
	}
}

func TestChunks(t *testing.T) {
	if c := chunks(nil); len(c) != 1 || len(c[0]) != 0 {
		t.Errorf("chunks(nil) = %v, want one empty run", c)
	}
	tb := mustBuild(t, rules.Policy(mustConfig(t, serversEnv(manyServers(10000)+manyServersV6(3000))), nil))
	for _, name := range []string{"servers_v4", "servers_v6"} {
		elems := tb.set(name).elems
		parts := chunks(elems)
		n := 0
		for _, p := range parts {
			if len(p) == 0 {
				t.Errorf("%s: an empty run among %d", name, len(parts))
			}
			if err := checkElems(&gnft.Set{Name: name, KeyType: tb.set(name).keyType}, p); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			n += len(p)
		}
		if n != len(elems) || len(parts) < 2 {
			t.Errorf("%s: %d elements in %d runs, want %d in several", name, n, len(parts), len(elems))
		}
	}
}

// Apply with thousands of servers on the fake: one set, filled over
// several messages of the same batch; up and down still touch only the
// tunnel set.
func TestApplyManyServersFake(t *testing.T) {
	b, k := fakeBackend()
	cfg := mustConfig(t, serversEnv(manyServers(10000)+manyServersV6(3000)))
	n := len(k.conns)
	mustApply(t, b, rules.Policy(cfg, nil))
	ops := k.queuedSince(n)
	if !fullReplace(ops) {
		t.Fatalf("queued %v", ops[:min(len(ops), 5)])
	}
	adds := 0
	for _, op := range ops {
		if strings.HasPrefix(op, "SetAddElements servers_v") {
			adds++
		}
	}
	if adds < 2 {
		t.Errorf("%d SetAddElements for 26,000 elements", adds)
	}
	n = len(k.conns)
	mustApply(t, b, rules.Policy(cfg, []string{"tun0"}))
	if ops := k.queuedSince(n); len(ops) != 1 || ops[0] != `SetAddElements tunnels ["tun0"]` {
		t.Errorf("up queued %v", ops)
	}
}

// An anonymous set cannot be filled over several messages: one too large
// for a message is refused before anything is sent.
func TestApplyRefusesOversizedAnonymousSet(t *testing.T) {
	var ports []string
	for p := 1; p <= 2000; p++ {
		ports = append(ports, fmt.Sprintf("udp/%d tcp/%d", p, p))
	}
	env := serversEnv("192.0.2.10")
	env["VPNFW_SERVER_PORTS"] = strings.Join(ports, " ")
	b, k := fakeBackend()
	err := b.Apply(context.Background(), rules.Policy(mustConfig(t, env), nil))
	if err == nil || !strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("Apply with 4,000 server ports = %v, want a refusal before sending", err)
	}
	if k.flushes != 0 {
		t.Errorf("%d flushes", k.flushes)
	}
	// 1,000 ports fit.
	env["VPNFW_SERVER_PORTS"] = strings.Join(ports[:500], " ")
	mustApply(t, b, rules.Policy(mustConfig(t, env), nil))
}

// nlaTypeMask strips the nested and byte-order flags from an attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
