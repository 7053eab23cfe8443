package kerneltest

// The probe is this test binary run again, under `ip netns exec`, with
// helperEnv set: TestMain hands it the command line instead of running tests.
// It sends real packets as a chosen socket (fwmark, uid) and prints one JSON
// result, or serves as the peer's echo servers.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const helperEnv = "VPNFW_KERNELTEST_HELPER"

const payload = "vpnfw-probe"

// probeResult is what one probe saw. OK means the echo came back.
type probeResult struct {
	OK    bool   `json:"ok"`
	Stage string `json:"stage,omitempty"` // where it failed: dial, write, read
	Err   string `json:"err,omitempty"`
	Ms    int64  `json:"ms"`
	// stream only: writes before and after the test's signal.
	Before   int    `json:"before,omitempty"`
	After    int    `json:"after,omitempty"`
	AfterErr string `json:"after_err,omitempty"`
}

func (r probeResult) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// probeMain is the helper's main: probe MODE [flags].
func probeMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "probe: expected a mode: udp, tcp, ping, gre, stream, udpflow, inject, flood or serve")
		return 2
	}
	mode := args[0]
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	to := fs.String("to", "", "destination host:port (ping: IP)")
	mark := fs.Uint("mark", 0, "SO_MARK of the socket")
	uid := fs.Int("uid", -1, "uid the socket is created as")
	timeout := fs.Duration("timeout", 2*time.Second, "wait for a reply (serve: lifetime)")
	after := fs.Duration("after", 1500*time.Millisecond, "stream: keep writing this long after the signal")
	udpAddrs := fs.String("addrs", "", "serve: the addresses UDP echoes from (a wildcard socket would answer from another address)")
	udpPorts := fs.String("udp", "1194,5000", "serve: UDP echo ports")
	tcpPorts := fs.String("tcp", "443,1194,1723,8080", "serve: TCP echo ports")
	greServer := fs.String("gre", "", "serve: answer PPTP-style GRE sent to this IPv4 address")
	greDecoy := fs.String("gre-decoy", "", "serve: first send GRE from this other address, which is no server")
	every := fs.Duration("every", time.Millisecond, "flood: send a round this often")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *uid >= 0 {
		// The socket keeps what it needs: the mark (CAP_NET_ADMIN), and a raw
		// GRE socket (CAP_NET_RAW), as a PPTP client run as its own user has it.
		var caps uint32
		if *mark != 0 {
			caps |= 1 << capNetAdmin
		}
		if mode == "gre" {
			caps |= 1 << capNetRaw
		}
		if err := becomeUser(*uid, caps); err != nil {
			fmt.Fprintf(os.Stderr, "probe: becoming uid %d: %v\n", *uid, err)
			return 3
		}
	}
	dialer := &net.Dialer{Timeout: *timeout, Control: markControl(uint32(*mark))}
	var r probeResult
	start := time.Now()
	switch mode {
	case "udp", "tcp":
		r = echo(dialer, mode, *to, *timeout)
	case "ping":
		r = ping(*to, *timeout)
	case "gre":
		r = greEcho(*to, *timeout)
	case "stream":
		r = stream(dialer, *to, *after)
	case "udpflow":
		r = udpFlow(dialer, *to, *timeout, *after)
	case "inject":
		r = inject(*to, *timeout)
	case "flood":
		r = flood(*to, *every)
	case "serve":
		if *greServer != "" {
			if err := serveGRE(*greServer, *greDecoy); err != nil {
				fmt.Fprintf(os.Stderr, "serve: gre: %v\n", err)
				return 1
			}
		}
		return serve(*udpAddrs, *udpPorts, *tcpPorts, *timeout)
	default:
		fmt.Fprintf(os.Stderr, "probe: unknown mode %q\n", mode)
		return 2
	}
	r.Ms = time.Since(start).Milliseconds()
	fmt.Println(r)
	return 0
}

