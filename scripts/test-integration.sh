#!/usr/bin/env bash
# Integration tests of what vpnfw installs, run by scripts/test.sh:
#   - the man page renders without warnings; the shipped configuration is valid
#     for both backends; the man page, README.md, the shipped configuration
#     and --help name every command, flag of render and configuration key
#   - install.sh into DESTDIRs: files, modes, paths, an existing configuration
#     kept, --networkmanager, --enable, --uninstall
#   - the systemd unit, and the drop-in for nftables.service with a stub
#     nftables.service, pass systemd-analyze verify
#   - the Debian package: contents, control, conffiles, md5sums, lintian, the
#     unit and man page inside it
#   - as root, in network namespaces it creates: the netfilter-persistent
#     plugin and the unit's boot path (lockdown included), the drop-in for
#     nftables.service after nftables.service's flushes, the NetworkManager
#     dispatcher script, the wg-quick example, and the package's maintainer
#     scripts, which must change nothing
# The plugin and the boot path run with the default backend (auto: nftables
# where the kernel has it) and with VPNFW_BACKEND=iptables, and switch
# between them. The PPP hooks, PPTP and the boot lockdown on every backend,
# with real packets, are kernel tests in rules/kerneltest. Nothing here touches
# this machine's own network, /usr or /etc: every install goes to a
# temporary directory.
#
#   sudo scripts/test-integration.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

passed=0 failed=0 skipped=0
ok() {
	passed=$((passed + 1))
	echo "ok    $*"
}
bad() {
	failed=$((failed + 1))
	echo "FAIL  $*"
}
skip() {
	if [ -n "${CI:-}" ]; then
		bad "$* (cannot be skipped under CI)"
	else
		skipped=$((skipped + 1))
		echo "skip  $*"
	fi
}
# check DESC CMD...: CMD must exit 0.
check() {
	local desc=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$desc"
	else
		bad "$desc: $* exited $?: $out"
	fi
}
# expect_rc RC DESC CMD...: CMD must exit RC; its output is in $out.
out=
expect_rc() {
	local rc=$1 desc=$2 got
	shift 2
	out=$("$@" 2>&1)
	got=$?
	if [ "$got" = "$rc" ]; then
		ok "$desc"
	else
		bad "$desc: $* exited $got, want $rc: $out"
	fi
}
# has DESC TEXT NEEDLE: TEXT contains NEEDLE.
has() {
	case $2 in
	*"$3"*) ok "$1" ;;
	*) bad "$1: no \"$3\" in: $2" ;;
	esac
}
lacks() {
	case $2 in
	*"$3"*) bad "$1: \"$3\" in: $2" ;;
	*) ok "$1" ;;
	esac
}
mode_of() { stat -c %a "$1" 2>/dev/null || echo missing; }

