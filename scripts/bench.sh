#!/usr/bin/env bash
# Hook latency against its floor, in a network namespace of its own:
#
#   sudo scripts/bench.sh [ROUNDS]
#
# For each iptables flavour and server-list size it times ROUNDS hook calls
# (alternating up and down of tun0, what OpenVPN triggers) and ROUNDS bare
# iptables-restore + ip6tables-restore runs of the very same transactions,
# and prints the ratio. The bare restore is the floor: the kernel transaction
# every apply needs; the rest is the hook's own cost (config, probes).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
WORK=$(mktemp -d /tmp/vpnfw.XXXXXX)

ROUNDS=${1:-50}
need_root
install_missing iptables:iptables ip:iproute2
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

now_ns() { date +%s%N; }

# config N: a configuration with N VPN servers.
config() {
	local i servers=""
	for ((i = 0; i < $1; i++)); do
		servers+=" 198.51.$((100 + i / 250)).$((i % 250 + 1))"
	done
	printf 'VPNFW_SERVERS=%s\nVPNFW_SERVER_PORTS=udp/1194 tcp/443\nVPNFW_VPN_MARK=119\n' "$servers" >"$WORK/vpnfw.env"
	chmod 600 "$WORK/vpnfw.env"
}

hook() { X env -i "$WORK/vpnfw-hook" --config "$WORK/vpnfw.env" --log-format json "$@" 2>/dev/null; }

# split_render ARGS: writes the v4 and v6 transactions the hook sends when
# its jumps are already in place (render prints them for a fresh host).
split_render() {
	hook render "$@" | grep -v '^-I ' | awk -v dir="$WORK" '
		/^# iptables-restore/ {f = dir "/" name "4"; next}
		/^# ip6tables-restore/ {f = dir "/" name "6"; next}
		{print > f}' name="$1"
}

printf '%-10s %8s %7s %12s %12s %7s\n' flavour servers rounds "hook ms/op" "bare ms/op" ratio
for flavour in nft legacy; do
	for servers in 1 1000; do
		X iptables-"$flavour" -N VPNFW-BENCH-PICK 2>/dev/null || true # makes the hook pick this flavour
		config "$servers"
		hook baseline
		split_render up --dev tun0
		split_render down --dev tun0

		t0=$(now_ns)
		for ((i = 0; i < ROUNDS; i++)); do
			hook up --dev tun0
			hook down --dev tun0
		done
		t1=$(now_ns)
		for ((i = 0; i < ROUNDS; i++)); do
			for state in up down; do
				X iptables-"$flavour"-restore --noflush <"$WORK/${state}4"
				X ip6tables-"$flavour"-restore --noflush <"$WORK/${state}6"
			done
		done
		t2=$(now_ns)
		hook check >/dev/null
		ops=$((2 * ROUNDS))
		awk -v f="$flavour" -v s="$servers" -v r="$ops" -v h=$((t1 - t0)) -v b=$((t2 - t1)) \
			'BEGIN {printf "%-10s %8d %7d %12.2f %12.2f %6.2fx\n", f, s, r, h/r/1e6, b/r/1e6, h/b}'
		hook disarm --yes
		X iptables-"$flavour" -X VPNFW-BENCH-PICK
	done
done