const (
	capNetAdmin = 12
	capNetRaw   = 13
)

// becomeUser switches this OS thread, and only it, to uid (and gid = uid),
// keeping the capabilities in caps (a bit mask) so that the socket can still
// carry a mark or be a raw socket.
// Sockets record their owner when created, so the probe's socket, created
// on this thread, belongs to uid. The thread stays locked: the goroutine
// never runs anywhere else.
func becomeUser(uid int, caps uint32) error {
	runtime.LockOSThread()
	u := uintptr(uid)
	if caps != 0 {
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_KEEPCAPS, 1, 0); e != 0 {
			return fmt.Errorf("prctl(PR_SET_KEEPCAPS): %w", e)
		}
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, u, u, u); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, u, u, u); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	if caps != 0 {
		hdr := struct {
			version uint32
			pid     int32
		}{version: 0x20080522} // _LINUX_CAPABILITY_VERSION_3, this thread
		data := [2]struct{ effective, permitted, inheritable uint32 }{{effective: caps, permitted: caps}}
		if _, _, e := syscall.RawSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
			return fmt.Errorf("capset(%#x): %w", caps, e)
		}
	}
	return nil
}

// markControl sets SO_MARK on the socket before it connects, as OpenVPN's
// mark option does.
func markControl(mark uint32) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		if mark == 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		return serr
	}
}

func fail(stage string, err error) probeResult {
	return probeResult{Stage: stage, Err: err.Error()}
}

// echo sends the payload over UDP or TCP and waits for the echo server's reply.
func echo(d *net.Dialer, network, to string, timeout time.Duration) probeResult {
	c, err := d.Dial(network, to)
	if err != nil {
		return fail("dial", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(payload)); err != nil {
		return fail("write", err)
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(c, buf, len(payload))
	if err != nil {
		return fail("read", err)
	}
	if string(buf[:n]) != payload {
		return fail("read", fmt.Errorf("unexpected reply %q", buf[:n]))
	}
	return probeResult{OK: true}
}

// ping sends one ICMP echo request (IPv4) and waits for the reply.
func ping(to string, timeout time.Duration) probeResult {
	ip := net.ParseIP(to).To4()
	if ip == nil {
		return fail("dial", fmt.Errorf("ping: %q is not an IPv4 address", to))
	}
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fail("dial", err)
	}
	defer c.Close()
	id := uint16(os.Getpid())
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1}
	msg = append(msg, payload...)
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: ip}); err != nil {
		return fail("write", err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fail("read", err)
		}
		// An echo reply (type 0) to our identifier, from the address pinged.
		if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && from.(*net.IPAddr).IP.Equal(ip) {
			return probeResult{OK: true}
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// stream opens a TCP connection, prints "connected", and writes to it every
// 20ms, whatever the writes return. After a line arrives on stdin it writes
// on for `after`, then prints its result: the test kills the tunnel in
// between, as a kill -9 of the VPN client would, and watches where the
// flow's packets go.
func stream(d *net.Dialer, to string, after time.Duration) probeResult {
	c, err := d.Dial("tcp", to)
	if err != nil {
		return fail("dial", err)
	}
	defer c.Close()
	fmt.Println("connected")
	go func() { _, _ = io.Copy(io.Discard, c) }()
	signal := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(signal)
	}()
	var r probeResult
	chunk := []byte(strings.Repeat("x", 512))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	var end <-chan time.Time
	for {
		select {
		case <-signal:
			end, signal = time.After(after), nil
		case <-end:
			r.OK = r.Before > 0
			return r
		case <-deadline:
			return fail("write", errors.New("stream: no signal within 20s"))
		case <-tick.C:
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, err := c.Write(chunk)
			if end == nil {
				// The tunnel may die before the signal comes: go on writing.
				if err == nil {
					r.Before++
				} else if r.Err == "" {
					r.Stage, r.Err = "write", err.Error()
				}
				continue
			}
			r.After++
			if err != nil && r.AfterErr == "" {
				r.AfterErr = err.Error()
			}
		}
	}
}

// serve runs UDP and TCP echo servers on every address until stdin closes
// (the test ended or died) or lifetime passes.
func serve(udpAddrs, udpPorts, tcpPorts string, lifetime time.Duration) int {
	for _, a := range strings.Split(udpAddrs, ",") {
		for _, p := range strings.Split(udpPorts, ",") {
			if _, err := strconv.Atoi(p); err != nil {
				fmt.Fprintf(os.Stderr, "serve: udp port %q\n", p)
				return 2
			}
			pc, err := net.ListenPacket("udp", net.JoinHostPort(a, p))
			if err != nil {
				fmt.Fprintf(os.Stderr, "serve: %v\n", err)
				return 1
			}
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = pc.WriteTo(buf[:n], from)
				}
			}()
		}
	}
	for _, p := range strings.Split(tcpPorts, ",") {
		if _, err := strconv.Atoi(p); err != nil {
			fmt.Fprintf(os.Stderr, "serve: tcp port %q\n", p)
			return 2
		}
		l, err := net.Listen("tcp", ":"+p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "serve: %v\n", err)
			return 1
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_, _ = io.Copy(c, c)
				}()
			}
		}()
	}
	fmt.Println("ready")
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-time.After(lifetime):
	}
	return 0
}

