package kerneltest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vpnfw/vpnfw/rules/netnstest"
)

// Destinations of the flood during a backend switch: reached over the
// physical link (the default routes), no server, no tunnel, so every
// packet the peer counts from the host on phys-all or phys6-nonicmp is a
// leak.
const (
	floodTo  = "198.18.0.1:5000"
	floodTo6 = "[2001:db8:99::1]:5000"
)

// floodProc is the flood probe running in the host.
type floodProc struct {
	tp    *topo
	p     *netnstest.Proc
	start time.Time
}

// startFlood starts the flood in the host and waits for its first round.
func (tp *topo) startFlood() *floodProc {
	tp.t.Helper()
	p := tp.host.Start([]string{helperEnv + "=1"}, 2*time.Minute, tp.probe, "flood", "-to", floodTo+","+floodTo6, "-every", "1ms")
	if l := p.Line(tp.t, 10*time.Second); l != "sending" {
		tp.t.Fatalf("flood: %q", l)
	}
	return &floodProc{tp: tp, p: p, start: time.Now()}
}

// stop ends the flood and wants it to have sent a round at least every
// 10ms on average: a flood with gaps could miss a short window.
func (f *floodProc) stop() probeResult {
	t := f.tp.t
	t.Helper()
	f.p.Send(t, "stop")
	took := time.Since(f.start)
	var r probeResult
	if err := json.Unmarshal([]byte(f.p.Line(t, 10*time.Second)), &r); err != nil || !r.OK {
		t.Fatalf("flood: %v %v", r, err)
	}
	if want := int(took / (10 * time.Millisecond)); r.Before < want {
		t.Errorf("the flood sent %d rounds in %v, want at least %d: it could miss a short window", r.Before, took, want)
	}
	return r
}

// testSwitchBackends: changing VPNFW_BACKEND never opens a window. With a
// flood to the physical link running, the host switches from the flavour's
// backend to the other one and back, by up/down (the tunnels carry over)
// and by baseline; each time the new backend is armed and the old one's
// rules are gone, check passes, and the peer counts nothing. Then, as the
// control, disarm and baseline run back to back, and the same flood and
// counters see the window between them.
func testSwitchBackends(t *testing.T, fl flavour) {
	cfg := []string{"VPNFW_SERVERS=" + serverIP, "VPNFW_VPN_MARK=" + vpnMark}
	tp := newTopo(t, fl, cfg...)
	// The other backend: nftables named explicitly (the nftables flavour
	// proves auto), or from nftables the nf_tables flavour of iptables, in
	// use on the host whatever its default.
	other := nftFlavour.explicit()
	if fl.nft {
		other = nfTablesFlavour
		tp.host.MustRun(other.ipt, "-N", "NFT-TOOL")
	}
	tp.addTunnel(0)
	tp.addTunnel(1)
	// The gateways' link-layer addresses known beforehand, so that the
	// control below leaks at once, without waiting for neighbour discovery.
	tp.pass("udp", server1194)
	tp.pass("udp", server6udp)
	tp.apply("baseline")
	tp.apply("up", "--dev", "tun0")
	tp.pass("udp", inetTun0+":5000")

	tp.zero()
	prober := tp.startFlood()
	steps := []struct {
		to      flavour
		cmd     []string
		state   string
		tunnels []string
	}{
		// up of another tunnel: tun0 carries over from the old backend.
		{other, []string{"up", "--dev", "tun1"}, "connected", []string{"tun0", "tun1"}},
		// down: tun0 carries back, tun1 goes.
		{fl, []string{"down", "--dev", "tun1"}, "connected", []string{"tun0"}},
		{other, []string{"baseline"}, "blocked", nil},
		{fl, []string{"baseline"}, "blocked", nil},
	}
	for _, st := range steps {
		from := tp.fl
		t.Logf("switching to %s (VPNFW_BACKEND=%q), then %s", st.to.shows, st.to.backend, strings.Join(st.cmd, " "))
		tp.configure(st.to, cfg...)
		// apply wants check to pass, which it does not while rules of the
		// other backend remain.
		tp.apply(st.cmd...)
		if tp.holds(from) {
			t.Errorf("%s after switching to %s: rules of %s remain:\n%s", strings.Join(st.cmd, " "), st.to.shows, from.shows, tp.ruleset())
		}
		if !tp.holds(st.to) {
			t.Errorf("%s after switching to %s: it holds no rules:\n%s", strings.Join(st.cmd, " "), st.to.shows, tp.ruleset())
		}
		tp.wantStatus(st.state, st.tunnels...)
		for _, dev := range st.tunnels {
			tp.pass("udp", map[string]string{"tun0": inetTun0, "tun1": inetTun1}[dev]+":5000")
		}
		tp.wantZero("phys-all", "phys6-nonicmp")
	}
	tp.zero()
	tp.rejected("udp", inetTun0+":5000")
	tp.wantZero("phys-all", "phys6-nonicmp", "tun0-all")

	// The control: a window as short as two hook runs is seen.
	if r := tp.hook("disarm", "--yes"); r.Code != 0 {
		t.Fatalf("disarm --yes: %s", r)
	}
	tp.apply("baseline")
	if c := tp.counts(); c["phys-all"] == 0 || c["phys6-nonicmp"] == 0 {
		t.Errorf("between disarm and baseline the flood should have leaked on the physical link, but the peer counted %v: the switches above prove nothing", c)
	}
	time.Sleep(20 * time.Millisecond) // what was in flight when baseline applied
	tp.zero()
	time.Sleep(100 * time.Millisecond)
	tp.wantZero("phys-all", "phys6-nonicmp")
	r := prober.stop()
	t.Logf("flood: %d rounds, %d datagrams let out", r.Before, r.After)
}