work=$(mktemp -d)
NAMESPACES=()
cleanup() {
	local ns
	for ns in "${NAMESPACES[@]}"; do
		ip netns delete "$ns" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

echo "building vpnfw-hook ..."
build_hook "$work/vpnfw-hook" || {
	echo "build failed" >&2
	exit 1
}
hook=$work/vpnfw-hook

# --- man page and configuration ---------------------------------------------

test_man_and_config() {
	local page=scripts/man/vpnfw-hook.8 err text
	if have groff; then
		err=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
		if [ -z "$err" ]; then ok "man page: groff -man -Tutf8 -ww renders it without warnings"; else bad "man page warnings: $err"; fi
		# Filled text: words are checked with the spaces of justification and
		# the line breaks squeezed to one space.
		text=$(groff -man -Tascii -P-cbou "$page" 2>/dev/null | tr -s '[:space:]' ' ')
		for w in "baseline [--boot]" "lockdown" "VPNFW_SERVER_PORTS" "tcp/1723 gre" "FwMark = 119" "disarm --yes" "60-vpn-firewall" "EXIT STATUS" \
			"--backend iptables|nftables" "nft list table inet vpnfw" "table inet vpnfw" "VPNFW-OUTPUT"; do
			has "man page documents $w" "$text" "$w"
		done
	else
		skip "man page: groff is missing"
	fi
	if have man; then
		err=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
		if [ -z "$err" ]; then ok "man page: man -l renders it without warnings"; else bad "man -l warnings: $err"; fi
	fi

	# The shipped configuration sets nothing: the blocked state of the
	# defaults, only loopback. Every commented example value is valid.
	install -m 0600 scripts/vpnfw.env "$work/shipped.env"
	: >"$work/empty.env"
	chmod 0600 "$work/empty.env"
	local shipped empty accept
	for backend in iptables nftables; do
		shipped=$("$hook" --config "$work/shipped.env" render --backend "$backend" 2>&1)
		empty=$("$hook" --config "$work/empty.env" render --backend "$backend" 2>&1)
		if [ "$backend" = iptables ]; then
			accept=$(grep -c -- '-j ACCEPT' <<<"$shipped")
		else
			# The tunnels set is empty: its rules accept nothing.
			accept=$(grep -v '@tunnels' <<<"$shipped" | grep -c ' accept ')
			grep -q 'set tunnels { type ifname; elements = { }; }' <<<"$shipped" || accept="tunnels allowed"
		fi
		if [ "$shipped" = "$empty" ] && [ "$accept" = 4 ]; then
			ok "shipped configuration ($backend): valid, sets nothing, only loopback is accepted"
		else
			bad "shipped configuration ($backend) renders differently from an empty one: $shipped"
		fi
	done
	sed -n 's/^#\(VPNFW_[A-Z_0-9]*=.\)/\1/p' scripts/vpnfw.env >"$work/examples.env"
	chmod 0600 "$work/examples.env"
	expect_rc 0 "shipped configuration: the commented example values are valid together (iptables)" \
		"$hook" --config "$work/examples.env" render --backend iptables
	has "shipped configuration: example servers rendered with the mark (iptables)" "$out" "-d 192.0.2.10/32 -p udp -m udp --dport 1194 -m mark --mark 0x77"
	expect_rc 0 "shipped configuration: the commented example values are valid together (nftables)" \
		"$hook" --config "$work/examples.env" render --backend nftables
	has "shipped configuration: example servers in the servers set (nftables)" "$out" "elements = { 192.0.2.10, 198.51.100.0/28 }"
	has "shipped configuration: example servers allowed for the mark (nftables)" "$out" "ip daddr @servers_v4 meta l4proto udp th dport 1194 meta mark 0x00000077"
	has "render: a table inet vpnfw with base chains of policy drop" "$out" "type filter hook output priority filter; policy drop;"
	expect_rc 2 "render --backend: an unknown backend is refused" "$hook" --config "$work/examples.env" render --backend ipfw
	expect_rc 0 "render up --dev tun0 --backend nftables" "$hook" --config "$work/examples.env" render up --dev tun0 --backend nftables
	has "render up --backend nftables: tun0 in the tunnels set" "$out" 'elements = { "tun0" }'

	test_documented_everywhere
}

# test_documented_everywhere: every command, render's --backend, every
# configuration key and every VPNFW_BACKEND value is named in --help, the man
# page, README.md and the shipped configuration (keys), as the binary knows
# them: the keys from rules/config.go, the commands from --help.
test_documented_everywhere() {
	local help man readme env cmds keys c k v
	help=$("$hook" --help 2>&1)
	man=$(groff -man -Tascii -P-cbou scripts/man/vpnfw-hook.8 2>/dev/null || cat scripts/man/vpnfw-hook.8)
	local backend_section
	backend_section=$(sed -n '/^ *VPNFW_BACKEND *$/,/^ *VPNFW_LOG_LEVEL *$/p' <<<"$man")
	readme=$(cat README.md)
	env=$(cat scripts/vpnfw.env)
	cmds=$(sed -n '/^Commands:/,/^$/s/^  \([a-z]\{1,\}\) .*/\1/p' <<<"$help")
	if [ "$(wc -w <<<"$cmds")" -ge 8 ]; then ok "--help lists $(wc -w <<<"$cmds") commands"; else bad "--help lists too few commands: $cmds"; fi
	for c in $cmds; do
		has "man page documents the command $c" "$man" "$c"
		has "README.md documents the command $c" "$readme" "\`$c"
	done
	has "--help shows render --backend" "$help" "render [baseline | up --dev D ...] [--backend iptables|nftables]"
	has "README.md shows render --backend" "$readme" "[--backend iptables\|nftables]"
	keys=$(grep -oE '"VPNFW_[A-Z_0-9]+"' rules/config.go | tr -d '"' | sort -u)
	if [ "$(wc -w <<<"$keys")" -ge 10 ]; then ok "rules/config.go knows $(wc -w <<<"$keys") keys"; else bad "rules/config.go: too few keys found: $keys"; fi
	for k in $keys; do
		has "man page documents $k" "$man" "$k"
		has "README.md documents $k" "$readme" "\`$k\`"
		has "the shipped configuration documents $k" "$env" "#$k="
	done
	for v in auto iptables nftables; do
		has "man page: VPNFW_BACKEND=$v" "$backend_section" "$v"
		# shellcheck disable=SC2016 # backquotes, not an expansion
		has "README.md: VPNFW_BACKEND=$v" "$(grep -F '| `VPNFW_BACKEND` |' <<<"$readme")" "\`$v\`"
		has "the shipped configuration: VPNFW_BACKEND=$v" "$(sed -n '/^# The backend/,/^#VPNFW_BACKEND/p' <<<"$env")" "$v"
	done
}

# --- install.sh ------------------------------------------------------------

# files_under DIR: the files below DIR, relative, sorted.
files_under() { (cd "$1" && find . -type f -o -type l | sed 's|^\.||' | sort); }

test_install() {
	local d=$work/destdir f
	expect_rc 0 "install.sh: DESTDIR install" env DESTDIR="$d" scripts/install.sh --binary "$hook"
	local want
	want=$(
		cat <<'EOF'
/etc/ppp/ip-down.d/vpnfw 755
/etc/ppp/ip-up.d/vpnfw 755
/etc/systemd/system/nftables.service.d/vpnfw.conf 644
/etc/systemd/system/vpnfw-baseline.service 644
/etc/vpn-firewall/vpnfw.env 600
/usr/local/bin/vpnfw-hook 755
/usr/local/share/doc/vpnfw/examples/90-vpnfw-networkmanager 644
/usr/local/share/doc/vpnfw/examples/openvpn/README.md 644
/usr/local/share/doc/vpnfw/examples/openvpn/client-mark.conf 644
/usr/local/share/doc/vpnfw/examples/openvpn/client-user.conf 644
/usr/local/share/doc/vpnfw/examples/openvpn/openvpn-client@.service.d/vpnfw-user.conf 644
/usr/local/share/doc/vpnfw/examples/wg0.conf 644
/usr/local/share/man/man8/vpnfw-hook.8 644
/usr/share/netfilter-persistent/plugins.d/60-vpn-firewall 755
EOF
	)
	local got=
	while read -r f; do got+="$f $(mode_of "$d$f")"$'\n'; done < <(files_under "$d")
	if [ "$got" = "$want"$'\n' ]; then
		ok "install.sh: exactly the expected files, with their modes"
	else
		bad "install.sh: files and modes differ: $(diff <(echo "$want") <(printf %s "$got"))"
	fi
	if [ "$(id -u)" = 0 ]; then
		if [ -z "$(find "$d" \! -user root)" ]; then ok "install.sh: everything owned by root"; else bad "install.sh: not owned by root: $(find "$d" \! -user root)"; fi
	fi
	check "install.sh: the binary as given" cmp "$hook" "$d/usr/local/bin/vpnfw-hook"
	check "install.sh: the commented configuration" cmp scripts/vpnfw.env "$d/etc/vpn-firewall/vpnfw.env"
	check "install.sh: the plugin with the default paths" cmp scripts/netfilter-persistent/60-vpn-firewall "$d/usr/share/netfilter-persistent/plugins.d/60-vpn-firewall"
	check "install.sh: the unit with the default paths" cmp scripts/systemd/vpnfw-baseline.service "$d/etc/systemd/system/vpnfw-baseline.service"
	check "install.sh: the nftables.service drop-in with the default paths" cmp scripts/systemd/nftables.service.d/vpnfw.conf "$d/etc/systemd/system/nftables.service.d/vpnfw.conf"
	check "install.sh: ip-up.d with the default paths" cmp scripts/ppp/vpnfw "$d/etc/ppp/ip-up.d/vpnfw"

	# An existing configuration is never overwritten.
	printf 'VPNFW_LAN=198.51.100.0/24\n' >"$d/etc/vpn-firewall/vpnfw.env"
	expect_rc 0 "install.sh: again over an existing installation" env DESTDIR="$d" scripts/install.sh --binary "$hook"
	has "install.sh: says it keeps the configuration" "$out" "exists: kept"
	if [ "$(cat "$d/etc/vpn-firewall/vpnfw.env")" = "VPNFW_LAN=198.51.100.0/24" ]; then
		ok "install.sh: the existing configuration is unchanged"
	else
		bad "install.sh: the existing configuration changed"
	fi

	# The package's layout, with the final paths in every script.
	local p=$work/pkg
	expect_rc 0 "install.sh: --prefix /usr --bindir /usr/sbin" env DESTDIR="$p" scripts/install.sh --binary "$hook" --prefix /usr --bindir /usr/sbin
	for f in /lib/systemd/system/vpnfw-baseline.service /lib/systemd/system/nftables.service.d/vpnfw.conf \
		/usr/share/netfilter-persistent/plugins.d/60-vpn-firewall /etc/ppp/ip-up.d/vpnfw /etc/ppp/ip-down.d/vpnfw; do
		if grep -q /usr/sbin/vpnfw-hook "$p$f" && ! grep -q /usr/local/bin/vpnfw-hook "$p$f"; then
			ok "install.sh --prefix /usr: $f names /usr/sbin/vpnfw-hook"
		else
			bad "install.sh --prefix /usr: $f does not name /usr/sbin/vpnfw-hook alone"
		fi
	done

	# --networkmanager, then --uninstall: everything but the configuration goes.
	local n=$work/nm
	expect_rc 0 "install.sh --networkmanager" env DESTDIR="$n" scripts/install.sh --binary "$hook" --networkmanager
	if [ "$(mode_of "$n/etc/NetworkManager/dispatcher.d/90-vpnfw")" = 755 ]; then ok "install.sh --networkmanager: dispatcher script, mode 0755"; else bad "install.sh --networkmanager: no dispatcher script"; fi
	expect_rc 0 "install.sh --uninstall" env DESTDIR="$n" scripts/install.sh --uninstall
	has "install.sh --uninstall: says how to disarm" "$out" "vpnfw-hook disarm --yes"
	has "install.sh --uninstall: says the rules stay" "$out" "fail closed"
	got=$(files_under "$n")
	if [ "$got" = /etc/vpn-firewall/vpnfw.env ]; then ok "install.sh --uninstall: only the configuration is left"; else bad "install.sh --uninstall left: $got"; fi
	if [ ! -e "$n/etc/systemd/system/nftables.service.d" ]; then ok "install.sh --uninstall: removes the empty nftables.service.d"; else bad "install.sh --uninstall left nftables.service.d"; fi

	# Refusals.
	expect_rc 2 "install.sh: --enable does not go with DESTDIR" env DESTDIR="$work/x" scripts/install.sh --binary "$hook" --enable
	expect_rc 2 "install.sh: a relative --prefix is refused" env DESTDIR="$work/x" scripts/install.sh --binary "$hook" --prefix usr
	expect_rc 2 "install.sh: an unknown option is refused" scripts/install.sh --frobnicate
	expect_rc 2 "install.sh: a missing --binary is refused" env DESTDIR="$work/x" scripts/install.sh --binary "$work/nope"
	if [ ! -e "$work/x" ]; then ok "install.sh: a refused install writes nothing"; else bad "install.sh: a refused install wrote $(files_under "$work/x")"; fi

	# --enable asks systemctl to enable the unit for the next boot, and
	# nothing else; a stub stands in for systemctl.
	local e=$work/enable stubs=$work/stubs-enable
	mkdir -p "$stubs"
	printf '#!/bin/sh\necho "systemctl $*" >>%s/systemctl.log\n' "$stubs" >"$stubs/systemctl"
	chmod 0755 "$stubs/systemctl"
	expect_rc 0 "install.sh --enable" env PATH="$stubs:$PATH" scripts/install.sh --binary "$hook" --prefix "$e/usr" \
		--sysconfdir "$e/etc" --unitdir "$e/unit" --plugindir "$e/plugins.d" --enable
	if [ "$(cat "$stubs/systemctl.log" 2>/dev/null)" = $'systemctl daemon-reload\nsystemctl enable vpnfw-baseline.service' ]; then
		ok "install.sh --enable: systemctl daemon-reload, enable vpnfw-baseline.service, nothing else"
	else
		bad "install.sh --enable ran: $(cat "$stubs/systemctl.log" 2>/dev/null)"
	fi
	has "install.sh: prints the next steps" "$out" "Next:"
	has "install.sh: says nothing was applied" "$out" "nothing was applied"
}

# runnable_install DIR [ARGS]: installs into DIR with every path inside it,
# so the installed scripts run as installed: DIR/usr/bin/vpnfw-hook,
# DIR/etc/vpn-firewall/vpnfw.env, DIR/unit, DIR/plugins.d.
runnable_install() {
	local dir=$1
	shift
	env DESTDIR= scripts/install.sh --binary "$hook" --prefix "$dir/usr" --sysconfdir "$dir/etc" \
		--unitdir "$dir/unit" --plugindir "$dir/plugins.d" "$@" >/dev/null
}

# --- systemd unit --------------------------------------------------------------

test_unit() {
	local r=$work/unit-install unit
	runnable_install "$r" || {
		bad "install for the unit test failed"
		return
	}
	unit=$r/unit/vpnfw-baseline.service
	for line in Type=oneshot RemainAfterExit=yes DefaultDependencies=no "Before=network-pre.target" "Wants=network-pre.target" \
		"After=nftables.service" "After=netfilter-persistent.service" \
		"ExecStart=$r/usr/bin/vpnfw-hook --config $r/etc/vpn-firewall/vpnfw.env baseline --boot"; do
		if grep -qE "^${line%%=*}=(.* )?${line#*=}( |$)" "$unit"; then ok "unit: $line"; else bad "unit lacks $line"; fi
	done
	if grep -qE '^ExecStop|^ExecReload' "$unit"; then bad "unit: stopping or reloading it would run something"; else ok "unit: no ExecStop: stopping keeps the rules"; fi
	if have systemd-analyze; then
		expect_rc 0 "unit: systemd-analyze verify" env MANPATH="$r/usr/share/man" systemd-analyze verify "$unit"
		if [ -z "$out" ]; then ok "unit: systemd-analyze verify says nothing"; else bad "unit: systemd-analyze verify: $out"; fi
	else
		skip "unit: systemd-analyze is missing"
	fi
	test_dropin_file "$r"
}

# The drop-in's commands, with the paths of an installation.
DROPIN_KEYS=(ExecStartPost ExecReload ExecStopPost)
# dropin_line HOOK CONFIG: the command each of DROPIN_KEYS runs.
dropin_line() {
	echo "-/bin/sh -c 'test -e /run/vpnfw.armed || exit 0; $1 --config $2 check >/dev/null 2>&1 || exec $1 --config $2 baseline --boot'"
}

# test_dropin_file DIR: the drop-in for nftables.service that runnable_install
# put into DIR/unit: three commands after nftables.service's own, nothing else.
test_dropin_file() {
	local r=$1 dropin key settings
	dropin=$r/unit/nftables.service.d/vpnfw.conf
	for key in "${DROPIN_KEYS[@]}"; do
		if grep -qFx "$key=$(dropin_line "$r/usr/bin/vpnfw-hook" "$r/etc/vpn-firewall/vpnfw.env")" "$dropin"; then
			ok "nftables.service drop-in: $key= re-arms vpnfw unless check passes, failures ignored"
		else
			bad "nftables.service drop-in: no $key= line as expected in: $(cat "$dropin")"
		fi
	done
	settings=$(grep -v -e '^#' -e '^$' "$dropin" | sed 's/=.*//' | tr '\n' ' ')
	if [ "$settings" = "[Service] ExecStartPost ExecReload ExecStopPost " ]; then
		ok "nftables.service drop-in: sets nothing else (no ordering, no reset of the unit's own commands)"
	else
		bad "nftables.service drop-in: sets $settings"
	fi
	verify_dropin "nftables.service drop-in" "$dropin"
}

# verify_dropin DESC FILE: systemd-analyze verify of a stub nftables.service
# (Debian's commands, behind /bin/true) with FILE as its drop-in; first with a
# misspelt key, to show that verify reads the drop-in at all.
verify_dropin() {
	local desc=$1 v
	if ! have systemd-analyze; then
		skip "$desc: systemd-analyze is missing"
		return
	fi
	v=$(mktemp -d "$work/verify.XXXXXX")
	mkdir "$v/nftables.service.d"
	cat >"$v/nftables.service" <<'EOF'
[Unit]
Description=stub of Debian's nftables.service
DefaultDependencies=no

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true /usr/sbin/nft -f /etc/nftables.conf
ExecReload=/bin/true /usr/sbin/nft -f /etc/nftables.conf
ExecStop=/bin/true /usr/sbin/nft flush ruleset
EOF
	sed 's/^ExecReload=/ExecRelaod=/' "$2" >"$v/nftables.service.d/vpnfw.conf"
	out=$(systemd-analyze verify "$v/nftables.service" 2>&1)
	has "$desc: systemd-analyze verify reads it (a misspelt key is reported)" "$out" "Unknown key"
	cp "$2" "$v/nftables.service.d/vpnfw.conf"
	expect_rc 0 "$desc: systemd-analyze verify with a stub nftables.service" systemd-analyze verify "$v/nftables.service"
	if [ -z "$out" ]; then ok "$desc: systemd-analyze verify says nothing"; else bad "$desc: systemd-analyze verify: $out"; fi
}

# --- Debian package ---------------------------------------------------------

deb=
test_deb() {
	local o=$work/deb x=$work/deb-x
	if ! have dpkg-deb; then
		skip "Debian package: dpkg-deb is missing"
		return
	fi
	expect_rc 0 "build-deb.sh builds the package" scripts/build-deb.sh --out "$o"
	deb=$(find "$o" -name 'vpnfw_*.deb' | head -n 1)
	if [ -z "$deb" ]; then
		bad "build-deb.sh: no .deb in $o: $out"
		return
	fi
	local want got
	want=$(
		cat <<'EOF'
-rw------- root/root ./etc/vpn-firewall/vpnfw.env
-rw-r--r-- root/root ./lib/systemd/system/nftables.service.d/vpnfw.conf
-rw-r--r-- root/root ./lib/systemd/system/vpnfw-baseline.service
-rw-r--r-- root/root ./usr/share/doc/vpnfw/changelog.gz
-rw-r--r-- root/root ./usr/share/doc/vpnfw/copyright
-rw-r--r-- root/root ./usr/share/doc/vpnfw/examples/90-vpnfw-networkmanager
-rw-r--r-- root/root ./usr/share/doc/vpnfw/examples/openvpn/README.md
-rw-r--r-- root/root ./usr/share/doc/vpnfw/examples/openvpn/client-mark.conf
-rw-r--r-- root/root ./usr/share/doc/vpnfw/examples/openvpn/client-user.conf
-rw-r--r-- root/root ./usr/share/doc/vpnfw/examples/openvpn/openvpn-client@.service.d/vpnfw-user.conf
-rw-r--r-- root/root ./usr/share/doc/vpnfw/examples/wg0.conf
-rw-r--r-- root/root ./usr/share/lintian/overrides/vpnfw
-rw-r--r-- root/root ./usr/share/man/man8/vpnfw-hook.8.gz
-rwxr-xr-x root/root ./etc/ppp/ip-down.d/vpnfw
-rwxr-xr-x root/root ./etc/ppp/ip-up.d/vpnfw
-rwxr-xr-x root/root ./usr/sbin/vpnfw-hook
-rwxr-xr-x root/root ./usr/share/netfilter-persistent/plugins.d/60-vpn-firewall
EOF
	)
	got=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $1, $2, $6}' | sort)
	if [ "$got" = "$want" ]; then ok "package: dpkg-deb -c lists exactly the expected files, modes and owners"; else bad "package contents differ: $(diff <(echo "$want") <(echo "$got"))"; fi
	if [ -z "$(dpkg-deb -c "$deb" | awk '$2 != "root/root"')" ]; then ok "package: everything owned by root"; else bad "package: not owned by root"; fi
	local info
	info=$(dpkg-deb -I "$deb")
	has "package: Package: vpnfw" "$info" "Package: vpnfw"
	has "package: recommends iptables (the iptables backend)" "$info" "Recommends: iptables (>= 1.8)"
	lacks "package: depends on nothing (nftables is netlink)" "$info" "Depends:"
	has "package: suggests nftables (nft, to look)" "$info" "Suggests: nftables,"
	has "package: version from git" "$info" "Version: 0.0~git"
	has "package: architecture" "$info" "Architecture: $(dpkg --print-architecture 2>/dev/null || go env GOARCH)"
	mkdir -p "$x"
	dpkg-deb -x "$deb" "$x" && dpkg-deb -e "$deb" "$x/DEBIAN"
	if [ "$(cat "$x/DEBIAN/conffiles")" = $'/etc/ppp/ip-down.d/vpnfw\n/etc/ppp/ip-up.d/vpnfw\n/etc/vpn-firewall/vpnfw.env' ]; then
		ok "package: the configuration and the PPP hooks are conffiles"
	else
		bad "package: conffiles: $(cat "$x/DEBIAN/conffiles")"
	fi
	check "package: md5sums match" sh -c "cd '$x' && md5sum --quiet -c DEBIAN/md5sums"
	check "package: the binary runs" "$x/usr/sbin/vpnfw-hook" version
	check "package: the shipped configuration" cmp scripts/vpnfw.env "$x/etc/vpn-firewall/vpnfw.env"
	for f in usr/share/netfilter-persistent/plugins.d/60-vpn-firewall etc/ppp/ip-up.d/vpnfw etc/ppp/ip-down.d/vpnfw lib/systemd/system/vpnfw-baseline.service \
		lib/systemd/system/nftables.service.d/vpnfw.conf; do
		if grep -q /usr/sbin/vpnfw-hook "$x/$f" && ! grep -q /usr/local/bin/vpnfw-hook "$x/$f"; then ok "package: $f names /usr/sbin/vpnfw-hook"; else bad "package: $f does not name /usr/sbin/vpnfw-hook"; fi
	done
	if have groff; then
		local err
		err=$(zcat "$x/usr/share/man/man8/vpnfw-hook.8.gz" | groff -man -Tutf8 -ww -z 2>&1)
		if [ -z "$err" ]; then ok "package: its man page renders without warnings"; else bad "package man page: $err"; fi
	fi
	if have systemd-analyze; then
		# The package's unit, pointed at the extracted binary.
		mkdir -p "$x/check"
		sed "s|/usr/sbin/vpnfw-hook|$x/usr/sbin/vpnfw-hook|" "$x/lib/systemd/system/vpnfw-baseline.service" >"$x/check/vpnfw-baseline.service"
		expect_rc 0 "package: its unit passes systemd-analyze verify" env MANPATH="$x/usr/share/man" systemd-analyze verify "$x/check/vpnfw-baseline.service"
		verify_dropin "package: its nftables.service drop-in" "$x/lib/systemd/system/nftables.service.d/vpnfw.conf"
	fi
	for s in postinst prerm postrm; do
		if [ "$(mode_of "$x/DEBIAN/$s")" = 755 ] && head -n 1 "$x/DEBIAN/$s" | grep -q '^#!/bin/sh'; then ok "package: $s is an executable sh script"; else bad "package: $s"; fi
	done
	if have lintian; then
		# lintian warns when run as root; the package is what it checks.
		expect_rc 0 "package: lintian --fail-on error,warning" lintian --fail-on error,warning "$deb"
	else
		skip "package: lintian is missing (apt-get install lintian)"
	fi
}