// udpFlow opens a UDP flow and waits for its first reply, prints
// "connected", and after a line on stdin counts for `after` the datagrams
// that still arrive on the flow.
func udpFlow(d *net.Dialer, to string, timeout, after time.Duration) probeResult {
	c, err := d.Dial("udp", to)
	if err != nil {
		return fail("dial", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		return fail("write", err)
	}
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	if _, err := c.Read(buf); err != nil {
		return fail("read", err)
	}
	r := probeResult{OK: true, Before: 1}
	fmt.Println("connected")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fail("read", fmt.Errorf("waiting for the signal: %w", err))
	}
	_ = c.SetReadDeadline(time.Now().Add(after))
	for {
		if _, err := c.Read(buf); err != nil {
			return r
		}
		r.After++
	}
}

// inject listens on `to` (host:port), prints "ready", answers the first
// datagram, prints "replied", and after a line on stdin sends ten more
// datagrams of the same flow to its sender, wherever routing takes them.
func inject(listen string, timeout time.Duration) probeResult {
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fail("dial", err)
	}
	defer pc.Close()
	fmt.Println("ready")
	buf := make([]byte, 2048)
	_ = pc.SetDeadline(time.Now().Add(timeout))
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return fail("read", err)
	}
	if _, err := pc.WriteTo(buf[:n], from); err != nil {
		return fail("write", err)
	}
	fmt.Println("replied")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fail("read", fmt.Errorf("waiting for the signal: %w", err))
	}
	var r probeResult
	for range 10 {
		if _, err := pc.WriteTo([]byte(payload), from); err != nil {
			return fail("write", err)
		}
		r.After++
		time.Sleep(20 * time.Millisecond)
	}
	r.OK = true
	return r
}

// PPTP's data channel is enhanced GRE (version 1) carrying PPP, with the
// peer's call ID in each packet: a different one in each direction, which is
// why conntrack does not tie the server's packets to the client's.
const (
	greClientCall = 0x1111 // the call ID the client sends to the server
	greServerCall = 0x2222 // the call ID the server sends back
)

// grePacket builds an enhanced GRE header (key present, version 1, protocol
// PPP) for call, followed by the payload.
func grePacket(call uint16, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	binary.BigEndian.PutUint16(b[0:], 0x2001)
	binary.BigEndian.PutUint16(b[2:], 0x880b)
	binary.BigEndian.PutUint16(b[4:], uint16(len(data)))
	binary.BigEndian.PutUint16(b[6:], call)
	return append(b, data...)
}

