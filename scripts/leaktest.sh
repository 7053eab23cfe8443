#!/usr/bin/env bash
# The end-to-end leak test: a real OpenVPN client and server in a lab of
# network namespaces of its own (scripts/lab.sh), with the ISP counting every
# packet the protected client sends outside its VPN connection.
#
#   sudo scripts/leaktest.sh
#
# It runs the scenarios of issue 3 once per backend, with the OpenVPN client
# configurations of openvpn-examples/ and both ways vpnfw tells the VPN
# client apart (mark: OpenVPN as root with `mark 119`; user: OpenVPN run as a
# user of its own with CAP_NET_ADMIN):
#   nftables         with the mark and VPNFW_BACKEND unset (the default, auto,
#                    must pick nftables), and with the user and
#                    VPNFW_BACKEND=nftables on a host where other software
#                    uses legacy iptables; the mark run also switches
#                    VPNFW_BACKEND to iptables and back with the tunnel up.
#   iptables-nft     VPNFW_BACKEND=iptables on the nf_tables flavour of
#                    iptables, with the mark and with the user.
#   iptables-legacy  the same on legacy iptables, with the mark; there the
#                    user's hook cannot drive iptables: it must refuse, and
#                    OpenVPN stop (see openvpn-examples/README.md).
# Every scenario checks that the backend named in the hook's log, in OpenVPN's
# log and in `status` is the combination's, and the baseline that vpnfw's
# rules are in that backend only. Each scenario prints one line with its
# leak count and duration; a scenario fails if anything leaked or any of its
# assertions failed. Then a line per backend, and last "N passed, M failed";
# the exit status is non-zero if any failed.
#
# LEAKTEST_ONLY=REGEX runs only the matching combinations (nftables/mark,
# nftables/user, iptables-nft/mark, iptables-nft/user, iptables-legacy/mark,
# iptables-legacy/user). Every flood and wait is bounded; the namespaces and
# processes are removed on any exit. The logs are kept in a /tmp/vpnfw-leak.*
# directory when a scenario failed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=scripts/lab.sh
. scripts/lab.sh

need_root
# shellcheck disable=SC2046 # one word per package
install_missing $(lab_packages) tcpdump:tcpdump
WORK=$(mktemp -d /tmp/vpnfw-leak.XXXXXX)
PASSED=0 FAILED=0 SUMMARY=''
declare -A B_PASSED=() B_FAILED=() # per backend: nftables, iptables
cleanup() {
	lab_down
	if [ -z "$SUMMARY" ]; then
		echo "the lab broke down before the end (see above); logs kept in $WORK"
		echo "$PASSED passed, $((FAILED + 1)) failed"
	elif [ "$FAILED" -eq 0 ]; then
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
START=$SECONDS
build_hook "$WORK/vpnfw-hook"
lab_init "$WORK" "$WORK/vpnfw-hook"

# --- assertions -------------------------------------------------------------

FAILS=()
fail() { FAILS+=("$*"); }
# must WHAT CMD...: CMD must succeed, else WHAT is a failure;
# mustnt WHAT CMD...: CMD must fail.
must() {
	local what=$1
	shift
	"$@" || fail "$what"
}
mustnt() {
	local what=$1
	shift
	if "$@"; then fail "$what"; fi
}
quiet() { "$@" >/dev/null 2>&1; }

seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }

