// Package iptables applies a rules.Ruleset with iptables-restore, one
// transaction per address family, in chains of the project's own.
package iptables

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vpnfw/vpnfw/rules"
)

// chainNames are the project's own chains, one per hook, jumped to first from
// the built-in chain of the same hook.
var chainNames = [...]string{rules.Input: "VPNFW-INPUT", rules.Output: "VPNFW-OUTPUT", rules.Forward: "VPNFW-FORWARD"}

var builtinNames = [...]string{rules.Input: "INPUT", rules.Output: "OUTPUT", rules.Forward: "FORWARD"}

// commentPrefix marks every rule of the project in listings.
const commentPrefix = "vpnfw: "

// jumpSpec is the rule (without -A/-I CHAIN) that sends every packet of a
// built-in chain to our chain for hook h.
func jumpSpec(h rules.Hook) string {
	return fmt.Sprintf("-m comment --comment %q -j %s", commentPrefix+"kill switch", chainNames[h])
}

// ChainRules renders the rules of one chain exactly as `iptables -S CHAIN`
// prints them (both flavours print the same), so the live ruleset can be
// compared line by line with the desired one. tunnels are the allowed tunnel
// devices: iptables has no interface sets, so a tunnel rule becomes one rule
// per device, none when no tunnel is allowed.
func ChainRules(fam rules.Family, c rules.Chain, tunnels []string) []string {
	name := chainNames[c.Hook]
	var out []string
	for _, r := range c.Rules {
		for _, r := range expandTunnels(r, tunnels) {
			for _, spec := range ruleSpecs(fam, r) {
				out = append(out, "-A "+name+" "+spec)
			}
		}
	}
	return out
}

func expandTunnels(r rules.Rule, tunnels []string) []rules.Rule {
	if !r.InTunnel && !r.OutTunnel {
		return []rules.Rule{r}
	}
	var out []rules.Rule
	for _, dev := range tunnels {
		e := r
		e.Purpose = rules.TunnelPurpose(r, dev)
		e.InTunnel, e.OutTunnel = false, false
		if r.InTunnel {
			e.InIface = dev
		}
		if r.OutTunnel {
			e.OutIface = dev
		}
		out = append(out, e)
	}
	return out
}

// ruleSpecs expands one rule into iptables rule specs: iptables has no sets,
// so a rule matching several destinations or ports becomes one line for each
// combination.
func ruleSpecs(fam rules.Family, r rules.Rule) []string {
	srcs := []netip.Prefix{{}}
	if len(r.Src) > 0 {
		srcs = r.Src
	}
	dsts := []netip.Prefix{{}}
	if len(r.Dst) > 0 {
		dsts = r.Dst
	}
	l4s := r.L4
	if len(l4s) == 0 {
		l4s = []rules.L4{{}}
	}
	var out []string
	for _, src := range srcs {
		for _, dst := range dsts {
			for _, l4 := range l4s {
				out = append(out, ruleSpec(fam, r, src, dst, l4))
			}
		}
	}
	return out
}

