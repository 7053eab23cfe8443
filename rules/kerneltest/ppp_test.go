package kerneltest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vpnfw/vpnfw/rules/netnstest"
)

var pptpConfig = []string{"VPNFW_SERVERS=" + serverIP, "VPNFW_SERVER_PORTS=tcp/1723 gre",
	"VPNFW_VPN_USER=" + vpnUID, "VPNFW_TUN_DEVICES=ppp+"}

// testPPTP: with VPNFW_SERVER_PORTS=tcp/1723 gre only the VPN client's user
// reaches the server's PPTP control port and sends it GRE; the server's GRE
// comes back although its call ID differs from the client's (conntrack sees
// a flow of its own), and GRE from any other address is dropped.
func testPPTP(t *testing.T, fl flavour) {
	tp := newTopo(t, fl, pptpConfig...)
	tp.host.Sysctl("net.ipv4.conf.all.rp_filter", "0")
	tp.host.Sysctl("net.ipv4.conf.eth0.rp_filter", "0")
	// Without vpnfw the probe sees the server's answer and the decoy from
	// an address that is no server: the checks below can see both.
	if r := tp.send(tp.host, "gre", serverIP); !r.OK || r.After == 0 {
		t.Fatalf("before vpnfw, GRE to the server: want the answer and the decoy, got %v", r)
	}
	tp.apply("baseline")
	tp.zero()
	// Every other process: no GRE, no control connection, to the server.
	tp.rejected("gre", serverIP)
	tp.rejected("gre", serverIP, "-uid", "4243")
	tp.rejected("tcp", serverIP+":1723")
	tp.rejected("tcp", serverIP+":1723", "-uid", "4243")
	// The VPN client's user: only GRE and tcp/1723, only to the server.
	tp.rejected("udp", server1194, "-uid", vpnUID)
	tp.rejected("tcp", server443, "-uid", vpnUID)
	tp.rejected("gre", inetTun0, "-uid", vpnUID)
	tp.wantZero("phys-all", "phys-inet")

	tp.pass("tcp", serverIP+":1723", "-uid", vpnUID)
	r := tp.send(tp.host, "gre", serverIP, "-uid", vpnUID)
	if !r.OK {
		t.Errorf("GRE from the VPN client's user: want the server's answer, got %v", r)
	}
	if r.After != 0 {
		t.Errorf("%d GRE packets from an address that is no server were accepted", r.After)
	}
	tp.wantSome("phys-gre", "phys-tcp-1723")
	c := tp.counts()
	if c["phys-all"] != c["phys-gre"]+c["phys-tcp-1723"] {
		t.Errorf("the host sent more than GRE and tcp/1723 to the peer: %v", c)
	}
	tp.unreachableFromPeer(hostIP + ":1723")
	tp.wantCheck(0)
}

// pppEnv is the environment pppd gives its ip-up and ip-down scripts (and
// nothing else: no PATH), and runParts the arguments Debian's /etc/ppp/ip-up
// passes run-parts.
func pppEnv(iface string) []string {
	return []string{"PPP_IFACE=" + iface, "PPP_TTY=/dev/pts/3", "PPP_SPEED=0",
		"PPP_LOCAL=198.51.100.2", "PPP_REMOTE=198.51.100.1", "PPP_IPPARAM=vpnfw-test"}
}

func runPartsArgs(iface string) []string {
	return []string{"--arg=" + iface, "--arg=/dev/pts/3", "--arg=0", "--arg=198.51.100.2", "--arg=198.51.100.1", "--arg=vpnfw-test"}
}

// testPPPHooks: the installed /etc/ppp/ip-up.d and ip-down.d scripts, run
// by run-parts the way pppd and Debian's /etc/ppp/ip-up run them, allow and
// remove ppp0; real packets go through ppp0 only while it is allowed, and
// hostile or confused input changes nothing.
func testPPPHooks(t *testing.T, fl flavour) {
	netnstest.RequireTools(t, "run-parts")
	tp := newTopo(t, fl, pptpConfig...)
	tp.addTunnelDev(0, "ppp0")
	dir := tp.install()
	envTool, err := netnstest.Tool("env")
	if err != nil {
		t.Fatal(err)
	}
	runParts, err := netnstest.Tool("run-parts")
	if err != nil {
		t.Fatal(err)
	}
	upDir, downDir := filepath.Join(dir, "etc", "ppp", "ip-up.d"), filepath.Join(dir, "etc", "ppp", "ip-down.d")
	pppd := func(vars []string, argv ...string) netnstest.Result {
		t.Helper()
		return tp.host.Run(append(append([]string{envTool, "-i"}, vars...), argv...)...)
	}
	tp.apply("baseline")
	tp.zero()
	tp.rejected("udp", inetTun0+":5000")

	r := pppd(pppEnv("ppp0"), append([]string{runParts}, append(runPartsArgs("ppp0"), upDir)...)...)
	if r.Code != 0 {
		t.Fatalf("ip-up.d: %s", r)
	}
	tp.wantCheck(0)
	tp.wantStatus("connected", "ppp0")
	tp.pass("udp", inetTun0+":5000")
	tp.pass("tcp", inetTun0+":8080")
	tp.wantSome("tun0-all")
	tp.wantZero("phys-all")
	up := tp.ruleset()

	script := filepath.Join(upDir, "vpnfw")
	for _, c := range []struct {
		name string
		vars []string
		args []string
	}{
		{"not a tunnel VPNFW_TUN_DEVICES allows", pppEnv("eth0"), []string{"eth0"}},
		{"shell metacharacters", pppEnv("ppp0;id"), []string{"ppp0;id"}},
		{"a newline", pppEnv("ppp0\n-A OUTPUT -j ACCEPT"), nil},
		{"a leading dash", pppEnv("-ppp0"), nil},
		{"wildcard", pppEnv("ppp+"), nil},
		{"too long", pppEnv("ppp0123456789abc"), nil},
		{"PPP_IFACE and the argument disagree", pppEnv("ppp0"), []string{"ppp1"}},
		{"no interface at all", nil, nil},
		{"empty interface", pppEnv(""), []string{""}},
	} {
		r := pppd(c.vars, append([]string{script}, c.args...)...)
		if r.Code != 2 {
			t.Errorf("%s: want exit 2: %s", c.name, r)
		}
		if !strings.Contains(r.Stderr, "refused") && !strings.Contains(r.Stderr, "VPNFW_TUN_DEVICES") {
			t.Errorf("%s: stderr does not say why: %s", c.name, r.Stderr)
		}
		wantSame(t, fmt.Sprintf("the refused ip-up call (%s)", c.name), up, tp.ruleset())
	}

	r = pppd(pppEnv("ppp0"), append([]string{runParts}, append(runPartsArgs("ppp0"), downDir)...)...)
	if r.Code != 0 {
		t.Fatalf("ip-down.d: %s", r)
	}
	tp.wantCheck(0)
	tp.wantStatus("blocked")
	tp.zero()
	tp.rejected("udp", inetTun0+":5000")
	tp.wantZero("tun0-all", "phys-all")

	// Without PPP_* the first argument names the interface.
	r = pppd(nil, script, "ppp0", "/dev/pts/3", "0", "198.51.100.2", "198.51.100.1", "")
	if r.Code != 0 {
		t.Fatalf("ip-up with arguments only: %s", r)
	}
	tp.wantStatus("connected", "ppp0")
	r = pppd(nil, filepath.Join(downDir, "vpnfw"), "ppp0")
	if r.Code != 0 {
		t.Fatalf("ip-down with arguments only: %s", r)
	}
	tp.wantStatus("blocked")
}