# report NAME LEAKS SECONDS: the scenario's line, and its failures under it.
report() {
	local verdict=ok
	[ ${#FAILS[@]} -eq 0 ] || verdict=FAIL
	printf '%-20s %-56s leaks %-4s %6ss  %s\n' "$COMBO" "$1" "$2" "$3" "$verdict"
	if [ "$verdict" = ok ]; then
		PASSED=$((PASSED + 1))
		B_PASSED[$BACKEND]=$((${B_PASSED[$BACKEND]:-0} + 1))
	else
		FAILED=$((FAILED + 1))
		B_FAILED[$BACKEND]=$((${B_FAILED[$BACKEND]:-0} + 1))
		printf '                     - %s\n' "${FAILS[@]}"
	fi
}

# scenario NAME FUNC [control]: runs FUNC and counts what the ISP saw from the
# client meanwhile. A control must leak (it proves the counter counts).
scenario() {
	local name=$1 fn=$2 kind=${3:-} t0 l0 leaks
	FAILS=()
	t0=$EPOCHREALTIME
	l0=$(lab_leaks)
	"$fn" || fail "$fn stopped early"
	leaks=$(($(lab_leaks) - l0))
	if [ "$kind" = control ]; then
		[ "$leaks" -gt 0 ] || fail "nothing leaked without vpnfw: the leak counter does not count"
	else
		[ "$leaks" -eq 0 ] || fail "$leaks packets left the client outside the VPN connection"
	fi
	report "$name" "$leaks" "$(seconds_since "$t0")"
}

# --- helpers ----------------------------------------------------------------

BACKEND=''      # nftables or iptables: the per-backend tally
BACKEND_NAME='' # the backend as the hook names it: nftables (table inet vpnfw),
#                 iptables (nf_tables) or iptables (legacy)

state_is() { # STATE TUNNELS: what `status` says, with this backend
	local st
	st=$(lab_hook status 2>/dev/null) || return 1
	[[ $'\n'$st == *$'\n'"backend: $BACKEND_NAME"[$' \n']* ]] && grep -q "^state: *$1\$" <<<"$st" && grep -q "^tunnels: *$2\$" <<<"$st"
}

# applied_by_openvpn EVENT [N]: OpenVPN's log has at least N (1) lines of
# the hook applying EVENT with this backend.
applied_by_openvpn() { [ "$(applied_lines "$1")" -ge "${2:-1}" ]; }
applied_lines() { grep -c "\"event\":\"$1\".*\"backend\":\"$BACKEND_NAME\".*\"message\":\"applied\"" "$LAB_OVPN_LOG" || true; }

# ipt_has_vpnfw FLAVOUR: that iptables flavour (nft or legacy) holds vpnfw's
# chains. Legacy tables are read only if loaded: reading them would load them.
ipt_has_vpnfw() {
	if [ "$1" = legacy ]; then
		C grep -q . /proc/net/ip_tables_names || return 1
	fi
	C "iptables-$1-save" -t filter 2>/dev/null | grep -q '^:VPNFW-OUTPUT '
}

# rules_only_in_backend: vpnfw's rules are in this backend, and nowhere else.
rules_only_in_backend() {
	local nft=no
	C nft list table inet vpnfw >/dev/null 2>&1 && nft=yes
	case $BACKEND_NAME in
	nftables*) [ "$nft" = yes ] && ! ipt_has_vpnfw nft && ! ipt_has_vpnfw legacy ;;
	*nf_tables*) [ "$nft" = no ] && ipt_has_vpnfw nft && ! ipt_has_vpnfw legacy ;;
	*legacy*) [ "$nft" = no ] && ipt_has_vpnfw legacy && ! ipt_has_vpnfw nft ;;
	*) return 1 ;;
	esac
}

# send_udp HOST PORT: one datagram from an ordinary process; no answer
# expected: the leak counter is the witness.
send_udp() { C timeout 2 socat -u - "UDP:$(lab_addr "$1"):$2" <<<"vpnfw-lab datagram" 2>/dev/null || true; }

vpn_stop() {
	[ -n "$LAB_OVPN_PID" ] || return 0
	lab_vpn_signal TERM
	lab_vpn_wait_exit 10
}

vpn_up() {
	lab_vpn_up 20 && return 0
	fail "OpenVPN did not connect within 20 s: $(tail -n 1 "$LAB_OVPN_LOG")"
	vpn_stop || lab_vpn_kill9
	return 1
}

