#!/usr/bin/env bash
# Installs vpnfw: the binary, a commented configuration (never overwriting an
# existing one), the netfilter-persistent plugin, the systemd unit, the
# drop-in for nftables.service, the PPP hooks, the man page and the examples.
# It applies no firewall rule and starts nothing: it prints the next steps.
#
#   sudo scripts/install.sh                    build with Go, install under /usr/local
#   sudo scripts/install.sh --uninstall        remove it again (the configuration stays)
#   DESTDIR=/tmp/stage scripts/install.sh --prefix /usr --bindir /usr/sbin
#                                              stage for a package (see build-deb.sh)
#
# Options:
#   --binary FILE      install this vpnfw-hook instead of building one
#   --prefix DIR       /usr/local; the binary goes to PREFIX/bin, the man page
#                      and examples under PREFIX/share
#   --bindir DIR       PREFIX/bin
#   --sysconfdir DIR   /etc: SYSCONFDIR/vpn-firewall/vpnfw.env, SYSCONFDIR/ppp
#   --unitdir DIR      /lib/systemd/system with --prefix /usr, else /etc/systemd/system
#   --plugindir DIR    /usr/share/netfilter-persistent/plugins.d
#   --networkmanager   also install the NetworkManager dispatcher script into
#                      SYSCONFDIR/NetworkManager/dispatcher.d (it arms vpnfw
#                      whenever NetworkManager brings a VPN up)
#   --enable           systemctl enable vpnfw-baseline.service: arm vpnfw at the
#                      next boot (nothing is applied now)
#   --uninstall        remove what an install with the same options installed
#   DESTDIR            stage everything under this directory (packagers)
#
# Installed scripts name the binary and configuration by their final paths
# (without DESTDIR), so they work wherever --prefix and --sysconfdir put them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() {
	echo "install.sh: $*" >&2
	exit 2
}

binary='' prefix=/usr/local bindir='' sysconfdir=/etc unitdir='' nm=no enable=no uninstall=no
plugindir=/usr/share/netfilter-persistent/plugins.d
while [ $# -gt 0 ]; do
	case $1 in
	--binary) binary=${2:?--binary needs a file}; shift ;;
	--prefix) prefix=${2:?--prefix needs a directory}; shift ;;
	--bindir) bindir=${2:?--bindir needs a directory}; shift ;;
	--sysconfdir) sysconfdir=${2:?--sysconfdir needs a directory}; shift ;;
	--unitdir) unitdir=${2:?--unitdir needs a directory}; shift ;;
	--plugindir) plugindir=${2:?--plugindir needs a directory}; shift ;;
	--networkmanager) nm=yes ;;
	--enable) enable=yes ;;
	--uninstall) uninstall=yes ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