# --- in network namespaces (root) ------------------------------------------------

# new_ns LABEL: creates a namespace of this script's own, named in $NS, and
# remembers it for the cleanup (so not in a subshell).
NS=
new_ns() {
	NS="vpnfwi-$$-${#NAMESPACES[@]}-$1"
	ip netns add "$NS" || exit 1
	NAMESPACES+=("$NS")
	guard_netns "$NS"
	ip netns exec "$NS" ip link set lo up
}
# in_ns NS CMD...: runs CMD in the namespace, after the guard.
in_ns() {
	local ns=$1
	shift
	guard_netns "$ns"
	ip netns exec "$ns" "$@"
}
# ruleset NS: the namespace's nftables ruleset (vpnfw's table, and
# iptables-nft's) and its iptables filter tables, without counters and
# comments.
ruleset() {
	{
		in_ns "$1" nft -s list ruleset
		in_ns "$1" iptables-save -t filter
		in_ns "$1" ip6tables-save -t filter
	} 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]/[0:0]/'
}
# nft_table NS: vpnfw's nftables table, as nft lists it, without counters.
nft_table() { in_ns "$1" nft -s list table inet vpnfw 2>/dev/null; }
# write_config FILE LINE...: a configuration owned by root, mode 0600.
write_config() {
	local f=$1
	shift
	printf '%s\n' "$@" >"$f"
	chmod 0600 "$f"
}
# state NS HOOK CONFIG: "state tunnels..." from status --json.
state() {
	in_ns "$1" "$2" --config "$3" status --json 2>/dev/null |
		tr -d ' \n' | sed -n 's/.*"state":"\([a-z]*\)","tunnels":\[\([^]]*\)\].*/\1 \2/p' | tr -d '"' | tr ',' ' '
}