# every_probe_fails WHEN: ordinary processes cannot reach the internet host
# or the server's other ports, nor the server's VPN port, by any protocol.
every_probe_fails() {
	local h
	for h in "$LAB_HOST4" "$LAB_HOST6"; do
		mustnt "$1: ping $h got an answer" lab_ping "$h"
		mustnt "$1: tcp $h:7 got an answer" lab_tcp "$h" 7
		mustnt "$1: udp $h:7 got an answer" lab_udp "$h" 7
	done
	shared_server_probes "$1" "$LAB_SERVER4" "$LAB_SERVER6"
}

# shared_server_probes WHEN ADDR...: an ordinary process tries the VPN
# server's own addresses: tcp 7 and 1194 (the VPN port), udp 7 and 1194.
shared_server_probes() {
	local when=$1 h
	shift
	for h in "$@"; do
		mustnt "$when: tcp $h:7 got an answer" lab_tcp "$h" 7
		mustnt "$when: tcp $h:$LAB_PORT got an answer" lab_tcp "$h" "$LAB_PORT"
		mustnt "$when: udp $h:7 got an answer" lab_udp "$h" 7
		send_udp "$h" "$LAB_PORT"
	done
}

tunnel_works() { # WHEN
	local h
	for h in "$LAB_HOST4" "$LAB_HOST6"; do
		must "$1: tcp $h:7 through the tunnel failed" lab_tcp "$h" 7
	done
}

# writer HOST LOG: a long-lived TCP connection to HOST's echo port that writes
# a line every 50 ms, 100 times, noting each write that succeeded.
writer() {
	# shellcheck disable=SC2016 # the inner shell expands these
	lab_bg "$2" ip netns exec "${LAB_NS[0]}" timeout 15 bash -c '
		trap "" PIPE
		exec 3<>"/dev/tcp/$1/7" || exit 1
		for ((i = 0; i < 100; i++)); do
			echo "vpnfw-lab line $i" >&3 || { echo "write $i failed"; exit 0; }
			echo "wrote $i"
			sleep 0.05
		done' writer "$1"
	WRITER_PIDS+=("$LAB_LAST_PID")
}
wrote() { grep -c '^wrote' "$1" 2>/dev/null || true; }

# hostile RC WHAT ENV...: the hook, run as OpenVPN runs it in this mode (root,
# or the VPN client's user with CAP_NET_ADMIN), with ENV as its whole
# environment and OpenVPN's positional arguments, must exit RC.
hostile() {
	local want=$1 what=$2 rc=0
	shift 2
	local as=()
	if [ "$LAB_MODE" = user ]; then
		# shellcheck disable=SC2054 # setpriv's capability lists have commas
		as=("$(command -v setpriv)" --reuid "$LAB_UID" --regid "$LAB_UID" --clear-groups
			--inh-caps -all,+net_admin --ambient-caps -all,+net_admin)
	fi
	C env -i "$@" "${as[@]}" "$LAB_HOOK" ${HOSTILE_CONFIG:+--config "$HOSTILE_CONFIG"} --log-format json tun0 1500 0 198.51.100.2 255.255.255.0 init \
		>/dev/null 2>&1 || rc=$?
	[ "$rc" = "$want" ] || fail "hostile $what: exit $rc, expected $want"
}

# --- the scenarios -----------------------------------------------------------

s_baseline() {
	must "the baseline was not applied with $BACKEND_NAME: $ARM_LOG" \
		grep -qF "\"backend\":\"$BACKEND_NAME\"" <<<"$ARM_LOG"
	must "vpnfw's rules are not in $BACKEND_NAME alone" rules_only_in_backend
	must "status does not say blocked with $BACKEND_NAME" state_is blocked none
	every_probe_fails "baseline"
	must "check failed" quiet lab_hook check
}

