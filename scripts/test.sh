#!/usr/bin/env bash
# Runs every test of vpnfw: gofmt, go vet, shellcheck and go test, including
# the kernel tests, which need root and create network namespaces of their
# own (they never touch this machine's own firewall):
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
install_missing ip:iproute2 iptables-legacy:iptables iptables-nft:iptables shellcheck:shellcheck
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
if [ "$skipped" -gt 0 ]; then
	echo "skipped:"
	grep -E -A1 '^ *--- SKIP' "$log" | grep -vE '^--$' | sed 's/^/  /'
fi
if [ "$status" -ne 0 ]; then
	echo "failed:"
	grep -E '^ *--- FAIL|^FAIL|^panic' "$log" | sed 's/^/  /' || true
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
