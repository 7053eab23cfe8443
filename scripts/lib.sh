# shellcheck shell=bash
# Helpers shared by the scripts in scripts/. Source it; it runs nothing itself.

STARTED_PIDS=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "run as root: sudo $0 (it works only inside network namespaces it creates)" >&2
		exit 2
	fi
}

# Tools live in sbin, which a user's PATH may lack.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

# install_missing CMD:PACKAGE...: apt-get installs the packages whose command
# is missing (as root; otherwise it says what is missing and goes on).
install_missing() {
	local pkgs=() spec
	for spec in "$@"; do
		command -v "${spec%%:*}" >/dev/null 2>&1 || pkgs+=("${spec#*:}")
	done
	[ ${#pkgs[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "missing ${pkgs[*]}: run as root (sudo $0) to install them" >&2
		return 0
	fi
	echo "installing ${pkgs[*]} ..."
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

# find_go puts Go on PATH: sudo's secure_path leaves out /usr/local/go/bin.
find_go() {
	command -v go >/dev/null 2>&1 && return 0
	local d
	for d in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin" /snap/bin; do
		if [ -x "$d/go" ]; then
			PATH=$d:$PATH
			return 0
		fi
	done
	echo "Go is not installed: install it (https://go.dev/doc/install or apt-get install golang) and run again" >&2
	exit 2
}

# build_hook OUT: builds the static binary.
build_hook() {
	find_go
	CGO_ENABLED=0 go build -o "$1" ./hook
}

# guard_netns NAME: refuses to go on unless NAME is a namespace other than
# this machine's own, so nothing here can firewall the host.
guard_netns() {
	local ns self init
	ns=$(stat -L -c %i "/run/netns/$1") || { echo "no namespace $1" >&2; exit 1; }
	self=$(stat -L -c %i /proc/self/ns/net)
	init=$(stat -L -c %i /proc/1/ns/net 2>/dev/null || echo "$self")
	if [ "$ns" = "$self" ] || [ "$ns" = "$init" ]; then
		echo "refusing: namespace $1 is this machine's own network namespace" >&2
		exit 1
	fi
}

# start_bg CMD...: starts a background process and remembers its PID.
start_bg() {
	"$@" >/dev/null 2>&1 &
	STARTED_PIDS+=($!)
}

# kill_started: ends the processes start_bg started, and only those.
kill_started() {
	local pid
	for pid in "${STARTED_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${STARTED_PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	STARTED_PIDS=()
}