s_tunnel_up() {
	local t0 c0 v0 h
	t0=$(lab_tunneled) c0=$(lab_clear) v0=$(lab_vpnpkts)
	vpn_up || return 1
	for h in "$LAB_HOST4" "$LAB_HOST6"; do
		must "tcp $h:7 through the tunnel failed" lab_tcp "$h" 7
		must "udp $h:7 through the tunnel failed" lab_udp "$h" 7
		must "ping $h through the tunnel failed" lab_ping "$h"
	done
	must "the internet host saw nothing arrive through the tunnel" [ "$(lab_tunneled)" -gt "$t0" ]
	must "the internet host saw packets in clear" [ "$(lab_clear)" -eq "$c0" ]
	must "the ISP saw no OpenVPN packets" [ "$(lab_vpnpkts)" -gt "$v0" ]
	must "OpenVPN's up and route-up did not apply with $BACKEND_NAME" applied_by_openvpn up
	must "vpnfw's rules are not in $BACKEND_NAME alone" rules_only_in_backend
	must "check failed" quiet lab_hook check
	must "status does not say connected through tun0" state_is connected tun0
	if [ "$LAB_MODE" = user ]; then
		must "OpenVPN does not run as uid $LAB_UID" [ "$(ps -o uid= -p "$LAB_OVPN_PID" | tr -d ' ')" = "$LAB_UID" ]
		must "OpenVPN's capabilities are not CAP_NET_ADMIN alone" \
			grep -q '^CapEff:[[:space:]]*0000000000001000$' "/proc/$LAB_OVPN_PID/status"
	fi
}

s_shared_server() {
	[ -n "$LAB_OVPN_PID" ] || vpn_up
	# The server's IPv4 address is routed over the uplink (OpenVPN's host
	# route for its remote): an ordinary process must be refused there.
	shared_server_probes "tunnel up" "$LAB_SERVER4"
	# redirect-gateway ipv6 routes the server's IPv6 address into the tunnel:
	# that is allowed, and not a leak.
	must "tunnel up: tcp $LAB_SERVER6:7 through the tunnel failed" lab_tcp "$LAB_SERVER6" 7
	vpn_stop || fail "OpenVPN did not stop within 10 s of SIGTERM"
	must "OpenVPN's down did not apply" applied_by_openvpn down
	must "status does not say blocked after down" state_is blocked none
	shared_server_probes "tunnel down" "$LAB_SERVER4" "$LAB_SERVER6"
	must "check failed" quiet lab_hook check
}

s_kill9_flood() {
	local t0
	vpn_up || return 1
	t0=$(lab_tunneled)
	lab_flood 4
	sleep 1
	must "the flood did not go through the tunnel before the kill" [ "$(lab_tunneled)" -gt "$t0" ]
	lab_vpn_kill9
	mustnt "tun0 still exists after kill -9" quiet C ip link show tun0
	must "status should still list tun0 (no down script ran)" state_is connected tun0
	mustnt "after kill -9: tcp $LAB_HOST4:7 got an answer" lab_tcp "$LAB_HOST4" 7
	mustnt "after kill -9: tcp $LAB_HOST6:7 got an answer" lab_tcp "$LAB_HOST6" 7
	mustnt "after kill -9: udp $LAB_HOST4:7 got an answer" lab_udp "$LAB_HOST4" 7
	must "check failed after kill -9" quiet lab_hook check
	lab_flood_wait
}

