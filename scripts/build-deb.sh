#!/usr/bin/env bash
# Builds the Debian package of vpnfw with dpkg-deb: the static binary in
# /usr/sbin, the configuration as a conffile, the netfilter-persistent
# plugin, the systemd unit, the PPP hooks and the man page, laid out by
# scripts/install.sh. Its maintainer scripts never apply, flush or disarm
# anything: installing, upgrading or removing vpnfw never opens the host.
# No Depends: the nftables backend (the default where the kernel has
# nf_tables) talks netlink and runs no program. iptables is only for the
# iptables backend (VPNFW_BACKEND=iptables, or auto on a kernel without
# nf_tables): Recommends, so apt installs it unless told not to. nftables
# (the nft program) only shows vpnfw's table: Suggests.
#
#   scripts/build-deb.sh [--binary FILE] [--version VERSION] [--out DIR]
#
# --binary   package this vpnfw-hook instead of building one with Go
# --version  the package version; default 0.0~gitDATE.COMMIT from git
# --out      where the .deb goes; default the current directory
# It prints the path of the .deb. Needs dpkg-deb (dpkg), no root.
set -euo pipefail
here=$(pwd)
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
umask 022

die() {
	echo "build-deb.sh: $*" >&2
	exit 2
}

binary='' version='' out=$here
while [ $# -gt 0 ]; do
	case $1 in
	--binary) binary=${2:?--binary needs a file}; shift ;;
	--version) version=${2:?--version needs a version}; shift ;;
	--out) out=${2:?--out needs a directory}; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is missing (apt-get install dpkg)"

# The commit's time stamps the changelog and the archive: same commit, same .deb.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$epoch}
if [ -z "$version" ]; then
	commit=$(git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
	version="0.0~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).$commit"
fi
case $version in
[0-9]*) ;;
*) die "version $version must start with a digit" ;;
esac
case $version in
*[!A-Za-z0-9.+~-]*) die "version $version: only letters, digits and . + ~ - are allowed" ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$binary" ]; then
	echo "building vpnfw-hook ..." >&2
	find_go
	# Stripped (-s -w) as Debian wants; the build info that version prints stays.
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/vpnfw-hook" ./hook
	binary=$work/vpnfw-hook
	arch=$(go env GOARCH)
else
	arch=$(dpkg --print-architecture 2>/dev/null || go env GOARCH)
fi
case $arch in
386) arch=i386 ;;
arm) arch=armhf ;;
esac

root=$work/root
mkdir -m 0755 "$root"
DESTDIR=$root scripts/install.sh --binary "$binary" --prefix /usr --bindir /usr/sbin --sysconfdir /etc >/dev/null
gzip -9n "$root/usr/share/man/man8/vpnfw-hook.8"
doc=$root/usr/share/doc/vpnfw
sed "s/@YEAR@/$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)/" scripts/debian/copyright >"$doc/copyright"
{
	echo "vpnfw ($version) unstable; urgency=medium"
	echo
	echo "  * Built by scripts/build-deb.sh from commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)."
	echo
	echo " -- vpnfw maintainers <maintainers@vpnfw.example.org>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/copyright" "$doc/changelog.gz"
install -d -m 0755 "$root/usr/share/lintian/overrides"
install -m 0644 scripts/debian/lintian-overrides "$root/usr/share/lintian/overrides/vpnfw"

install -d -m 0755 "$root/DEBIAN"
for s in postinst prerm postrm; do
	install -m 0755 "scripts/debian/$s" "$root/DEBIAN/$s"
done
# Every file under /etc is the administrator's: a conffile, never replaced
# behind their back.
(cd "$root" && find etc -type f | sort | sed 's|^|/|') >"$root/DEBIAN/conffiles"
(cd "$root" && find usr etc lib -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: vpnfw
Version: $version
Architecture: $arch
Maintainer: vpnfw maintainers <maintainers@vpnfw.example.org>
Installed-Size: $size
Recommends: iptables (>= 1.8)
Suggests: nftables, netfilter-persistent, openvpn, ppp, pptp-linux, wireguard-tools
Section: net
Priority: optional
Description: fail-closed firewall for VPN clients
 vpnfw-hook keeps a host from sending or receiving anything outside its VPN.
 At boot it applies the blocked state: only loopback and the VPN client's own
 connection to its configured servers pass. OpenVPN (as its up and down
 script), pppd, wg-quick or NetworkManager call it when the tunnel comes up
 and goes down, and traffic through the tunnel device is allowed while it
 exists. Whatever happens, the VPN dying, the hook crashing, a reboot, the
 host is never less closed than the blocked state.
 .
 It keeps its rules in an nftables table of its own, over netlink, where the
 kernel supports it, and in iptables chains of its own otherwise or on request
 (VPNFW_BACKEND).
 .
 Installing, upgrading or removing this package applies nothing and never
 disarms the firewall; see vpnfw-hook(8).
EOF

mkdir -p "$out"
deb=$out/vpnfw_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
