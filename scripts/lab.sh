# shellcheck shell=bash
# The end-to-end leak lab: four network namespaces of its own, a real OpenVPN
# server and client, and the ISP's leak counter. Source it after lib.sh; it
# runs nothing itself. Used by scripts/leaktest.sh and scripts/demo.sh.
#
#   client    the protected host: vpnfw-hook and the OpenVPN client.
#             eth0 192.0.2.2/25, 2001:db8:1::2/64; default routes via the ISP.
#   isp       routes between the others, and counts every packet from the
#             client except the VPN client's own (OpenVPN packets to the
#             server's udp/1194): the leak counter, IPv4 and IPv6.
#   vpn       the OpenVPN server at 192.0.2.130/25, 2001:db8:2::2/64, udp/1194;
#             the tunnel networks 198.51.100.0/24 and 2001:db8:4::/64 are NATed
#             to its uplink. The same host also answers TCP echo on 7 and 1194
#             and UDP echo on 7 (the shared VPN/Tor server case).
#   internet  the host 203.0.113.10/24, 2001:db8:3::10/64: TCP and UDP echo on
#             7, a UDP sink on 9; it counts what arrives through the tunnel
#             (NATed by the server) and what arrives in clear from the client.
#
# Only documentation addresses are used. Nothing runs in this machine's own
# network namespace: every namespace is created here and checked with
# guard_netns, and lab_down deletes them and ends the processes lab_* started.

LAB_CLIENT4=192.0.2.2 LAB_CLIENT6=2001:db8:1::2
LAB_SERVER4=192.0.2.130 LAB_SERVER6=2001:db8:2::2
LAB_HOST4=203.0.113.10 LAB_HOST6=2001:db8:3::10
LAB_PORT=1194  # the server's udp port
LAB_MARK=119
LAB_UID=4242 # the VPN client's dedicated user (a bare uid: no passwd entry needed)

LAB_SEQ=0
LAB_DIR='' LAB_HOOK='' LAB_ENV='' LAB_MODE='' LAB_OVPN_PID='' LAB_OVPN_LOG='' LAB_OVPN_CONF='' LAB_LAST_PID=''
LAB_SERVER_LOG='' LAB_FLOOD_PIDS=() LAB_FLOOD_STOP='' LAB_CAPTURE_PID='' LAB_CAPTURED=0
LAB_OVPN_EXTRA=() # options lab_vpn_start adds after --config
LAB_NS=()

# lab_packages: CMD:PACKAGE pairs for install_missing.
lab_packages() {
	echo ip:iproute2 iptables-legacy:iptables iptables-nft:iptables nft:nftables openvpn:openvpn \
		openssl:openssl socat:socat setpriv:util-linux unshare:util-linux mount:mount \
		sysctl:procps ping:iputils-ping
}

# lab_init DIR HOOK: the lab's files go to DIR (made traversable, since the
# OpenVPN client may run as LAB_UID), HOOK is the built vpnfw-hook. Makes the
# PKI: a CA, a server and a client certificate, EC keys, valid two days.
lab_init() {
	LAB_DIR=$1 LAB_HOOK=$2
	chmod 0755 "$LAB_DIR"
	local d=$LAB_DIR/pki who eku
	mkdir -p "$d" "$LAB_DIR/dev"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$d/ca.key" -subj "/CN=vpnfw lab CA" -days 2 -out "$d/ca.crt" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	for who in server client; do
		eku=serverAuth
		[ "$who" = client ] && eku=clientAuth
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$who.key" 2>/dev/null
		openssl req -new -key "$d/$who.key" -subj "/CN=vpnfw-lab-$who" -out "$d/$who.csr" 2>/dev/null
		printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n' "$eku" >"$d/$who.ext"
		openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
			-days 2 -extfile "$d/$who.ext" -out "$d/$who.crt" 2>/dev/null
	done
	# The client key is the VPN client's: readable by LAB_UID in user mode.
	chown "root:$LAB_UID" "$d/client.key"
	chmod 0640 "$d/client.key"
}