# The tunnel device outlives OpenVPN here, with its addresses (created
# persistent beforehand, as `openvpn --mktun` does), and routes through a
# device whose link is down are ignored (ignore_routes_with_linkdown): after
# kill -9, routing falls back to eth0 while the flows' source addresses are
# still local, so the kernel would send them on in clear. (When OpenVPN's own
# device vanishes with its addresses, the kernel itself sends nothing more.)
s_established() {
	local w4 w6 t0 p log4=$WORK/writer4-$LAB_SEQ.log log6=$WORK/writer6-$LAB_SEQ.log
	WRITER_PIDS=()
	C ip tuntap add dev tun0 mode tun
	C sysctl -qw net.ipv4.conf.tun0.ignore_routes_with_linkdown=1 net.ipv6.conf.tun0.ignore_routes_with_linkdown=1
	LAB_OVPN_EXTRA=(--dev tun0)
	vpn_up || {
		LAB_OVPN_EXTRA=()
		vpn_stop
		C ip link del tun0
		return 1
	}
	LAB_OVPN_EXTRA=()
	t0=$(lab_tunneled)
	writer "$LAB_HOST4" "$log4"
	writer "$LAB_HOST6" "$log6"
	sleep 1
	w4=$(wrote "$log4") w6=$(wrote "$log6")
	must "the flows did not go through the tunnel" [ "$(lab_tunneled)" -gt "$t0" ]
	must "the IPv4 flow did not write before the kill" [ "$w4" -gt 5 ]
	must "the IPv6 flow did not write before the kill" [ "$w6" -gt 5 ]
	lab_vpn_kill9
	must "tun0 lost its addresses" sh -c "ip -n ${LAB_NS[0]} addr show dev tun0 | grep -q 'inet 198.51.100.2/' &&
		ip -n ${LAB_NS[0]} addr show dev tun0 | grep -q 'inet6 2001:db8:4::1000/'"
	must "IPv4 routing did not fall back to eth0" \
		sh -c "ip netns exec ${LAB_NS[0]} ip route get $LAB_HOST4 from 198.51.100.2 | grep -q 'dev eth0'"
	must "IPv6 routing did not fall back to eth0" \
		sh -c "ip netns exec ${LAB_NS[0]} ip -6 route get $LAB_HOST6 from 2001:db8:4::1000 | grep -q 'dev eth0'"
	for p in "${WRITER_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
		lab_forget "$p"
	done
	# Each flow writes on after the kill until vpnfw's reset reaches it.
	must "the IPv4 flow was not cut after the kill: $(tail -n 1 "$log4")" grep -q '^write [0-9]* failed' "$log4"
	must "the IPv6 flow was not cut after the kill: $(tail -n 1 "$log6")" grep -q '^write [0-9]* failed' "$log6"
	must "check failed" quiet lab_hook check
	C ip link del tun0
}

s_restarts() {
	local cycle sig n
	vpn_up || return 1
	lab_flood 60 # ended below, when the cycles are done
	for cycle in 1 2 3; do
		for sig in USR1 HUP; do
			n=$(lab_inits)
			lab_vpn_signal "$sig"
			lab_wait_log "$LAB_OVPN_LOG" $((n + 1)) 20 || fail "cycle $cycle: no reconnection within 20 s of SIG$sig"
			tunnel_works "cycle $cycle, after SIG$sig"
		done
		vpn_stop || fail "cycle $cycle: OpenVPN did not stop within 10 s of SIGTERM"
		must "cycle $cycle: not blocked after SIGTERM" state_is blocked none
		vpn_up || break
		tunnel_works "cycle $cycle, after SIGTERM and a new start"
	done
	lab_flood_stop
	must "check failed" quiet lab_hook check
}

