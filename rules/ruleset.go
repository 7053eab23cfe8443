package rules

import (
	"net/netip"
)

// Family is an address family; each has its own table and transaction.
type Family int

const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// Hook is the netfilter hook a chain is attached to.
type Hook int

const (
	Input Hook = iota
	Output
	Forward
)

// Hooks lists the hooks in the order every backend renders them.
var Hooks = [...]Hook{Input, Output, Forward}

func (h Hook) String() string {
	switch h {
	case Input:
		return "input"
	case Output:
		return "output"
	default:
		return "forward"
	}
}

// Proto is a layer-4 protocol the policy matches on.
type Proto string

const (
	TCP    Proto = "tcp"
	UDP    Proto = "udp"
	ICMPv6 Proto = "ipv6-icmp"
	// GRE (IP protocol 47) carries PPTP's data; it has no ports.
	GRE Proto = "gre"
)

// Verdict is what a rule does with a matching packet.
type Verdict int

const (
	Accept Verdict = iota
	Drop
	// Reject answers with ICMP administratively prohibited, so applications fail fast.
	Reject
	// RejectTCPReset answers TCP with a reset; only valid with L4 protocol TCP.
	RejectTCPReset
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Reject:
		return "reject"
	default:
		return "reject-tcp-reset"
	}
}

// L4 matches a layer-4 protocol and optionally its ports or ICMPv6 type.
// A zero port or type means any.
type L4 struct {
	Proto    Proto
	SrcPort  uint16
	DstPort  uint16
	ICMPType uint8
}

// Rule is one rule of the policy: every field that is set must match.
// Slices are sets: a packet matches when it matches any element.
type Rule struct {
	// Purpose is carried into the kernel as the rule's comment.
	Purpose  string
	InIface  string
	OutIface string
	// Src matches the packet's source address.
	Src []netip.Prefix
	// Dst matches the packet's destination, or with CtOriginal the
	// destination of the connection's original direction.
	Dst []netip.Prefix
	// L4 matches the packet's protocol and ports, or with CtOriginal those
	// of the connection's original direction.
	L4 []L4
	// CtOriginal makes Dst and L4 match the conntrack original tuple, which is
	// how replies are tied to the flow that was allowed out.
	CtOriginal bool
	// CtEstablished matches only packets of established or related flows.
	CtEstablished bool
	// InTunnel and OutTunnel match packets whose in or out interface is one
	// of the allowed tunnels (Ruleset.Tunnels). Backends with sets keep the
	// tunnels in one named set that up and down change; others expand the
	// rule into one per tunnel. With no tunnel allowed it matches nothing.
	InTunnel, OutTunnel bool
	// AddrSet names what Src or Dst hold ("servers", "lan"): rules naming
	// the same set hold the same addresses, so a backend with named sets
	// keeps them once, however many there are.
	AddrSet string
	Mark    uint32 // 0: no fwmark match
	UID     *uint32
	// HopLimit255 requires hop limit 255 (IPv6 neighbour discovery from on-link).
	HopLimit255 bool
	Verdict     Verdict
}

// Chain is the ordered list of rules for one hook. Packets not decided by any
// rule meet the chain's final rules, which every policy ends with.
type Chain struct {
	Hook  Hook
	Rules []Rule
}

// Table is the ruleset of one address family.
type Table struct {
	Family Family
	Chains [len(Hooks)]Chain
}

// Ruleset is the whole desired state: what a backend applies in one
// transaction per family.
type Ruleset struct {
	State   State
	Tunnels []string
	Tables  [2]Table
}

// State names the two states of the kill switch.
type State string

const (
	Blocked   State = "blocked"
	Connected State = "connected"
	// Disarmed is only ever read back from the kernel: not every packet meets
	// vpnfw's rules (after disarm, or another tool's flush).
	Disarmed State = "disarmed"
)
