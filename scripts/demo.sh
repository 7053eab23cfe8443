#!/usr/bin/env bash
# vpnfw demonstration, sandboxed in network namespaces of its own: it never
# touches this machine's own network or firewall.
#
#   sudo scripts/demo.sh
#
# Two namespaces: "laptop" (the protected host, running vpnfw-hook) and "net"
# (its ISP, the VPN server at 192.0.2.1 and a web host at 203.0.113.1). A veth
# named tun0 stands in for the VPN tunnel. The ISP counts every packet from
# the laptop that is not the VPN client's own traffic to the server: the leak
# counter.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
WORK=$(mktemp -d /tmp/vpnfw.XXXXXX)

need_root
install_missing iptables:iptables ip:iproute2 socat:socat setpriv:util-linux
build_hook "$WORK/vpnfw-hook"

LAPTOP=vpnfw-demo-laptop-$$
NET=vpnfw-demo-net-$$
cleanup() {
	kill_started
	ip netns del "$LAPTOP" 2>/dev/null || true
	ip netns del "$NET" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

L() { ip netns exec "$LAPTOP" "$@"; }
N() { ip netns exec "$NET" "$@"; }

ip netns add "$LAPTOP"
ip netns add "$NET"
guard_netns "$LAPTOP"
guard_netns "$NET"
L ip link set lo up
N ip link set lo up
# The laptop's uplink through the ISP, and the VPN tunnel stand-in.
ip link add eth0 netns "$LAPTOP" type veth peer name isp0 netns "$NET"
ip link add tun0 netns "$LAPTOP" type veth peer name vpn0 netns "$NET"
L ip addr add 192.0.2.2/24 dev eth0
L ip link set eth0 up
N ip addr add 192.0.2.1/24 dev isp0
N ip link set isp0 up
L ip addr add 198.51.100.2/24 dev tun0
L ip link set tun0 up
N ip addr add 198.51.100.1/24 dev vpn0
N ip link set vpn0 up
N ip addr add 203.0.113.1/32 dev lo
L ip route add default via 192.0.2.1
L ip route add 203.0.113.0/24 via 198.51.100.1 dev tun0

# The ISP's leak counter: everything from the laptop on the uplink except the
# VPN client's traffic to udp/1194 on the server.
N iptables -t raw -N LEAKS
N iptables -t raw -A PREROUTING -i isp0 -s 192.0.2.2 -d 192.0.2.1 -p udp --dport 1194 -j RETURN
N iptables -t raw -A PREROUTING -i isp0 -s 192.0.2.2 -j LEAKS
N iptables -t raw -A LEAKS -j RETURN
leaks() { N iptables -t raw -L LEAKS -v -x -n | awk '$3 == "RETURN" {print $1}'; }

# A web host and the VPN server's UDP port, both answering "hello".
start_bg ip netns exec "$NET" socat -T2 TCP-LISTEN:80,bind=203.0.113.1,reuseaddr,fork SYSTEM:'echo hello from 203.0.113.1'
start_bg ip netns exec "$NET" socat -T2 TCP-LISTEN:80,bind=192.0.2.1,reuseaddr,fork SYSTEM:'echo hello from 192.0.2.1'
start_bg ip netns exec "$NET" socat -T2 UDP-RECVFROM:1194,bind=192.0.2.1,fork SYSTEM:'echo hello from the vpn server'
sleep 0.5

VPN_UID=4242
cat >"$WORK/vpnfw.env" <<EOF
VPNFW_SERVERS=192.0.2.1
VPNFW_SERVER_PORTS=udp/1194
VPNFW_VPN_USER=$VPN_UID
EOF
chmod 600 "$WORK/vpnfw.env"
hook() { L env -i "$WORK/vpnfw-hook" --config "$WORK/vpnfw.env" --log-format console "$@"; }

# try DESCRIPTION CMD...: runs a client in the laptop, says what happened.
try() {
	local what=$1
	shift
	local out
	if out=$(L timeout 3 "$@" 2>&1) && [ -n "$out" ]; then
		printf '   %-52s -> got "%s"\n' "$what" "$out"
	else
		# socat ends its error with the system's words: "No route to host", ...
		printf '   %-52s -> blocked: %s\n' "$what" "$(echo "${out:-no answer}" | tail -n1 | sed 's/.*: //')"
	fi
}
web() { try "$1: GET http://$2/" socat -T2 - "TCP:$2:80,connect-timeout=2" </dev/null; }
vpnclient() { try "$1" setpriv --reuid="$VPN_UID" --regid="$VPN_UID" --clear-groups socat -T2 - UDP:192.0.2.1:1194 <<<'hi'; }
otherudp() { try "$1" socat -T2 - UDP:192.0.2.1:1194 <<<'hi'; }

say "1. Boot: vpnfw-hook baseline applies the blocked state"
hook baseline
web "no tunnel" 203.0.113.1
web "VPN server IP" 192.0.2.1
otherudp "any process to the VPN port (udp/1194)"
vpnclient "the VPN client (uid $VPN_UID) to udp/1194"
echo "   leak counter at the ISP: $(leaks)"

say "2. The VPN connects: OpenVPN calls vpnfw-hook as its up script"
L env -i script_type=up dev=tun0 trusted_ip=192.0.2.1 trusted_port=1194 proto_1=udp \
	"$WORK/vpnfw-hook" --config "$WORK/vpnfw.env" --log-format console tun0 1500 0 10.8.0.2 255.255.255.0 init
web "through the tunnel" 203.0.113.1
web "VPN server IP, not tunnelled" 192.0.2.1
echo "   leak counter at the ISP: $(leaks)"
hook status | sed 's/^/   /' | head -n 6

say "3. The VPN dies (kill -9: no down script runs); routing falls back to eth0"
ip -n "$LAPTOP" link del tun0
L ip route add 203.0.113.0/24 via 192.0.2.1 dev eth0
web "the tunnel is gone" 203.0.113.1
echo "   leak counter at the ISP: $(leaks)"
hook check | sed 's/^/   /'

say "4. For contrast, the same without vpnfw (disarm --yes)"
hook disarm --yes
web "the tunnel is gone" 203.0.113.1
echo "   leak counter at the ISP: $(leaks)   <- in clear, past the ISP"

say "Done: with vpnfw the leak counter stayed 0; without it the traffic went out in clear."