s_hostile() {
	local before after bad=$WORK/bad-$LAB_SEQ
	vpn_stop || fail "OpenVPN did not stop"
	must "baseline failed" quiet lab_hook baseline
	before=$(lab_ruleset)
	local up=(script_type=up trusted_ip="$LAB_SERVER4" trusted_port="$LAB_PORT" proto_1=udp)
	HOSTILE_CONFIG=$LAB_ENV
	hostile 2 "dev=eth0" "${up[@]}" dev=eth0
	hostile 2 "dev=lo" "${up[@]}" dev=lo
	hostile 2 "dev=tun0;id" "${up[@]}" "dev=tun0;id"
	hostile 2 "dev=tun0 eth0" "${up[@]}" "dev=tun0 eth0"
	hostile 2 "dev=tun+" "${up[@]}" "dev=tun+"
	hostile 2 "dev=+" "${up[@]}" "dev=+"
	hostile 2 "dev empty" "${up[@]}" dev=
	hostile 2 "no dev" "${up[@]}"
	hostile 2 "dev of 16 bytes" "${up[@]}" dev=tun0123456789abc
	hostile 2 "dev with a newline" "${up[@]}" "dev=tun0
-A VPNFW-OUTPUT -j ACCEPT"
	hostile 2 "dev=../tun0" "${up[@]}" dev=../tun0
	hostile 2 "trusted_ip=not-an-ip" script_type=up dev=tun0 trusted_ip=not-an-ip trusted_port=1194 proto_1=udp
	hostile 2 "trusted_ip=0.0.0.0/0" script_type=up dev=tun0 trusted_ip=0.0.0.0/0 trusted_port=1194 proto_1=udp
	hostile 2 "trusted_ip with a zone" script_type=up dev=tun0 trusted_ip=fe80::1%eth0 trusted_port=1194 proto_1=udp
	hostile 2 "no trusted_ip" script_type=up dev=tun0 trusted_port=1194 proto_1=udp
	hostile 2 "trusted_port=0" script_type=up dev=tun0 trusted_ip="$LAB_SERVER4" trusted_port=0 proto_1=udp
	hostile 2 "trusted_port=65536" script_type=up dev=tun0 trusted_ip="$LAB_SERVER4" trusted_port=65536 proto_1=udp
	hostile 2 "trusted_port=01194" script_type=up dev=tun0 trusted_ip="$LAB_SERVER4" trusted_port=01194 proto_1=udp
	hostile 2 "trusted_port=1194;" script_type=up dev=tun0 trusted_ip="$LAB_SERVER4" "trusted_port=1194;" proto_1=udp
	hostile 2 "proto_1=icmp" script_type=up dev=tun0 trusted_ip="$LAB_SERVER4" trusted_port=1194 proto_1=icmp
	hostile 2 "script_type=ipchange" script_type=ipchange dev=tun0 trusted_ip="$LAB_SERVER4"
	hostile 2 "script_type empty" script_type= dev=tun0 trusted_ip="$LAB_SERVER4"
	hostile 2 "script_type=UP" script_type=UP dev=tun0 trusted_ip="$LAB_SERVER4"
	# Valid input the configuration disagrees with: refused, exit 1.
	hostile 1 "a server not in VPNFW_SERVERS" script_type=up dev=tun0 trusted_ip="$LAB_HOST4" trusted_port=1194 proto_1=udp
	hostile 1 "a port not in VPNFW_SERVER_PORTS" script_type=up dev=tun0 trusted_ip="$LAB_SERVER4" trusted_port=443 proto_1=tcp-client
	# Hostile configurations, given by --config or by VPNFW_CONFIG.
	mkdir -p "$bad"
	chmod 0755 "$bad"
	cp "$LAB_ENV" "$bad/group-writable.env"
	chmod 0664 "$bad/group-writable.env"
	cp "$LAB_ENV" "$bad/not-root.env"
	chown "$LAB_UID" "$bad/not-root.env"
	{ cat "$LAB_ENV"; echo "VPNFW_SERVER=0.0.0.0/0"; } >"$bad/typo.env"
	{ cat "$LAB_ENV"; echo "VPNFW_LAN=0.0.0.0/0"; } >"$bad/everything.env"
	chmod 0644 "$bad/typo.env" "$bad/everything.env"
	local f
	for f in group-writable not-root typo everything missing; do
		HOSTILE_CONFIG=$bad/$f.env
		hostile 2 "--config $f.env" "${up[@]}" dev=tun0
		HOSTILE_CONFIG=
		hostile 2 "VPNFW_CONFIG=$f.env" "${up[@]}" dev=tun0 VPNFW_CONFIG="$bad/$f.env"
	done
	HOSTILE_CONFIG=$bad
	hostile 2 "--config a directory" "${up[@]}" dev=tun0
	HOSTILE_CONFIG=
	after=$(lab_ruleset)
	if [ "$before" != "$after" ]; then
		fail "the ruleset changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -n 3 | tr '\n' ' ')"
	fi
	must "check failed" quiet lab_hook check
}