for d in "$prefix" "$sysconfdir" "$plugindir" ${bindir:+"$bindir"} ${unitdir:+"$unitdir"}; do
	case $d in
	/*) ;;
	*) die "$d: directories must be absolute paths" ;;
	esac
	case $d in
	*[!A-Za-z0-9_./+-]*) die "$d: only letters, digits and _ . / + - in directories" ;;
	esac
done
bindir=${bindir:-$prefix/bin}
if [ -z "$unitdir" ]; then
	unitdir=/etc/systemd/system
	[ "$prefix" = /usr ] && unitdir=/lib/systemd/system
fi
destdir=${DESTDIR:-}
if [ -n "$destdir" ] && [ "$enable" = yes ]; then
	die "--enable changes the running system; it does not go with DESTDIR"
fi

# Where each file goes (final paths, without DESTDIR).
hook=$bindir/vpnfw-hook
config=$sysconfdir/vpn-firewall/vpnfw.env
plugin=$plugindir/60-vpn-firewall
unit=$unitdir/vpnfw-baseline.service
# Re-arms vpnfw after nftables.service flushed the ruleset.
nftdropin=$unitdir/nftables.service.d/vpnfw.conf
ipup=$sysconfdir/ppp/ip-up.d/vpnfw
ipdown=$sysconfdir/ppp/ip-down.d/vpnfw
nmscript=$sysconfdir/NetworkManager/dispatcher.d/90-vpnfw
man=$prefix/share/man/man8/vpnfw-hook.8
examples=$prefix/share/doc/vpnfw/examples
# The OpenVPN client configurations the leak lab runs, under $examples/openvpn.
openvpn_examples=(README.md client-mark.conf client-user.conf openvpn-client@.service.d/vpnfw-user.conf)

owner=()
[ "$(id -u)" = 0 ] && owner=(-o root -g root)

# put SRC DST MODE: installs SRC with the final paths of this installation
# in place of the defaults it names.
put() {
	install -d -m 0755 "$(dirname "$destdir$2")"
	sed -e "s|/usr/local/bin/vpnfw-hook|$hook|g" -e "s|/etc/vpn-firewall/vpnfw.env|$config|g" "$1" >"$destdir$2.vpnfw-new"
	chmod "$3" "$destdir$2.vpnfw-new"
	[ ${#owner[@]} -eq 0 ] || chown root:root "$destdir$2.vpnfw-new"
	mv -f "$destdir$2.vpnfw-new" "$destdir$2"
	echo "  $2"
}

if [ "$uninstall" = yes ]; then
	echo "removing vpnfw from ${destdir:-/}:"
	if [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl disable vpnfw-baseline.service 2>/dev/null || true
	fi
	for f in "$hook" "$plugin" "$unit" "$nftdropin" "$ipup" "$ipdown" "$man" "$examples/wg0.conf" "$examples/90-vpnfw-networkmanager" \
		"${openvpn_examples[@]/#/$examples/openvpn/}"; do
		if [ -e "$destdir$f" ]; then
			rm -f "$destdir$f"
			echo "  removed $f"
		fi
	done
	# The dispatcher script only if it is ours.
	if [ -f "$destdir$nmscript" ] && grep -q 'vpnfw-hook' "$destdir$nmscript"; then
		rm -f "$destdir$nmscript"
		echo "  removed $nmscript"
	fi
	rmdir "$destdir$(dirname "$nftdropin")" 2>/dev/null || true
	rmdir "$destdir$examples/openvpn/openvpn-client@.service.d" "$destdir$examples/openvpn" "$destdir$examples" \
		"$destdir$prefix/share/doc/vpnfw" 2>/dev/null || true
	if [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl daemon-reload || true
	fi
	cat <<EOF

Kept: $config (your configuration; delete it by hand).
vpnfw's firewall rules stay in the kernel: the host stays fail closed until
the next reboot, and nothing arms vpnfw at boot any more. To open the host
now, run 'vpnfw-hook disarm --yes' before uninstalling; once it is gone, reboot
(with the iptables backend, also remove vpnfw's chains from
/etc/iptables/rules.v4 and rules.v6 if netfilter-persistent saved them).
EOF
	exit 0
fi

for f in scripts/netfilter-persistent/60-vpn-firewall scripts/systemd/vpnfw-baseline.service \
	scripts/systemd/nftables.service.d/vpnfw.conf \
	scripts/ppp/vpnfw scripts/networkmanager/90-vpnfw \
	scripts/wireguard/wg0.conf scripts/vpnfw.env scripts/man/vpnfw-hook.8; do
	[ -f "$f" ] || die "$f is missing: run install.sh from a complete vpnfw source tree"
done

if [ -z "$binary" ]; then
	built=$(mktemp -d)
	trap 'rm -rf "$built"' EXIT
	echo "building vpnfw-hook ..."
	build_hook "$built/vpnfw-hook"
	binary=$built/vpnfw-hook
fi
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
	die "$binary is not an executable file"
fi
"$binary" version >/dev/null 2>&1 || die "$binary does not run as vpnfw-hook"

echo "installing vpnfw into ${destdir:-/}:"
install -d -m 0755 "$destdir$bindir"
install -m 0755 "${owner[@]}" "$binary" "$destdir$hook.vpnfw-new"
mv -f "$destdir$hook.vpnfw-new" "$destdir$hook"
echo "  $hook"
put scripts/netfilter-persistent/60-vpn-firewall "$plugin" 0755
put scripts/systemd/vpnfw-baseline.service "$unit" 0644
put scripts/systemd/nftables.service.d/vpnfw.conf "$nftdropin" 0644
put scripts/ppp/vpnfw "$ipup" 0755
put scripts/ppp/vpnfw "$ipdown" 0755
put scripts/man/vpnfw-hook.8 "$man" 0644
put scripts/wireguard/wg0.conf "$examples/wg0.conf" 0644
put scripts/networkmanager/90-vpnfw "$examples/90-vpnfw-networkmanager" 0644
for f in "${openvpn_examples[@]}"; do
	put "openvpn-examples/$f" "$examples/openvpn/$f" 0644
done
if [ "$nm" = yes ]; then
	put scripts/networkmanager/90-vpnfw "$nmscript" 0755
fi
install -d -m 0755 "$destdir$(dirname "$config")"
if [ -e "$destdir$config" ]; then
	echo "  $config exists: kept as it is"
else
	install -m 0600 "${owner[@]}" scripts/vpnfw.env "$destdir$config"
	echo "  $config (commented; nothing set yet)"
fi

if [ "$enable" = yes ]; then
	systemctl daemon-reload
	systemctl enable vpnfw-baseline.service
	echo "  enabled vpnfw-baseline.service: vpnfw arms itself at the next boot"
fi

[ -n "$destdir" ] && exit 0
cat <<EOF

vpnfw is installed; nothing was applied to this machine's firewall. Next:
  1. Configure it: $config
     (VPNFW_SERVERS, and VPNFW_VPN_MARK or VPNFW_VPN_USER; see man vpnfw-hook)
  2. See what it would apply:  $hook --config $config render
     (VPNFW_BACKEND=auto picks nftables where the kernel has it, else
     iptables; render --backend iptables|nftables shows either)
  3. Wire the VPN: OpenVPN's up/route-up/down (README); PPP/PPTP hooks are in
     $(dirname "$ipup"); WireGuard: $examples/wg0.conf;
     NetworkManager: install.sh --networkmanager
  4. Arm it at boot:  systemctl enable vpnfw-baseline.service
     (or netfilter-persistent, which runs $plugin; with nftables.service
     enabled, its drop-in $nftdropin
     arms vpnfw whenever nftables.service starts, reloads or stops)
  5. Arm it now (over SSH only with your network in VPNFW_LAN):
     $hook --config $config baseline
     and look:  $hook --config $config status   (or: nft list table inet vpnfw)
EOF