# armed_with NS WHAT BACKEND: vpnfw's rules are in BACKEND (nftables or
# iptables) alone, with the server 192.0.2.1 allowed for the mark.
armed_with() {
	local ns=$1 what=$2 table rules
	table=$(nft_table "$ns")
	rules=$(ruleset "$ns")
	if [ "$3" = nftables ]; then
		has "$what: the server is in table inet vpnfw's servers set" "$table" "elements = { 192.0.2.1 }"
		has "$what: the server is allowed for the mark (nftables)" "$table" "udp dport 1194 meta mark 0x00000077 counter accept"
		lacks "$what: no vpnfw chain in iptables" "$rules" "VPNFW-"
	else
		has "$what: the server is allowed for the mark (iptables)" "$rules" "-d 192.0.2.1/32 -p udp -m udp --dport 1194 -m mark --mark 0x77"
		if [ -z "$table" ]; then ok "$what: no table inet vpnfw"; else bad "$what: table inet vpnfw is still there"; fi
	fi
}

# plugin_pass BACKEND: the plugin and the boot path with VPNFW_BACKEND=BACKEND
# (auto: the line left out, as shipped); the host may be armed with the
# other backend before: start switches.
plugin_pass() {
	local backend=$1 ns=$PLUGIN_NS cfg=$PLUGIN_R/etc/vpn-firewall/vpnfw.env plugin=$PLUGIN_R/plugins.d/60-vpn-firewall
	local ih=$PLUGIN_R/usr/bin/vpnfw-hook before msg after c broken
	local good=("VPNFW_SERVERS=192.0.2.1" "VPNFW_VPN_MARK=119") want=nftables name='nftables (table inet vpnfw)'
	if [ "$backend" = iptables ]; then
		good+=("VPNFW_BACKEND=iptables")
		want=iptables name='iptables ('
	fi
	write_config "$cfg" "${good[@]}"
	expect_rc 0 "plugin start ($backend)" in_ns "$ns" "$plugin" start
	has "plugin start ($backend): applied with $name" "$out" "\"backend\":\"$name"
	expect_rc 0 "plugin start ($backend): check passes with the configuration" in_ns "$ns" "$ih" --config "$cfg" check
	armed_with "$ns" "plugin start ($backend)" "$want"
	before=$(ruleset "$ns")
	for c in save stop reload restart force-reload; do
		expect_rc 0 "plugin $c ($backend)" in_ns "$ns" "$plugin" "$c"
		msg=$out
		if [ "$(ruleset "$ns")" = "$before" ]; then ok "plugin $c ($backend): the rules are the same"; else bad "plugin $c ($backend) changed the rules"; fi
		case $c in
		save) has "plugin save: says why it saves nothing" "$msg" "nothing to save" ;;
		stop) has "plugin stop: says the rules stay" "$msg" "keeps vpnfw's rules" ;;
		esac
	done

	# The boot path: a broken or missing configuration applies the lockdown
	# (with the auto backend, whatever the broken file said).
	for broken in "VPNFW_SERVERS=192.0.2.1" "VPNFW_VPN_USER=vpnfw-no-such-user" "VPNFW_TYPO=1" missing; do
		write_config "$cfg" "${good[@]}"
		expect_rc 0 "plugin start before: $broken ($backend)" in_ns "$ns" "$plugin" start
		if [ "$broken" = missing ]; then rm -f "$cfg"; else write_config "$cfg" "$broken"; fi
		expect_rc 2 "plugin start with a broken configuration ($broken, was $backend): exit 2" in_ns "$ns" "$plugin" start
		has "plugin start ($broken, was $backend): logs the lockdown" "$out" "lockdown applied: only loopback passes"
		expect_rc 0 "plugin start ($broken, was $backend): the live ruleset is the lockdown" in_ns "$ns" "$ih" --config "$work/empty.env" check
		lacks "plugin start ($broken, was $backend): the server is no longer allowed" "$(ruleset "$ns")" "192.0.2.1"
	done

	# The unit's ExecStart, as systemd would run it.
	local exec
	exec=$(sed -n 's/^ExecStart=//p' "$PLUGIN_R/unit/vpnfw-baseline.service")
	read -ra argv <<<"$exec"
	write_config "$cfg" "${good[@]}"
	expect_rc 0 "unit ExecStart with a good configuration ($backend)" in_ns "$ns" "${argv[@]}"
	expect_rc 0 "unit ExecStart ($backend): check passes" in_ns "$ns" "$ih" --config "$cfg" check
	armed_with "$ns" "unit ExecStart ($backend)" "$want"
	write_config "$cfg" "VPNFW_SERVERS=192.0.2.1 nonsense"
	expect_rc 2 "unit ExecStart with a broken configuration: exit 2" in_ns "$ns" "${argv[@]}"
	has "unit ExecStart: names the broken key" "$out" "VPNFW_SERVERS"
	expect_rc 0 "unit ExecStart: the live ruleset is the lockdown" in_ns "$ns" "$ih" --config "$work/empty.env" check

	# flush is the explicit way to open the host, and says so loudly.
	write_config "$cfg" "${good[@]}"
	expect_rc 0 "plugin start before flush ($backend)" in_ns "$ns" "$plugin" start
	expect_rc 0 "plugin flush ($backend)" in_ns "$ns" "$plugin" flush
	has "plugin flush ($backend): warns" "$out" "WARNING: vpnfw is DISARMED"
	after=$(ruleset "$ns")
	lacks "plugin flush ($backend): no vpnfw chain is left" "$after" "VPNFW"
	lacks "plugin flush ($backend): no vpnfw table is left" "$after" "table inet vpnfw"
	has "plugin flush ($backend): iptables policies are ACCEPT" "$after" ":OUTPUT ACCEPT"
	expect_rc 0 "plugin start arms it again ($backend)" in_ns "$ns" "$plugin" start
	expect_rc 0 "plugin start after flush ($backend): check passes" in_ns "$ns" "$ih" --config "$cfg" check
	armed_with "$ns" "plugin start after flush ($backend)" "$want"
}