s_user_on_legacy() {
	lab_vpn_start
	if lab_vpn_wait_exit 20; then
		must "OpenVPN's up hook did not fail as expected" grep -q 'external program exited with error status: 1' "$LAB_OVPN_LOG"
		must "the hook did not say why" grep -q 'whether legacy iptables holds them cannot be told' "$LAB_OVPN_LOG"
	else
		fail "OpenVPN kept running as uid $LAB_UID on legacy iptables"
		vpn_stop || true
	fi
	mustnt "tcp $LAB_HOST4:7 got an answer" lab_tcp "$LAB_HOST4" 7
	must "check failed" quiet lab_hook check
}

# The administrator switches VPNFW_BACKEND while the tunnel is up and traffic
# flows: the next apply arms the new backend, then removes the old one's
# rules; the tunnel's allowance carries over. Then OpenVPN restarts under the
# new backend, and the configuration goes back to the default (auto).
s_switch() {
	local auto=$BACKEND_NAME saved n inits out
	vpn_up || return 1
	lab_flood 30 # ended below
	tunnel_works "before the switch"
	saved=$(cat "$LAB_ENV")
	# An iptables chain of other software's makes the nf_tables flavour the
	# one in use, so the iptables backend's flavour is known.
	C iptables-nft -N LAB-PICKS-NFT
	echo "VPNFW_BACKEND=iptables" >>"$LAB_ENV"
	BACKEND_NAME="iptables (nf_tables)"
	out=$(lab_hook up --dev tun0 2>&1) || fail "up with VPNFW_BACKEND=iptables failed: $out"
	must "up with VPNFW_BACKEND=iptables did not apply with $BACKEND_NAME: $out" grep -qF "\"backend\":\"$BACKEND_NAME\"" <<<"$out"
	must "after switching to iptables: vpnfw's rules are not in $BACKEND_NAME alone" rules_only_in_backend
	must "after switching to iptables: status does not say connected through tun0" state_is connected tun0
	must "after switching to iptables: check failed" quiet lab_hook check
	tunnel_works "after switching to iptables"
	n=$(applied_lines up) inits=$(lab_inits)
	lab_vpn_signal USR1
	lab_wait_log "$LAB_OVPN_LOG" $((inits + 1)) 20 || fail "no reconnection within 20 s of SIGUSR1"
	must "OpenVPN's hooks did not apply with $BACKEND_NAME after SIGUSR1" applied_by_openvpn up $((n + 1))
	tunnel_works "after SIGUSR1 with iptables"
	printf '%s\n' "$saved" >"$LAB_ENV"
	BACKEND_NAME=$auto
	out=$(lab_hook up --dev tun0 2>&1) || fail "up with VPNFW_BACKEND unset again failed: $out"
	must "up with VPNFW_BACKEND unset again did not apply with $BACKEND_NAME: $out" grep -qF "\"backend\":\"$BACKEND_NAME\"" <<<"$out"
	must "after switching back: vpnfw's rules are not in $BACKEND_NAME alone" rules_only_in_backend
	must "after switching back: status does not say connected through tun0" state_is connected tun0
	tunnel_works "after switching back"
	lab_flood_stop
	vpn_stop || fail "OpenVPN did not stop within 10 s of SIGTERM"
	must "not blocked with $BACKEND_NAME after SIGTERM" state_is blocked none
	must "check failed" quiet lab_hook check
	C iptables-nft -X LAB-PICKS-NFT
}

s_control() {
	vpn_up || return 1
	must "disarm failed" quiet lab_hook disarm --yes
	lab_flood 3
	sleep 1
	lab_vpn_kill9
	lab_flood_wait
}

# --- the combinations ----------------------------------------------------------

