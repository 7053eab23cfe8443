#!/usr/bin/env bash
# Runs every test of vpnfw: gofmt, go vet, shellcheck and go test, including
# the kernel tests, which need root and create network namespaces of their
# own (they never touch this machine's own firewall), the integration
# tests of what vpnfw installs (scripts/test-integration.sh) and the
# end-to-end leak test with a real OpenVPN (scripts/leaktest.sh):
#
#   sudo scripts/test.sh
#
# As root on Debian/Ubuntu it first installs what the tests need with
# apt-get. Without root the kernel tests skip, except with CI set, where
# they fail: CI runs this as root. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
find_go
# The kernel tests: both backends; nft (Debian package nftables) only
# inspects and stages rulesets: vpnfw itself talks netlink and runs no nft.
install_missing ip:iproute2 iptables-legacy:iptables iptables-nft:iptables nft:nftables run-parts:debianutils \
	ping:iputils-ping shellcheck:shellcheck
# scripts/test-integration.sh: the unit, the man page and the Debian package.
install_missing systemd-analyze:systemd groff:groff-base dpkg-deb:dpkg lintian:lintian
# scripts/leaktest.sh: the end-to-end leak lab with a real OpenVPN, on both
# backends.
# shellcheck source=scripts/lab.sh
. scripts/lab.sh
# shellcheck disable=SC2046 # one word per package
install_missing $(lab_packages) tcpdump:tcpdump
have() { command -v "$1" >/dev/null 2>&1; }

# The binary ships static; test what ships.
export CGO_ENABLED=0

echo "== $(go version)"

echo "== gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "not gofmt-formatted (run gofmt -w):" >&2
	echo "$unformatted" >&2
	exit 1
fi

echo "== go vet"
go vet ./...

echo "== shellcheck"
scripts=()
while IFS= read -r -d '' f; do
	if head -n 1 "$f" | grep -qE '^#!.*(ba|da)?sh' || [[ $f == *.sh ]]; then
		scripts+=("$f")
	fi
done < <(find scripts .ci -type f -print0 2>/dev/null)
if have shellcheck; then
	shellcheck -x "${scripts[@]}"
	echo "${#scripts[@]} scripts clean"
elif [ -n "${CI:-}" ]; then
	echo "shellcheck is missing under CI" >&2
	exit 1
else
	echo "shellcheck is missing: skipped"
fi

echo "== go test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
go test -count=1 -timeout 10m -v ./... 2>&1 | tee "$log" || status=$?
passed=$(grep -cE '^ *--- PASS' "$log" || true)
failed=$(grep -cE '^ *--- FAIL' "$log" || true)
skipped=$(grep -cE '^ *--- SKIP' "$log" || true)

echo "== integration (scripts/test-integration.sh)"
ilog=$(mktemp)
trap 'rm -f "$log" "$ilog"' EXIT
bash scripts/test-integration.sh 2>&1 | tee "$ilog" || status=1
counts=$(sed -n 's/^integration: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' "$ilog")
read -r i_passed i_failed i_skipped <<<"${counts:-0 1 0}"
passed=$((passed + i_passed))
failed=$((failed + i_failed))
skipped=$((skipped + i_skipped))

echo "== leak test (scripts/leaktest.sh)"
if [ "$(id -u)" = 0 ]; then
	llog=$(mktemp)
	bash scripts/leaktest.sh 2>&1 | tee "$llog" || status=1
	counts=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$llog" | tail -n 1)
	rm -f "$llog"
	read -r l_passed l_failed <<<"${counts:-0 1}"
	passed=$((passed + l_passed))
	failed=$((failed + l_failed))
elif [ -n "${CI:-}" ]; then
	echo "the leak test needs root, and CI is set: CI must run this as root" >&2
	status=1
	failed=$((failed + 1))
else
	echo "the leak test needs root (network namespaces, OpenVPN): skipped; run sudo scripts/test.sh"
	skipped=$((skipped + 1))
fi
if [ "$skipped" -gt 0 ]; then
	# Each skipped test with the last line it logged (the reason): with -v,
	# a test's log lines follow its === RUN or === CONT line.
	echo "skipped:"
	awk '/^=== (RUN|CONT|NAME) / {cur = $3; next}
		/^ +[A-Za-z0-9_]+\.go:[0-9]+: / {sub(/^ +/, ""); msg[cur] = $0; next}
		/^ *--- SKIP: / {print "  " $3 ": " ($3 in msg ? msg[$3] : "(no reason logged)")}' "$log"
fi
if [ "$status" -ne 0 ]; then
	echo "failed:"
	grep -E '^ *--- FAIL|^FAIL|^panic' "$log" | sed 's/^/  /' || true
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