// parseGRE returns the call ID and payload of an enhanced GRE packet.
func parseGRE(b []byte) (call uint16, data []byte, ok bool) {
	if len(b) < 8 || binary.BigEndian.Uint16(b[0:])&0x7 != 1 || binary.BigEndian.Uint16(b[2:]) != 0x880b {
		return 0, nil, false
	}
	return binary.BigEndian.Uint16(b[6:]), b[8:], true
}

// greEcho sends one GRE packet to the server at `to` from a raw socket, as a
// PPTP client does, and waits for the server's answer. After counts the GRE
// packets that arrived from other addresses meanwhile: the server's
// responder sends one from an address that is no server first.
func greEcho(to string, timeout time.Duration) probeResult {
	dst := net.ParseIP(to).To4()
	if dst == nil {
		return fail("dial", fmt.Errorf("gre: %q is not an IPv4 address", to))
	}
	c, err := net.ListenPacket("ip4:47", "0.0.0.0")
	if err != nil {
		return fail("dial", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.WriteTo(grePacket(greClientCall, []byte(payload)), &net.IPAddr{IP: dst}); err != nil {
		return fail("write", err)
	}
	var r probeResult
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf) // Go strips the IPv4 header
		if err != nil {
			r.Stage, r.Err = "read", err.Error()
			return r
		}
		call, data, ok := parseGRE(buf[:n])
		if !ok {
			continue
		}
		if !from.(*net.IPAddr).IP.Equal(dst) {
			r.After++
			continue
		}
		if call == greServerCall && string(data) == payload {
			r.OK = true
			return r
		}
	}
}

// serveGRE answers GRE sent to server with the server's call ID, after
// sending the same answer from decoy (when set), an address that is no server.
func serveGRE(server, decoy string) error {
	sc, err := net.ListenPacket("ip4:47", server)
	if err != nil {
		return err
	}
	var dc net.PacketConn
	if decoy != "" {
		if dc, err = net.ListenPacket("ip4:47", decoy); err != nil {
			return err
		}
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := sc.ReadFrom(buf)
			if err != nil {
				return
			}
			call, data, ok := parseGRE(buf[:n])
			if !ok || call != greClientCall {
				continue
			}
			answer := grePacket(greServerCall, data)
			if dc != nil {
				_, _ = dc.WriteTo(answer, from)
			}
			_, _ = sc.WriteTo(answer, from)
		}
	}()
	return nil
}

// flood sends a UDP datagram to each destination of `to` (comma-separated
// host:port) every `every`, whatever the sends return, prints "sending"
// after the first round, and when a line arrives on stdin (or after a
// minute) prints its result: Before counts the rounds, After the datagrams
// the kernel took. Its sockets are unconnected: a connected UDP socket
// reports the ICMP error of an earlier send instead of sending, which would
// leave gaps in the stream.
func flood(to string, every time.Duration) probeResult {
	type dest struct {
		pc   net.PacketConn
		addr *net.UDPAddr
	}
	var dests []dest
	for _, a := range strings.Split(to, ",") {
		addr, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			return fail("dial", err)
		}
		network := "udp4"
		if addr.IP.To4() == nil {
			network = "udp6"
		}
		pc, err := net.ListenPacket(network, "")
		if err != nil {
			return fail("dial", err)
		}
		defer pc.Close()
		dests = append(dests, dest{pc, addr})
	}
	signal := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(signal)
	}()
	var r probeResult
	tick := time.NewTicker(every)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for {
		for _, d := range dests {
			if _, err := d.pc.WriteTo([]byte(payload), d.addr); err == nil {
				r.After++
			} else if r.Err == "" {
				r.Stage, r.Err = "write", err.Error()
			}
		}
		if r.Before++; r.Before == 1 {
			fmt.Println("sending")
		}
		select {
		case <-signal:
			r.OK = true
			return r
		case <-deadline:
			return r
		case <-tick.C:
		}
	}
}