# combo BACKEND MODE [VPNFW_BACKEND]: a fresh lab, BACKEND nftables,
# iptables-nft or iptables-legacy, MODE mark or user; VPNFW_BACKEND goes into
# the configuration (none: the default, auto). The client's firewall is
# armed before its uplink comes up, so it never sends a packet unprotected.
combo() {
	COMBO="$1/$2"
	[[ $COMBO =~ ${LEAKTEST_ONLY:-.} ]] || return 0
	local t0=$EPOCHREALTIME pcap=$WORK/isp-$((LAB_SEQ + 1)).pcap
	BACKEND=${1%%-*}
	lab_up
	lab_configure "$2" "${3:-}"
	lab_capture_start "$pcap"
	# The iptables backend picks the flavour that already has user chains.
	case $1 in
	nftables)
		BACKEND_NAME="nftables (table inet vpnfw)"
		# Legacy iptables in use by other software: the iptables backend
		# refuses the VPN user there (iptables-legacy/user); nftables must not.
		[ "$2" = mark ] || C iptables-legacy -N LAB-LEGACY-IN-USE
		;;
	iptables-nft)
		BACKEND_NAME="iptables (nf_tables)"
		C iptables-nft -N LAB-PICKS-NFT
		;;
	iptables-legacy)
		BACKEND_NAME="iptables (legacy)"
		C iptables-legacy -N LAB-PICKS-LEGACY
		;;
	esac
	ARM_LOG=$(lab_hook baseline 2>&1) || true
	lab_client_online

	scenario "1 baseline only" s_baseline
	if [ "$COMBO" = iptables-legacy/user ]; then
		scenario "user mode on legacy iptables: refused, OpenVPN stops" s_user_on_legacy
	else
		scenario "2 tunnel up, traffic through it" s_tunnel_up
		scenario "3 shared server, tunnel up and down" s_shared_server
		scenario "4 kill -9 of OpenVPN during a v4+v6 flood" s_kill9_flood
		scenario "5 established TCP flows after kill -9" s_established
		scenario "6 SIGUSR1, SIGHUP, SIGTERM+start x3 under flood" s_restarts
		scenario "7 hostile environment and configuration" s_hostile
	fi
	if [ "$COMBO" = nftables/mark ]; then
		scenario "8 VPNFW_BACKEND switched, tunnel up, under flood" s_switch
	fi
	# Between the scenarios too: every packet since the client was created.
	local total
	FAILS=()
	total=$(lab_leaks)
	[ "$total" -eq 0 ] || fail "$total packets left the client outside the VPN connection"
	report "all of the above: every packet since the start" "$total" "$(seconds_since "$t0")"
	if [[ $COMBO == */mark ]]; then
		scenario "control: kill -9 during a flood without vpnfw" s_control control
	fi
	# The second witness must agree: nothing captured while the counter
	# stayed 0, something when the control leaked.
	local captured counted
	FAILS=()
	counted=$(lab_leaks)
	lab_capture_stop "$pcap"
	captured=$LAB_CAPTURED
	if { [ "$captured" -eq 0 ] && [ "$counted" -ne 0 ]; } || { [ "$captured" -ne 0 ] && [ "$counted" -eq 0 ]; }; then
		fail "the ISP's capture ($captured packets) and its counter ($counted) disagree"
	fi
	report "second witness: ISP packet capture (counter says $counted)" "$captured" "$(seconds_since "$t0")"
	lab_down
}

echo "== leak test: OpenVPN $(openvpn --version | awk 'NR == 1 {print $2}'), $(uname -sr)"
echo "   scenarios 1-7 of issue 3 on each backend, with the mark and with a dedicated user (8: switching backends)"
combo nftables mark           # VPNFW_BACKEND unset: auto must pick nftables
combo nftables user nftables
combo iptables-nft mark iptables
combo iptables-nft user iptables
combo iptables-legacy mark iptables
combo iptables-legacy user iptables
SUMMARY=printed
echo "leak test took $((SECONDS - START)) s"
for b in nftables iptables; do
	[ -z "${B_PASSED[$b]:-}${B_FAILED[$b]:-}" ] || echo "backend $b: ${B_PASSED[$b]:-0} passed, ${B_FAILED[$b]:-0} failed"
done
[ "$FAILED" -eq 0 ] || echo "logs kept in $WORK"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
