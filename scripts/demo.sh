#!/usr/bin/env bash
# vpnfw demonstration with a real OpenVPN, sandboxed in network namespaces of
# its own: it never touches this machine's own network or firewall.
#
#   sudo scripts/demo.sh
#
# The lab of scripts/lab.sh: a "laptop" (the protected host, running
# vpnfw-hook and a real OpenVPN client configured with
# openvpn-examples/client-mark.conf), its ISP, a real OpenVPN server at
# 192.0.2.130 and a host on the internet at 203.0.113.10. The ISP counts every
# packet from the laptop that is not its VPN connection: the leak counter.
# The configuration leaves VPNFW_BACKEND at its default, auto, which picks
# nftables here: vpnfw's rules are one table of its own, inet vpnfw.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=scripts/lab.sh
. scripts/lab.sh

need_root
# shellcheck disable=SC2046 # one word per package
install_missing $(lab_packages)
WORK=$(mktemp -d /tmp/vpnfw.XXXXXX)
cleanup() {
	lab_down
	rm -rf "$WORK"
}
trap cleanup EXIT
echo "building vpnfw-hook ..."
build_hook "$WORK/vpnfw-hook"
echo "setting up the lab: certificates, namespaces, the OpenVPN server ..."
lab_init "$WORK" "$WORK/vpnfw-hook"
lab_up
lab_configure mark

hook() { C env -i "$LAB_HOOK" --config "$LAB_ENV" --log-format console "$@"; }

# try DESCRIPTION HOST PORT: a program on the laptop (not OpenVPN) sends a
# line to HOST's TCP echo service; says what came back.
try() {
	local what=$1 out
	if out=$(echo "hello" | C timeout 4 socat -T3 - "TCP:$(lab_addr "$2"):$3,connect-timeout=3" 2>&1) && [ "$out" = hello ]; then
		printf '   %-50s -> answered "%s"\n' "$what" "$out"
	else
		# socat ends its error with the system's words: "Connection refused", ...
		printf '   %-50s -> blocked: %s\n' "$what" "$(echo "${out:-no answer}" | tail -n1 | sed 's/.*: //')"
	fi
}
leaks() { echo "   leak counter at the ISP: $(lab_leaks)${1:-}"; }
# nft_show ARGS: what `nft list ARGS` prints in the laptop, indented, without
# the counters.
nft_show() { C nft list "$@" | sed -n -e 's/counter packets [0-9]* bytes [0-9]* //' -e 's/^\t\{1,\}/     /p'; }

say "1. Boot: vpnfw-hook baseline applies the blocked state"
hook baseline
if C nft list table inet vpnfw >/dev/null 2>&1; then
	nft=yes
	echo "   VPNFW_BACKEND is not set: auto picked nftables. The table's IPv4 output chain"
	echo "   (nft list chain inet vpnfw output_v4):"
	nft_show chain inet vpnfw output_v4 | grep -v -e 'chain output_v4' -e '^ *}$'
else
	nft=no
	echo "   VPNFW_BACKEND is not set: auto picked iptables, as this kernel lacks nftables"
fi
lab_client_online
try "to the internet, no VPN yet" "$LAB_HOST4" 7
try "to the internet over IPv6" "$LAB_HOST6" 7
try "to the VPN server's address, another port" "$LAB_SERVER4" 7
leaks

say "2. OpenVPN connects (openvpn-examples/client-mark.conf); it runs vpnfw-hook as its up and route-up script"
lab_vpn_up 20 || {
	echo "OpenVPN did not connect; its log:" >&2
	tail -n 20 "$LAB_OVPN_LOG" >&2
	exit 1
}
grep '"event":"up"' "$LAB_OVPN_LOG" | tail -n 1 |
	sed -E 's/.*"event":"([^"]*)","state":"([^"]*)","backend":"([^"]*)".*"tunnels":\[([^]]*)\].*"took":"([^"]*)".*/   OpenVPN ran vpnfw-hook: \1 -> state \2, tunnels \4, with \3, in \5/' | tr -d '"'
tunneled=$(lab_tunneled)
try "to the internet, through the tunnel" "$LAB_HOST4" 7
try "to the internet over IPv6, through the tunnel" "$LAB_HOST6" 7
try "to the VPN server's address, not tunnelled" "$LAB_SERVER4" 7
echo "   the internet host got $(($(lab_tunneled) - tunneled)) packets from the VPN server, $(lab_clear) from the laptop itself"
leaks
hook status | sed 's/^/   /' | head -n 4
if [ "$nft" = yes ]; then
	echo "   up changed one thing in the table, the set of allowed tunnels (nft list set inet vpnfw tunnels):"
	nft_show set inet vpnfw tunnels | grep elements
fi

say "3. OpenVPN is killed (kill -9: no down script runs); routing falls back to the ISP"
lab_vpn_kill9
echo "   route to the internet now: $(C ip route get "$LAB_HOST4" | head -n 1 | sed 's/ uid 0 *$//')"
try "to the internet, the tunnel is gone" "$LAB_HOST4" 7
try "to the internet over IPv6" "$LAB_HOST6" 7
leaks
hook check | sed 's/^/   /'
echo "   (tun0 is still allowed, as no down script ran, but it no longer exists: nothing can use it)"

say "4. For contrast, the same without vpnfw (disarm --yes)"
hook disarm --yes
try "to the internet, the tunnel is gone" "$LAB_HOST4" 7
try "to the internet over IPv6" "$LAB_HOST6" 7
try "to the VPN server's address" "$LAB_SERVER4" 7
leaks "   <- in clear, past the ISP"
echo "   the internet host got $(lab_clear) packets straight from the laptop"

say "Done: with vpnfw the leak counter stayed 0; without it the traffic went out in clear."
