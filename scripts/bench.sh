#!/usr/bin/env bash
# Hook latency against its floor, in a network namespace of its own:
#
#   sudo scripts/bench.sh [ROUNDS]
#
# For each backend and server-list size (1, 1000 and 10000 VPN servers, each
# with two ports; BENCH_SERVERS="1 1000" picks others) it times ROUNDS hook
# calls of each kind, `up --dev tun0` and `down --dev tun0` (what OpenVPN
# triggers), and ROUNDS bare runs of the very same kernel change, and prints
# the ratio:
#   nftables  the bare change is `nft add element inet vpnfw tunnels { "tun0" }`
#             and `nft delete element ...`: up and down change only the tunnels
#             set, whatever the number of servers.
#   iptables  (both flavours) the bare change is iptables-restore +
#             ip6tables-restore --noflush of the transactions the hook sends:
#             it rewrites vpnfw's chains, a rule per server and port.
# The bare change is the floor every apply needs; the rest is the hook's own
# cost (configuration, reading the live state, process start). The rules and
# chains columns count what vpnfw holds in the kernel while connected: rules
# in table inet vpnfw, or in the VPNFW-* chains of both families. iptables
# runs with 10000 servers take at most 5 rounds, as each op rewrites tens of
# thousands of rules.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
WORK=$(mktemp -d /tmp/vpnfw.XXXXXX)

ROUNDS=${1:-50}
SERVERS=${BENCH_SERVERS:-1 1000 10000}
need_root
install_missing iptables:iptables ip:iproute2 nft:nftables
build_hook "$WORK/vpnfw-hook"

NS=vpnfw-bench-$$
cleanup() {
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
guard_netns "$NS"
X() { ip netns exec "$NS" "$@"; }

# now_us: microseconds, without starting a process.
now_us() { echo "${EPOCHREALTIME/./}"; }

# config N BACKEND: a configuration with N VPN servers.
config() {
	local i servers=""
	for ((i = 0; i < $1; i++)); do
		servers+=" 198.51.$((100 + i / 250)).$((i % 250 + 1))"
	done
	printf 'VPNFW_SERVERS=%s\nVPNFW_SERVER_PORTS=udp/1194 tcp/443\nVPNFW_VPN_MARK=119\nVPNFW_BACKEND=%s\n' "$servers" "$2" >"$WORK/vpnfw.env"
	chmod 600 "$WORK/vpnfw.env"
}

hook() { X env -i "$WORK/vpnfw-hook" --config "$WORK/vpnfw.env" --log-format json "$@" 2>/dev/null; }

# split_render ARGS: writes the v4 and v6 transactions the hook sends when
# its jumps are already in place (render prints them for a fresh host).
split_render() {
	hook render "$@" --backend iptables | grep -v '^-I ' | awk -v dir="$WORK" '
		/^# iptables-restore/ {f = dir "/" name "4"; next}
		/^# ip6tables-restore/ {f = dir "/" name "6"; next}
		{print > f}' name="$1"
}

# bare_nft up|down and bare_ipt FLAVOUR up|down: the same kernel change
# without the hook.
bare_nft() {
	local verb=add
	[ "$1" = down ] && verb=delete
	X nft "$verb" element inet vpnfw tunnels '{ "tun0" }'
}
bare_ipt() {
	X iptables-"$1"-restore --noflush <"$WORK/${2}4"
	X ip6tables-"$1"-restore --noflush <"$WORK/${2}6"
}

# counts BACKEND FLAVOUR: "rules chains" vpnfw holds now.
counts() {
	if [ "$1" = nftables ]; then
		X nft list table inet vpnfw | awk '/^\tchain /{c++} /comment "vpnfw: /{r++} END {print r + 0, c + 0}'
	else
		{
			X iptables-"$2"-save -t filter
			X ip6tables-"$2"-save -t filter
		} | awk '/^-A VPNFW-/{r++} /^:VPNFW-/{c++} END {print r + 0, c + 0}'
	fi
}

# run BACKEND FLAVOUR SERVERS: one row of the table.
run() {
	local backend=$1 flavour=$2 servers=$3 rounds=$ROUNDS i t up=0 down=0 bare=0 rc
	[ "$backend" = iptables ] && [ "$servers" -ge 10000 ] && [ "$rounds" -gt 5 ] && rounds=5
	config "$servers" "$backend"
	[ "$backend" = nftables ] || X iptables-"$flavour" -N VPNFW-BENCH-PICK 2>/dev/null || true # makes the hook pick this flavour
	hook baseline
	if [ "$backend" = iptables ]; then
		split_render up --dev tun0
		split_render down --dev tun0
	fi
	for ((i = 0; i < rounds; i++)); do
		t=$(now_us)
		hook up --dev tun0
		up=$((up + $(now_us) - t))
		[ "$i" -gt 0 ] || rc=$(counts "$backend" "$flavour")
		t=$(now_us)
		hook down --dev tun0
		down=$((down + $(now_us) - t))
	done
	t=$(now_us)
	for ((i = 0; i < rounds; i++)); do
		for state in up down; do
			if [ "$backend" = nftables ]; then bare_nft "$state"; else bare_ipt "$flavour" "$state"; fi
		done
	done
	bare=$(($(now_us) - t))
	hook check >/dev/null
	read -r nrules nchains <<<"$rc"
	awk -v b="$backend" -v f="$flavour" -v s="$servers" -v r="$rounds" -v u="$up" -v d="$down" -v x="$bare" \
		-v nr="$nrules" -v nc="$nchains" 'BEGIN {
		printf "%-9s %-10s %7d %6d %6d %6d %9.2f %9.2f %9.2f %9.2f %6.2fx\n",
			b, f, s, nr, nc, r, u/r/1e3, d/r/1e3, (u+d)/r/2e3, x/r/2e3, (u+d)/x}'
	hook disarm --yes
	[ "$backend" = nftables ] || X iptables-"$flavour" -X VPNFW-BENCH-PICK
}

echo "hook up/down of tun0 against the bare kernel change; ms per call, $ROUNDS rounds (iptables with 10000 servers: 5 at most)"
printf '%-9s %-10s %7s %6s %6s %6s %9s %9s %9s %9s %7s\n' backend flavour servers rules chains rounds \
	"hook up" "hook down" "hook avg" "bare avg" ratio
for servers in $SERVERS; do
	run nftables "table inet" "$servers"
done
for flavour in nft legacy; do
	for servers in $SERVERS; do
		run iptables "$flavour" "$servers"
	done
done