PLUGIN_R='' PLUGIN_NS=''
test_plugin_and_boot() {
	PLUGIN_R=$work/boot
	runnable_install "$PLUGIN_R" || {
		bad "install for the plugin test failed"
		return
	}
	new_ns plugin
	PLUGIN_NS=$NS
	write_config "$work/empty.env"

	# As installed, the configuration sets nothing: start arms the blocked
	# state of the defaults, with the default backend.
	expect_rc 0 "plugin start with the shipped configuration" in_ns "$PLUGIN_NS" "$PLUGIN_R/plugins.d/60-vpn-firewall" start
	expect_rc 0 "plugin start: check passes" in_ns "$PLUGIN_NS" "$PLUGIN_R/usr/bin/vpnfw-hook" --config "$PLUGIN_R/etc/vpn-firewall/vpnfw.env" check
	expect_rc 1 "plugin: an unknown action is refused" in_ns "$PLUGIN_NS" "$PLUGIN_R/plugins.d/60-vpn-firewall" frobnicate
	# The default, auto, is nftables where the kernel has it (this one must);
	# then VPNFW_BACKEND=iptables: start switches to it, and back.
	plugin_pass auto
	plugin_pass iptables
	plugin_pass auto
}

# dropin_argv DROPIN KEY: the command line of KEY= in DROPIN split as systemd
# splits it, in $argv, without the leading "-" (failure ignored), which it
# must have. It takes the form /bin/sh -c 'SCRIPT' only.
argv=()
dropin_argv() {
	local line
	line=$(sed -n "s/^$2=//p" "$1")
	argv=()
	case $line in
	-*) line=${line#-} ;;
	*) return 1 ;;
	esac
	[[ $line =~ ^(/[^\ \']+)\ -c\ \'([^\']*)\'$ ]] || return 1
	argv=("${BASH_REMATCH[1]}" -c "${BASH_REMATCH[2]}")
}

# dropin_pass BACKEND: vpnfw armed with BACKEND (auto: as shipped, or
# iptables) in a namespace of its own; then nftables.service's start, reload
# and stop with Debian's /etc/nftables.conf, each followed by the drop-in's
# command as systemd runs it.
dropin_pass() {
	local backend=$1 ns key flush what conf=$work/nftables.conf
	local ih=$DROPIN_R/usr/bin/vpnfw-hook cfg=$DROPIN_R/etc/vpn-firewall/vpnfw.env dropin=$DROPIN_R/unit/nftables.service.d/vpnfw.conf
	local good=("VPNFW_SERVERS=192.0.2.1" "VPNFW_VPN_MARK=119") want=nftables before
	if [ "$backend" = iptables ]; then
		good+=("VPNFW_BACKEND=iptables")
		want=iptables
	fi
	# Debian's /etc/nftables.conf, as the nftables package ships it.
	cat >"$conf" <<'EOF'
#!/usr/sbin/nft -f

flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
EOF
	new_ns "dropin-$backend"
	ns=$NS
	write_config "$cfg" "${good[@]}"
	expect_rc 0 "drop-in ($backend): vpnfw armed first" in_ns "$ns" "$ih" --config "$cfg" baseline
	for key in "${DROPIN_KEYS[@]}"; do
		if dropin_argv "$dropin" "$key"; then
			ok "drop-in: $key= is /bin/sh -c '...', its failure ignored"
		else
			bad "drop-in: $key= is not -/bin/sh -c '...': $(grep "^$key=" "$dropin")"
			continue
		fi
		flush=(nft -f "$conf") what="nft -f /etc/nftables.conf" # ExecStart=, ExecReload=
		if [ "$key" = ExecStopPost ]; then flush=(nft flush ruleset) what="nft flush ruleset"; fi
		expect_rc 0 "drop-in ($backend): nftables.service's $what (before $key)" in_ns "$ns" "${flush[@]}"
		expect_rc 1 "drop-in ($backend): after $what, check fails (vpnfw's rules are gone)" in_ns "$ns" "$ih" --config "$cfg" check
		expect_rc 0 "drop-in ($backend): $key" in_ns "$ns" "${argv[@]}"
		expect_rc 0 "drop-in ($backend): after $key, check passes" in_ns "$ns" "$ih" --config "$cfg" check
		armed_with "$ns" "drop-in $key ($backend)" "$want"
		if [ "$key" != ExecStopPost ]; then
			check "drop-in ($backend): after $key, /etc/nftables.conf's table is still there" in_ns "$ns" nft list table inet filter
		fi
	done

	# Intact rules are left alone: a tunnel survives, the rules are the same.
	dropin_argv "$dropin" ExecReload
	expect_rc 0 "drop-in ($backend): up --dev tun0" in_ns "$ns" "$ih" --config "$cfg" up --dev tun0
	before=$(ruleset "$ns")
	expect_rc 0 "drop-in ($backend): ExecReload with vpnfw's rules intact" in_ns "$ns" "${argv[@]}"
	if [ "$(ruleset "$ns")" = "$before" ]; then ok "drop-in ($backend): intact rules are left as they are"; else bad "drop-in ($backend): changed intact rules"; fi
	if [ "$(state "$ns" "$ih" "$cfg")" = "connected tun0" ]; then ok "drop-in ($backend): tun0 stays allowed"; else bad "drop-in ($backend): state $(state "$ns" "$ih" "$cfg")"; fi
	# After a flush the tunnel is blocked until its VPN comes up again.
	expect_rc 0 "drop-in ($backend): nft -f with tun0 up" in_ns "$ns" nft -f "$conf"
	expect_rc 0 "drop-in ($backend): ExecReload after the flush" in_ns "$ns" "${argv[@]}"
	if [ "$(state "$ns" "$ih" "$cfg")" = "blocked " ]; then ok "drop-in ($backend): after a flush, blocked: tun0 waits for the next up"; else bad "drop-in ($backend): after a flush, state $(state "$ns" "$ih" "$cfg")"; fi

	# Disarmed on purpose: a flush leaves it so (vpnfw-hook disarm removed
	# /run/vpnfw.armed, which every apply creates).
	expect_rc 0 "drop-in ($backend): disarm --yes" in_ns "$ns" "$ih" --config "$cfg" disarm --yes
	if [ ! -e /run/vpnfw.armed ]; then ok "drop-in ($backend): disarm removed /run/vpnfw.armed"; else bad "drop-in ($backend): /run/vpnfw.armed is left after disarm"; fi
	expect_rc 0 "drop-in ($backend): nft -f after disarm" in_ns "$ns" nft -f "$conf"
	expect_rc 0 "drop-in ($backend): ExecReload after disarm" in_ns "$ns" "${argv[@]}"
	lacks "drop-in ($backend): after disarm, ExecReload arms nothing" "$(ruleset "$ns")" "vpnfw"
	expect_rc 0 "drop-in ($backend): baseline arms it again" in_ns "$ns" "$ih" --config "$cfg" baseline
	if [ -e /run/vpnfw.armed ]; then ok "drop-in ($backend): baseline created /run/vpnfw.armed"; else bad "drop-in ($backend): no /run/vpnfw.armed after baseline"; fi

	# A broken configuration: the lockdown, exit 2, which "-" makes systemd ignore.
	write_config "$cfg" "VPNFW_SERVERS=192.0.2.1 nonsense"
	expect_rc 0 "drop-in ($backend): nft flush ruleset with a broken configuration" in_ns "$ns" nft flush ruleset
	dropin_argv "$dropin" ExecStopPost
	expect_rc 2 "drop-in ($backend): ExecStopPost with a broken configuration exits 2" in_ns "$ns" "${argv[@]}"
	has "drop-in ($backend): logs the lockdown" "$out" "lockdown applied: only loopback passes"
	expect_rc 0 "drop-in ($backend): the live ruleset is the lockdown" in_ns "$ns" "$ih" --config "$work/empty.env" check
}

DROPIN_R=''
test_nftables_dropin() {
	DROPIN_R=$work/dropin
	runnable_install "$DROPIN_R" || {
		bad "install for the drop-in test failed"
		return
	}
	write_config "$work/empty.env"
	dropin_pass auto
	dropin_pass iptables
}

test_networkmanager_and_wireguard() {
	local r=$work/nmwg ns cfg ih nm before
	runnable_install "$r" --networkmanager || {
		bad "install for the NetworkManager test failed"
		return
	}
	new_ns nm
	ns=$NS
	cfg=$r/etc/vpn-firewall/vpnfw.env
	ih=$r/usr/bin/vpnfw-hook
	nm=$r/etc/NetworkManager/dispatcher.d/90-vpnfw
	write_config "$cfg" "VPNFW_SERVERS=192.0.2.1" "VPNFW_VPN_MARK=119" "VPNFW_TUN_DEVICES=tun+"
	expect_rc 0 "NetworkManager: baseline" in_ns "$ns" "$ih" --config "$cfg" baseline
	# NetworkManager's environment for a VPN action, without PATH.
	nmenv=(env -i CONNECTION_ID=work CONNECTION_UUID=8d2a3c3e-0000-4000-8000-000000000001 DEVICE_IFACE=eth0 VPN_IP_IFACE=tun0)
	expect_rc 0 "NetworkManager vpn-up tun0" in_ns "$ns" "${nmenv[@]}" "$nm" tun0 vpn-up
	if [ "$(state "$ns" "$ih" "$cfg")" = "connected tun0" ]; then ok "NetworkManager vpn-up: tun0 is allowed"; else bad "NetworkManager vpn-up: state $(state "$ns" "$ih" "$cfg")"; fi
	before=$(ruleset "$ns")
	for action in up down pre-up dhcp4-change vpn-pre-up vpn-pre-down connectivity-change; do
		expect_rc 0 "NetworkManager $action: nothing to do" in_ns "$ns" "${nmenv[@]}" "$nm" tun0 "$action"
		if [ "$(ruleset "$ns")" != "$before" ]; then bad "NetworkManager $action changed the rules"; fi
	done
	for hostile in "VPN_IP_IFACE=tun0;id tun0;id" "VPN_IP_IFACE=eth0 eth0" "VPN_IP_IFACE=tun0 tun1" "VPN_IP_IFACE=-tun0 -tun0" "VPN_IP_IFACE= "; do
		local var=${hostile%% *} arg=${hostile#* }
		expect_rc 2 "NetworkManager vpn-up refuses $hostile" in_ns "$ns" env -i "$var" "$nm" "$arg" vpn-up
		if [ "$(ruleset "$ns")" = "$before" ]; then ok "NetworkManager: refused $hostile changed nothing"; else bad "NetworkManager: refused $hostile changed the rules"; fi
	done
	expect_rc 0 "NetworkManager vpn-down tun0" in_ns "$ns" "${nmenv[@]}" "$nm" tun0 vpn-down
	if [ "$(state "$ns" "$ih" "$cfg")" = "blocked " ]; then ok "NetworkManager vpn-down: blocked again"; else bad "NetworkManager vpn-down: state $(state "$ns" "$ih" "$cfg")"; fi

	# The wg-quick example: its own configuration comment, its FwMark, and its
	# PostUp/PreDown run the way wg-quick runs them (bash, %i replaced).
	local example=$r/usr/share/doc/vpnfw/examples/wg0.conf postup predown
	sed -n 's/^#   \(VPNFW_[A-Z_]*=[^ ]*\).*/\1/p' "$example" >"$cfg"
	chmod 0600 "$cfg"
	if grep -q '^VPNFW_VPN_MARK=119$' "$cfg" && grep -q '^FwMark = 119$' "$example"; then ok "wg0.conf: FwMark is the configuration's VPNFW_VPN_MARK"; else bad "wg0.conf: FwMark and VPNFW_VPN_MARK differ"; fi
	postup=$(sed -n 's/^PostUp = //p' "$example")
	predown=$(sed -n 's/^PreDown = //p' "$example")
	in_ns "$ns" ip link add wg0 type dummy
	expect_rc 0 "wg0.conf: baseline with its configuration" in_ns "$ns" "$ih" --config "$cfg" baseline
	expect_rc 0 "wg0.conf: PostUp" in_ns "$ns" bash -c "${postup//%i/wg0}"
	if [ "$(state "$ns" "$ih" "$cfg")" = "connected wg0" ]; then ok "wg0.conf PostUp: wg0 is allowed"; else bad "wg0.conf PostUp: state $(state "$ns" "$ih" "$cfg")"; fi
	has "wg0.conf: the Endpoint is in the servers set" "$(nft_table "$ns")" "elements = { 192.0.2.10 }"
	has "wg0.conf: the Endpoint is allowed for WireGuard's mark only" "$(nft_table "$ns")" "udp dport 51820 meta mark 0x00000077 counter accept"
	expect_rc 0 "wg0.conf: check" in_ns "$ns" "$ih" --config "$cfg" check
	expect_rc 0 "wg0.conf: PreDown" in_ns "$ns" bash -c "${predown//%i/wg0}"
	if [ "$(state "$ns" "$ih" "$cfg")" = "blocked " ]; then ok "wg0.conf PreDown: blocked again"; else bad "wg0.conf PreDown: state $(state "$ns" "$ih" "$cfg")"; fi
}

test_maintainer_scripts() {
	local x=$work/deb-x ns cfg stubs before s
	if [ -z "$deb" ] || [ ! -x "$x/DEBIAN/postinst" ]; then
		bad "maintainer scripts: no package to test"
		return
	fi
	new_ns maint
	ns=$NS
	cfg=$work/maint.env
	write_config "$cfg" "VPNFW_SERVERS=192.0.2.1" "VPNFW_VPN_MARK=119"
	expect_rc 0 "maintainer scripts: armed first" in_ns "$ns" "$hook" --config "$cfg" baseline
	before=$(ruleset "$ns")
	# Anything that could change the firewall or start a unit records its call.
	stubs=$work/stubs-maint
	mkdir -p "$stubs"
	for s in iptables ip6tables iptables-restore ip6tables-restore iptables-legacy iptables-nft nft vpnfw-hook \
		netfilter-persistent systemctl deb-systemd-helper deb-systemd-invoke invoke-rc.d service; do
		printf '#!/bin/sh\necho "%s $*" >>%s/calls.log\n' "$s" "$stubs" >"$stubs/$s"
		chmod 0755 "$stubs/$s"
	done
	for step in "postinst configure" "postinst configure 0.0~old" "prerm upgrade 0.0~new" "postrm upgrade 0.0~new" \
		"prerm remove" "postrm remove"; do
		read -ra a <<<"$step"
		expect_rc 0 "maintainer script: $step" in_ns "$ns" env PATH="$stubs:/usr/sbin:/usr/bin:/sbin:/bin" \
			DPKG_MAINTSCRIPT_PACKAGE=vpnfw "$x/DEBIAN/${a[0]}" "${a[@]:1}"
		case $step in
		"postinst configure") has "postinst: says nothing was applied" "$out" "nothing was applied" ;;
		"prerm remove") has "prerm remove: tells how to disarm" "$out" "vpnfw-hook disarm --yes" ;;
		"postrm remove") has "postrm remove: says the host stays fail closed" "$out" "fail closed" ;;
		*upgrade* | "postinst configure 0.0~old")
			if [ -z "$out" ]; then ok "$step: says nothing"; else bad "$step printed: $out"; fi
			;;
		esac
		if [ "$(ruleset "$ns")" = "$before" ]; then ok "$step: the firewall is unchanged"; else bad "$step changed the firewall"; fi
	done
	if [ ! -s "$stubs/calls.log" ]; then ok "maintainer scripts: ran no firewall tool, no vpnfw-hook, no systemctl"; else bad "maintainer scripts ran: $(cat "$stubs/calls.log")"; fi
	# purge would rmdir this machine's /etc/vpn-firewall: read, not run.
	if grep -q 'rmdir /etc/vpn-firewall' "$x/DEBIAN/postrm" && ! grep -qE '^\s*(rm -r|vpnfw-hook|iptables|nft)' "$x/DEBIAN/postrm"; then
		ok "postrm purge: only removes the empty configuration directory"
	else
		bad "postrm purge does more than rmdir /etc/vpn-firewall"
	fi
}

have() { command -v "$1" >/dev/null 2>&1; }

test_man_and_config
test_install
test_unit
test_deb
if [ "$(id -u)" = 0 ]; then
	test_plugin_and_boot
	test_nftables_dropin
	test_networkmanager_and_wireguard
	test_maintainer_scripts
else
	skip "plugin, boot path, nftables.service drop-in, NetworkManager, wg-quick and maintainer scripts: need root (network namespaces)"
fi

echo "integration: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