C() { ip netns exec "${LAB_NS[0]}" "$@"; }
ISP() { ip netns exec "${LAB_NS[1]}" "$@"; }
VPN() { ip netns exec "${LAB_NS[2]}" "$@"; }
NET() { ip netns exec "${LAB_NS[3]}" "$@"; }

lab_ns_add() {
	ip netns add "$1"
	guard_netns "$1"
	ip -n "$1" link set lo up
}

# lab_up: builds the namespaces, links, routes, counters, listeners and the
# OpenVPN server. The client's uplink stays down until lab_client_online, so
# the caller arms the firewall before the client can send anything.
lab_up() {
	LAB_SEQ=$((LAB_SEQ + 1))
	local p=vpnfw-lab-$$-$LAB_SEQ
	LAB_NS=("$p-client" "$p-isp" "$p-vpn" "$p-inet")
	local ns
	for ns in "${LAB_NS[@]}"; do
		lab_ns_add "$ns"
	done
	# No router solicitations or autoconfiguration: the addresses are static.
	C sysctl -qw net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.default.accept_ra=0
	ISP sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	VPN sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

	ip -n "${LAB_NS[1]}" link add c0 type veth peer name eth0 netns "${LAB_NS[0]}"
	ip -n "${LAB_NS[1]}" link add v0 type veth peer name eth0 netns "${LAB_NS[2]}"
	ip -n "${LAB_NS[1]}" link add i0 type veth peer name eth0 netns "${LAB_NS[3]}"
	C ip addr add "$LAB_CLIENT4/25" dev eth0
	C ip addr add "$LAB_CLIENT6/64" dev eth0 nodad
	ISP ip addr add 192.0.2.1/25 dev c0
	ISP ip addr add 2001:db8:1::1/64 dev c0 nodad
	ISP ip addr add 192.0.2.129/25 dev v0
	ISP ip addr add 2001:db8:2::1/64 dev v0 nodad
	ISP ip addr add 203.0.113.1/24 dev i0
	ISP ip addr add 2001:db8:3::1/64 dev i0 nodad
	VPN ip addr add "$LAB_SERVER4/25" dev eth0
	VPN ip addr add "$LAB_SERVER6/64" dev eth0 nodad
	NET ip addr add "$LAB_HOST4/24" dev eth0
	NET ip addr add "$LAB_HOST6/64" dev eth0 nodad
	for ns in 1 2 3; do
		ip -n "${LAB_NS[ns]}" link set eth0 up 2>/dev/null || true
	done
	ISP ip link set c0 up
	ISP ip link set v0 up
	ISP ip link set i0 up
	VPN ip route add default via 192.0.2.129
	VPN ip -6 route add default via 2001:db8:2::1
	NET ip route add default via 203.0.113.1
	NET ip -6 route add default via 2001:db8:3::1

	# The ISP's leak counter. The ISP sees no marks or uids: it tells the VPN
	# client's packets apart by address, port and look (the first byte of an
	# OpenVPN packet holds its opcode, 4 to 11). The lab's probes and floods
	# send text starting with a lowercase letter (opcode 12 or more), so an
	# ordinary process sending to the server's udp/1194 is counted.
	local ipt
	for ipt in iptables ip6tables; do
		ISP "$ipt" -t raw -N LEAK
		ISP "$ipt" -t raw -A LEAK -j ACCEPT
	done
	ISP iptables -t raw -N VPNCLIENT
	ISP iptables -t raw -A VPNCLIENT -j ACCEPT
	ISP iptables -t raw -A PREROUTING -i c0 -s "$LAB_CLIENT4" -d "$LAB_SERVER4" -p udp --dport "$LAB_PORT" \
		-m u32 --u32 "0>>22&0x3C@8>>27=4:11" -j VPNCLIENT
	ISP iptables -t raw -A PREROUTING -i c0 -j LEAK
	ISP ip6tables -t raw -A PREROUTING -i c0 -j LEAK

	# The internet host counts what arrives through the tunnel (NATed to the
	# server's address) and in clear (from the client's own addresses).
	NET iptables -t raw -N TUNNELED
	NET iptables -t raw -A TUNNELED -j ACCEPT
	NET iptables -t raw -N CLEAR
	NET iptables -t raw -A CLEAR -j ACCEPT
	NET iptables -t raw -A PREROUTING -s "$LAB_SERVER4" -j TUNNELED
	NET iptables -t raw -A PREROUTING -s 192.0.2.0/25 -j CLEAR
	NET iptables -t raw -A PREROUTING -s 198.51.100.0/24 -j CLEAR
	NET ip6tables -t raw -N TUNNELED
	NET ip6tables -t raw -A TUNNELED -j ACCEPT
	NET ip6tables -t raw -N CLEAR
	NET ip6tables -t raw -A CLEAR -j ACCEPT
	NET ip6tables -t raw -A PREROUTING -s "$LAB_SERVER6" -j TUNNELED
	NET ip6tables -t raw -A PREROUTING -s 2001:db8:1::/64 -j CLEAR
	NET ip6tables -t raw -A PREROUTING -s 2001:db8:4::/64 -j CLEAR

	# Listeners: dual-stack echo servers, a UDP sink.
	# (-T: a connection idle for 20 s ends; none is idle that long, yet no
	# child outlives a flow whose client vanished.)
	lab_bg "$LAB_DIR/listeners.log" ip netns exec "${LAB_NS[3]}" socat -T20 TCP6-LISTEN:7,ipv6only=0,reuseaddr,fork PIPE
	lab_bg "$LAB_DIR/listeners.log" ip netns exec "${LAB_NS[3]}" socat -T1 UDP6-RECVFROM:7,ipv6only=0,fork PIPE
	lab_bg "$LAB_DIR/listeners.log" ip netns exec "${LAB_NS[3]}" socat -u UDP6-RECV:9,ipv6only=0 OPEN:/dev/null
	lab_bg "$LAB_DIR/listeners.log" ip netns exec "${LAB_NS[2]}" socat -T20 TCP6-LISTEN:7,ipv6only=0,reuseaddr,fork PIPE
	lab_bg "$LAB_DIR/listeners.log" ip netns exec "${LAB_NS[2]}" socat -T20 TCP6-LISTEN:"$LAB_PORT",ipv6only=0,reuseaddr,fork PIPE
	lab_bg "$LAB_DIR/listeners.log" ip netns exec "${LAB_NS[2]}" socat -T1 UDP6-RECVFROM:7,ipv6only=0,fork PIPE

	# The OpenVPN server, NATing its tunnel networks to its uplink.
	VPN iptables -t nat -A POSTROUTING -s 198.51.100.0/24 -o eth0 -j MASQUERADE
	VPN ip6tables -t nat -A POSTROUTING -s 2001:db8:4::/64 -o eth0 -j MASQUERADE
	cat >"$LAB_DIR/server.conf" <<EOF
dev tun
proto udp4
local $LAB_SERVER4
port $LAB_PORT
topology subnet
server 198.51.100.0 255.255.255.0
server-ipv6 2001:db8:4::/64
push "redirect-gateway def1 ipv6"
keepalive 1 5
ca $LAB_DIR/pki/ca.crt
cert $LAB_DIR/pki/server.crt
key $LAB_DIR/pki/server.key
dh none
verb 3
EOF
	LAB_SERVER_LOG=$LAB_DIR/server-$LAB_SEQ.log
	lab_bg "$LAB_SERVER_LOG" ip netns exec "${LAB_NS[2]}" openvpn --config "$LAB_DIR/server.conf"
	lab_wait_log "$LAB_SERVER_LOG" 1 10 || {
		echo "the OpenVPN server did not start; its log:" >&2
		tail -n 20 "$LAB_SERVER_LOG" >&2
		return 1
	}
}