func ruleSpec(fam rules.Family, r rules.Rule, src, dst netip.Prefix, l4 rules.L4) string {
	var b strings.Builder
	arg := func(format string, a ...any) { b.WriteString(" "); fmt.Fprintf(&b, format, a...) }
	if src.IsValid() {
		arg("-s %s", src)
	}
	if dst.IsValid() && !r.CtOriginal {
		arg("-d %s", dst)
	}
	if r.InIface != "" {
		arg("-i %s", r.InIface)
	}
	if r.OutIface != "" {
		arg("-o %s", r.OutIface)
	}
	if l4.Proto != "" && !r.CtOriginal {
		arg("-p %s", l4.Proto)
		switch l4.Proto {
		case rules.ICMPv6:
			if l4.ICMPType != 0 {
				arg("-m icmp6 --icmpv6-type %d", l4.ICMPType)
			}
		default:
			if l4.SrcPort != 0 || l4.DstPort != 0 {
				arg("-m %s", l4.Proto)
			}
			if l4.SrcPort != 0 {
				arg("--sport %d", l4.SrcPort)
			}
			if l4.DstPort != 0 {
				arg("--dport %d", l4.DstPort)
			}
		}
	}
	if r.HopLimit255 {
		arg("-m hl --hl-eq 255")
	}
	if r.Mark != 0 {
		arg("-m mark --mark %#x", r.Mark)
	}
	if r.UID != nil {
		arg("-m owner --uid-owner %d", *r.UID)
	}
	if r.CtEstablished {
		arg("-m conntrack --ctstate RELATED,ESTABLISHED")
		if r.CtOriginal {
			if l4.Proto != "" {
				arg("--ctproto %d", protoNumber(l4.Proto))
			}
			// The conntrack match prints a host without its prefix length.
			if dst.IsSingleIP() {
				arg("--ctorigdst %s", dst.Addr())
			} else if dst.IsValid() {
				arg("--ctorigdst %s", dst)
			}
			if l4.DstPort != 0 {
				arg("--ctorigdstport %d", l4.DstPort)
			}
		}
	}
	arg("-m comment --comment %q", commentPrefix+r.Purpose)
	switch r.Verdict {
	case rules.Accept:
		arg("-j ACCEPT")
	case rules.Drop:
		arg("-j DROP")
	case rules.RejectTCPReset:
		arg("-j REJECT --reject-with tcp-reset")
	case rules.Reject:
		if fam == rules.IPv6 {
			arg("-j REJECT --reject-with icmp6-adm-prohibited")
		} else {
			arg("-j REJECT --reject-with icmp-admin-prohibited")
		}
	}
	return b.String()[1:]
}

func protoNumber(p rules.Proto) int {
	switch p {
	case rules.TCP:
		return 6
	case rules.UDP:
		return 17
	case rules.GRE:
		return 47
	default:
		return 58
	}
}

// jumpState is what the live built-in chain holds of our jump rule.
type jumpState struct {
	count int  // exact copies of jumpSpec in the chain
	first bool // one of them is rule 1
}

// restoreText renders the transaction for one family: built-in policies
// DROP, our chains declared (which with --noflush creates or flushes them)
// and refilled, and the jumps made unique and first. A lone jump already at
// rule 1 is left alone, so re-applying the same state changes nothing.
// Jumps are deleted by their spec, not their number, so a rule another tool
// inserts meanwhile can never be deleted instead: the transaction fails.
func restoreText(t rules.Table, tunnels []string, jumps [len(rules.Hooks)]jumpState) string {
	var b strings.Builder
	declareChains(&b, "DROP")
	for _, h := range rules.Hooks {
		for _, line := range ChainRules(t.Family, t.Chains[h], tunnels) {
			b.WriteString(line + "\n")
		}
	}
	for _, h := range rules.Hooks {
		j := jumps[h]
		if j.count == 1 && j.first {
			continue
		}
		for range j.count {
			fmt.Fprintf(&b, "-D %s %s\n", builtinNames[h], jumpSpec(h))
		}
		fmt.Fprintf(&b, "-I %s 1 %s\n", builtinNames[h], jumpSpec(h))
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// declareChains starts a transaction: the built-in chains' policies, and our
// chains declared, which with --noflush creates or flushes them.
func declareChains(b *strings.Builder, policy string) {
	b.WriteString("*filter\n")
	for _, h := range rules.Hooks {
		fmt.Fprintf(b, ":%s %s [0:0]\n", builtinNames[h], policy)
	}
	for _, h := range rules.Hooks {
		fmt.Fprintf(b, ":%s - [0:0]\n", chainNames[h])
	}
}

// Render prints the transactions that would be applied to a host without
// any of our rules, for `vpnfw-hook render`.
func Render(rs *rules.Ruleset) string {
	var b strings.Builder
	for _, t := range rs.Tables {
		fmt.Fprintf(&b, "# %s-restore --noflush\n", map[rules.Family]string{rules.IPv4: "iptables", rules.IPv6: "ip6tables"}[t.Family])
		b.WriteString(restoreText(t, rs.Tunnels, [len(rules.Hooks)]jumpState{}))
	}
	return b.String()
}
