package rules

import (
	"net/netip"
	"slices"
)

// Policy computes the whole desired ruleset for cfg with the given tunnel
// devices allowed. It is a pure function: same inputs, same ruleset.
// Tunnels must already be validated against cfg (see Config.AllowsDevice).
func Policy(cfg *Config, tunnels []string) *Ruleset {
	tunnels = slices.Clone(tunnels)
	slices.Sort(tunnels)
	tunnels = slices.Compact(tunnels)
	rs := &Ruleset{State: Blocked, Tunnels: tunnels}
	if len(tunnels) > 0 {
		rs.State = Connected
	}
	for i, fam := range []Family{IPv4, IPv6} {
		rs.Tables[i] = table(cfg, fam)
	}
	return rs
}

func table(cfg *Config, fam Family) Table {
	servers := ofFamily(cfg.Servers, fam)
	lan := ofFamily(cfg.LAN, fam)
	var in, out []Rule

	in = append(in, Rule{Purpose: "loopback in", InIface: "lo", Verdict: Accept})
	out = append(out, Rule{Purpose: "loopback out", OutIface: "lo", Verdict: Accept})

	if len(servers) > 0 {
		var l4, ported []L4
		gre := false
		for _, e := range cfg.ServerPorts {
			l4 = append(l4, L4{Proto: e.Proto, DstPort: e.Port})
			if e.Proto == GRE {
				gre = true
			} else {
				ported = append(ported, L4{Proto: e.Proto, DstPort: e.Port})
			}
		}
		// The exception is for the VPN client's sockets only: any other process
		// sending to the same address (a browser, a Tor relay sharing the IP) is
		// rejected further down.
		out = append(out, Rule{Purpose: "vpn client to its servers", Dst: servers, AddrSet: "servers", L4: l4,
			Mark: cfg.VPNMark, UID: cfg.VPNUser, Verdict: Accept})
		// Replies are tied to flows by their original destination, a server
		// port. Outgoing packets are still checked one by one above, so a
		// reply let in here never lets anything out.
		if len(ported) > 0 {
			in = append(in, Rule{Purpose: "replies from vpn servers", Dst: servers, AddrSet: "servers", L4: ported,
				CtOriginal: true, CtEstablished: true, Verdict: Accept})
		}
		// PPTP's GRE packets carry a call ID per direction, so without the
		// kernel's PPTP helper conntrack sees the server's packets as a flow
		// of their own: GRE is accepted by its source, the configured
		// servers, and nothing else of it. What it carries is filtered again
		// on the tunnel device.
		if gre {
			in = append(in, Rule{Purpose: "gre from vpn servers", Src: servers, AddrSet: "servers", L4: []L4{{Proto: GRE}}, Verdict: Accept})
		}
	}
	if len(lan) > 0 {
		out = append(out, Rule{Purpose: "lan out", Dst: lan, AddrSet: "lan", Verdict: Accept})
		in = append(in, Rule{Purpose: "replies from lan", Dst: lan, AddrSet: "lan", CtOriginal: true, CtEstablished: true, Verdict: Accept})
	}
	if fam == IPv6 && (len(servers) > 0 || len(lan) > 0) {
		// On-link IPv6 peers are unreachable without neighbour discovery;
		// hop limit 255 proves the packet was not routed.
		nd := []L4{{Proto: ICMPv6, ICMPType: 133}, {Proto: ICMPv6, ICMPType: 134}, {Proto: ICMPv6, ICMPType: 135}, {Proto: ICMPv6, ICMPType: 136}}
		out = append(out, Rule{Purpose: "ipv6 neighbour discovery out", L4: nd, HopLimit255: true, Verdict: Accept})
		in = append(in, Rule{Purpose: "ipv6 neighbour discovery in", L4: nd, HopLimit255: true, Verdict: Accept})
	}
	if fam == IPv4 && cfg.AllowDHCP {
		out = append(out, Rule{Purpose: "dhcp client out", L4: []L4{{Proto: UDP, SrcPort: 68, DstPort: 67}}, Verdict: Accept})
		// Offers may be broadcast, which conntrack does not tie to the request.
		in = append(in, Rule{Purpose: "dhcp client in", L4: []L4{{Proto: UDP, SrcPort: 67, DstPort: 68}}, Verdict: Accept})
	}
	if fam == IPv4 || cfg.IPv6Tunnel {
		out = append(out, Rule{Purpose: "tunnels out", OutTunnel: true, Verdict: Accept})
		// Conntrack state is trusted only on the interface the flow is
		// allowed on: a flow opened through the tunnel gets nothing on the
		// physical link once the tunnel is gone.
		in = append(in, Rule{Purpose: "tunnel replies", InTunnel: true, CtEstablished: true, Verdict: Accept})
	}

	out = append(out,
		Rule{Purpose: "fail closed: reset other tcp", L4: []L4{{Proto: TCP}}, Verdict: RejectTCPReset},
		Rule{Purpose: "fail closed: reject everything else", Verdict: Reject})
	in = append(in, Rule{Purpose: "fail closed: drop everything else", Verdict: Drop})
	fwd := []Rule{{Purpose: "fail closed: no forwarding", Verdict: Drop}}

	t := Table{Family: fam}
	t.Chains[Input] = Chain{Hook: Input, Rules: in}
	t.Chains[Output] = Chain{Hook: Output, Rules: out}
	t.Chains[Forward] = Chain{Hook: Forward, Rules: fwd}
	return t
}

func ofFamily(ps []netip.Prefix, fam Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() == (fam == IPv4) {
			out = append(out, p)
		}
	}
	return out
}

// TunnelPurpose is the purpose of a tunnel rule r expanded for one device
// dev, for backends without sets.
func TunnelPurpose(r Rule, dev string) string {
	if r.OutTunnel {
		return "tunnel " + dev + " out"
	}
	return "tunnel " + dev + " replies"
}