# lab_client_online: brings the client's uplink up, with its default routes.
lab_client_online() {
	C ip link set eth0 up
	C ip route add default via 192.0.2.1
	C ip -6 route add default via 2001:db8:1::1
}

# lab_down: ends what lab_* started and deletes the namespaces. Processes
# those forked (socat's per-connection children) are ended first, by PID,
# while their parents are alive to reap them: every process in a namespace
# of the lab is the lab's.
lab_down() {
	local ns p strays=()
	for ns in "${LAB_NS[@]}"; do
		for p in $(ip netns pids "$ns" 2>/dev/null); do
			[[ " ${STARTED_PIDS[*]} " == *" $p "* ]] || strays+=("$p")
		done
	done
	if [ ${#strays[@]} -gt 0 ]; then
		kill "${strays[@]}" 2>/dev/null || true
		sleep 0.2
	fi
	kill_started
	LAB_OVPN_PID=''
	for ns in "${LAB_NS[@]}"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	LAB_NS=()
}

# lab_bg LOG CMD...: starts CMD in the background, output appended to LOG,
# and remembers its PID for kill_started (ip netns exec, unshare, setpriv and
# sh's exec replace themselves, so the PID is the final program's).
lab_bg() {
	local log=$1
	shift
	"$@" >>"$log" 2>&1 </dev/null &
	STARTED_PIDS+=($!)
	LAB_LAST_PID=$!
}

# lab_forget PID: PID has been reaped; kill_started must not signal it again.
lab_forget() {
	local keep=() p
	for p in "${STARTED_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	STARTED_PIDS=("${keep[@]}")
}

# lab_wait_log LOG N SECONDS: waits until OpenVPN's log says
# "Initialization Sequence Completed" N times.
lab_wait_log() {
	local deadline=$((SECONDS + $3)) n
	while :; do
		n=$(grep -c 'Initialization Sequence Completed' "$1" 2>/dev/null) || true
		[ "${n:-0}" -lt "$2" ] || return 0
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# lab_configure MODE [BACKEND]: writes the client's vpnfw configuration and
# OpenVPN configuration for MODE, mark or user. BACKEND (iptables or
# nftables) becomes VPNFW_BACKEND; without it the configuration has no such
# line, so the default, auto, picks the backend. The OpenVPN configuration is the
# project's example, openvpn-examples/client-MODE.conf, with only its
# site-specific lines changed: the remote, the certificates, and the hook's
# and its configuration's paths. (Options given after --config on OpenVPN's
# command line would not do: OpenVPN checks each up/down script when it
# parses it, so the example's /usr/local/bin/vpnfw-hook would have to
# exist, and a second remote is added to the list instead of replacing it.)
lab_configure() {
	LAB_MODE=$1
	LAB_OVPN_LOG=$LAB_DIR/client-$LAB_SEQ-$1.log
	LAB_ENV=$LAB_DIR/vpnfw-$1.env
	{
		echo "VPNFW_SERVERS=$LAB_SERVER4"
		echo "VPNFW_SERVER_PORTS=udp/$LAB_PORT"
		if [ "$1" = mark ]; then
			echo "VPNFW_VPN_MARK=$LAB_MARK"
		else
			echo "VPNFW_VPN_USER=$LAB_UID"
		fi
		echo "VPNFW_IPV6=tunnel"
		[ -z "${2:-}" ] || echo "VPNFW_BACKEND=$2"
	} >"$LAB_ENV"
	# Root's, not writable by others, readable by the VPN client's user.
	chown "root:$LAB_UID" "$LAB_ENV"
	chmod 0640 "$LAB_ENV"

	local example=openvpn-examples/client-$1.conf conf=$LAB_DIR/client-$1.conf
	sed -e "s|^remote .*|remote $LAB_SERVER4 $LAB_PORT|" \
		-e "s|^ca .*|ca $LAB_DIR/pki/ca.crt|" \
		-e "s|^cert .*|cert $LAB_DIR/pki/client.crt|" \
		-e "s|^key .*|key $LAB_DIR/pki/client.key|" \
		-e "/^\(up\|route-up\|down\) /s|/usr/local/bin/vpnfw-hook --config /etc/vpn-firewall/vpnfw.env|$LAB_HOOK --config $LAB_ENV|" \
		"$example" >"$conf"
	chmod 0644 "$conf"
	# Every other line is the example's own; the hook lines must point here.
	local changed
	changed=$(diff "$example" "$conf" | grep -c '^>' || true)
	if [ "$changed" -ne 7 ] || [ "$(grep -c "^\(up\|route-up\|down\) .*$LAB_HOOK --config $LAB_ENV\"\$" "$conf")" -ne 3 ]; then
		echo "lab_configure: $example no longer has the expected site-specific lines:" >&2
		diff "$example" "$conf" >&2 || true
		return 1
	fi
	LAB_OVPN_CONF=$conf
}

# lab_vpn_start: starts the OpenVPN client the way the mode runs it in
# production, logging to LAB_OVPN_LOG; sets LAB_OVPN_PID. LAB_OVPN_EXTRA
# follows --config on OpenVPN's command line.
#   mark: as root (the mark needs CAP_NET_ADMIN).
#   user: as LAB_UID from the start with ambient CAP_NET_ADMIN only, what the
#         systemd drop-in in openvpn-examples/ does. /dev/net/tun is 0600 on
#         some machines (no udev), so OpenVPN gets a private mount namespace
#         with a 0666 node of its own bound over it; the host's is untouched.
lab_vpn_start() {
	: >>"$LAB_OVPN_LOG"
	if [ "$LAB_MODE" = mark ]; then
		lab_bg "$LAB_OVPN_LOG" ip netns exec "${LAB_NS[0]}" openvpn --config "$LAB_OVPN_CONF" "${LAB_OVPN_EXTRA[@]}"
	else
		# shellcheck disable=SC2016 # $1 and $@ are the inner shell's
		lab_bg "$LAB_OVPN_LOG" ip netns exec "${LAB_NS[0]}" unshare --mount --propagation private sh -c '
			mount -t tmpfs -o mode=0755,size=16k vpnfw-lab-dev "$1" &&
			mknod -m 0666 "$1/tun" c 10 200 &&
			mount --bind "$1/tun" /dev/net/tun &&
			shift && exec "$@"' sh "$LAB_DIR/dev" \
			setpriv --reuid "$LAB_UID" --regid "$LAB_UID" --clear-groups \
			--bounding-set -all,+net_admin --inh-caps -all,+net_admin --ambient-caps -all,+net_admin \
			openvpn --config "$LAB_OVPN_CONF" "${LAB_OVPN_EXTRA[@]}"
	fi
	LAB_OVPN_PID=$LAB_LAST_PID
}

# lab_vpn_up SECONDS: starts the OpenVPN client and waits until it has
# connected and run its up and route-up hooks.
lab_vpn_up() {
	local n
	n=$(lab_inits)
	lab_vpn_start
	lab_wait_log "$LAB_OVPN_LOG" $((n + 1)) "${1:-20}"
}

# lab_inits: how often the client's log says it completed initialisation.
lab_inits() { grep -c 'Initialization Sequence Completed' "$LAB_OVPN_LOG" 2>/dev/null || true; }

# lab_vpn_signal SIG: sends SIG to the OpenVPN client.
lab_vpn_signal() { [ -n "$LAB_OVPN_PID" ] && kill -s "$1" "$LAB_OVPN_PID"; }

# lab_vpn_wait_exit SECONDS: waits for the OpenVPN client to end, reaps it.
lab_vpn_wait_exit() {
	[ -n "$LAB_OVPN_PID" ] || return 0
	local deadline=$((SECONDS + ${1:-10}))
	while kill -0 "$LAB_OVPN_PID" 2>/dev/null && [ "$(ps -o stat= -p "$LAB_OVPN_PID" 2>/dev/null | cut -c1)" != Z ]; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.05
	done
	wait "$LAB_OVPN_PID" 2>/dev/null || true
	lab_forget "$LAB_OVPN_PID"
	LAB_OVPN_PID=
}

# lab_vpn_kill9: kill -9 of the OpenVPN client: no down script runs.
lab_vpn_kill9() {
	[ -n "$LAB_OVPN_PID" ] || return 0
	kill -9 "$LAB_OVPN_PID"
	# Reaped at once, so bash has no "Killed" to report later.
	wait "$LAB_OVPN_PID" 2>/dev/null || true
	lab_forget "$LAB_OVPN_PID"
	LAB_OVPN_PID=
}

# lab_hook ARGS...: vpnfw-hook in the client, with an empty environment as
# OpenVPN gives it, as root.
lab_hook() { C env -i "$LAB_HOOK" --config "$LAB_ENV" --log-format json "$@"; }

# lab_counter NS FAMILY CHAIN: packets counted by the lab's counter chain.
lab_counter() {
	local ipt=iptables
	[ "$2" = 6 ] && ipt=ip6tables
	ip netns exec "$1" "$ipt" -t raw -nvxL "$3" | awk 'NR == 3 {print $1}'
}

# lab_leaks: every packet from the client the ISP saw, except the VPN
# client's own to the server's port, IPv4 and IPv6 together.
lab_leaks() { echo $(($(lab_counter "${LAB_NS[1]}" 4 LEAK) + $(lab_counter "${LAB_NS[1]}" 6 LEAK))); }

# lab_vpnpkts: the VPN client's own packets the ISP saw.
lab_vpnpkts() { lab_counter "${LAB_NS[1]}" 4 VPNCLIENT; }

# lab_tunneled / lab_clear: packets the internet host got through the tunnel
# / in clear from the client, IPv4 and IPv6 together.
lab_tunneled() { echo $(($(lab_counter "${LAB_NS[3]}" 4 TUNNELED) + $(lab_counter "${LAB_NS[3]}" 6 TUNNELED))); }
lab_clear() { echo $(($(lab_counter "${LAB_NS[3]}" 4 CLEAR) + $(lab_counter "${LAB_NS[3]}" 6 CLEAR))); }

# lab_addr HOST: HOST as socat wants it ([...] around IPv6).
lab_addr() { case $1 in *:*) echo "[$1]" ;; *) echo "$1" ;; esac; }

# lab_tcp HOST PORT: an ordinary process in the client (root, no mark)
# connects and expects its line echoed back within 3 seconds.
lab_tcp() {
	local out
	out=$(echo "vpnfw-lab $1 $2" | C timeout 4 socat -T3 - "TCP:$(lab_addr "$1"):$2,connect-timeout=3" 2>/dev/null) || true
	[ "$out" = "vpnfw-lab $1 $2" ]
}

# lab_udp HOST PORT: the same with a UDP datagram.
lab_udp() {
	local out
	out=$(echo "vpnfw-lab $1 $2" | C timeout 4 socat -T2 - "UDP:$(lab_addr "$1"):$2" 2>/dev/null) || true
	[ "$out" = "vpnfw-lab $1 $2" ]
}

# lab_ping HOST: one echo request, 2 seconds to answer.
lab_ping() { C ping -n -q -c 1 -W 2 "$1" >/dev/null 2>&1; }

# lab_flood SECONDS: starts a bounded flood from the client in the
# background, as an ordinary process: every 10 ms a UDP datagram to the
# internet host over IPv4 and IPv6, a TCP connection attempt (1 s at most)
# alternating between the families, and pings of both; it ends after at most
# SECONDS or 100 rounds a second, or at lab_flood_stop. Sets LAB_FLOOD_PIDS.
lab_flood() {
	local secs=$1 rounds=$(($1 * 100))
	LAB_FLOOD_STOP=$LAB_DIR/flood-stop
	rm -f "$LAB_FLOOD_STOP"
	# shellcheck disable=SC2016 # the inner shell expands these
	lab_bg /dev/null ip netns exec "${LAB_NS[0]}" bash -c '
		trap "" PIPE
		end=$((SECONDS + $1))
		for ((i = 0; i < $2 && SECONDS < end; i++)); do
			[ ! -e "$5" ] || break
			{ echo "flood $i" >"/dev/udp/$3/9"; } 2>/dev/null
			{ echo "flood $i" >"/dev/udp/$4/9"; } 2>/dev/null
			if ((i % 2)); then h=$3; else h=$4; fi
			timeout 1 bash -c "exec 3<>/dev/tcp/$h/7" 2>/dev/null
			sleep 0.01
		done' flood "$secs" "$rounds" "$LAB_HOST4" "$LAB_HOST6" "$LAB_FLOOD_STOP"
	LAB_FLOOD_PIDS=("$LAB_LAST_PID")
	lab_bg /dev/null ip netns exec "${LAB_NS[0]}" timeout "$secs" ping -n -q -i 0.02 -c $((secs * 50)) "$LAB_HOST4"
	LAB_FLOOD_PIDS+=("$LAB_LAST_PID")
	lab_bg /dev/null ip netns exec "${LAB_NS[0]}" timeout "$secs" ping -n -q -i 0.02 -c $((secs * 50)) "$LAB_HOST6"
	LAB_FLOOD_PIDS+=("$LAB_LAST_PID")
}

# lab_flood_wait: waits for the flood to end by itself (it is bounded).
lab_flood_wait() {
	local p
	for p in "${LAB_FLOOD_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
		lab_forget "$p"
	done
	LAB_FLOOD_PIDS=()
}

# lab_flood_stop: ends the flood early: the loop at its next round (so it
# reaps its own children), the pings by their PIDs (timeout passes the
# signal on and reaps ping).
lab_flood_stop() {
	local p
	touch "$LAB_FLOOD_STOP"
	for p in "${LAB_FLOOD_PIDS[@]:1}"; do
		kill "$p" 2>/dev/null || true
	done
	lab_flood_wait
}

# lab_capture_start FILE: the ISP's second witness, a packet capture on its
# link to the client of what arrives from the client, less OpenVPN's packets
# to the server: the leak counter's distinction made by libpcap instead of
# netfilter. Sets LAB_CAPTURE_PID.
lab_capture_start() {
	lab_bg "$LAB_DIR/capture.log" ip netns exec "${LAB_NS[1]}" tcpdump -Z root -i c0 -Q in -n --immediate-mode -U -w "$1" \
		"(ip or ip6) and not (ip and src host $LAB_CLIENT4 and dst host $LAB_SERVER4 and udp dst port $LAB_PORT and udp[8] >= 0x20 and udp[8] < 0x60)"
	LAB_CAPTURE_PID=$LAB_LAST_PID
	local deadline=$((SECONDS + 10))
	until grep -q 'listening on' "$LAB_DIR/capture.log" 2>/dev/null; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# lab_capture_stop FILE: ends the capture; LAB_CAPTURED is how many packets
# it holds. (Not in a subshell: it reaps the capture, a child of this shell.)
lab_capture_stop() {
	sleep 0.5 # the last packets reach the file
	kill -INT "$LAB_CAPTURE_PID" 2>/dev/null || true
	wait "$LAB_CAPTURE_PID" 2>/dev/null || true
	lab_forget "$LAB_CAPTURE_PID"
	LAB_CAPTURE_PID=''
	# shellcheck disable=SC2034 # for the caller
	LAB_CAPTURED=$(tcpdump -r "$1" -n 2>/dev/null | wc -l)
}

# lab_ruleset: the client's whole nftables ruleset (vpnfw's table, and
# iptables-nft's tables as nft sees them) and the filter tables of both
# iptables flavours and families, without counters: what "more permissive"
# is measured against.
lab_ruleset() {
	local t
	echo "## nft"
	C nft -s list ruleset 2>&1
	for t in iptables-nft-save ip6tables-nft-save iptables-legacy-save ip6tables-legacy-save; do
		case $t in
		iptables-legacy-save) C grep -q . /proc/net/ip_tables_names || continue ;;
		ip6tables-legacy-save) C grep -q . /proc/net/ip6_tables_names || continue ;;
		esac
		echo "## $t"
		C "$t" -t filter 2>&1 | sed -e '/^#/d' -e 's/\[[0-9]*:[0-9]*\]//'
	done
}
