package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// lock serialises state changes: two OpenVPN instances calling the hook at
// once must not both read the live tunnels and each drop the other's.
// flock needs only a readable file, and the file is readable by all: an
// OpenVPN running as its own user with CAP_NET_ADMIN calls the hook without
// root, after root created the file at boot. Whoever holds the lock can only
// make other hooks time out and fail, which leaves the host closed.
func lock(path string, timeout time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock %s: %w (run as root, or run vpnfw-hook baseline as root once so it exists)", path, err)
	}
	if os.Geteuid() == 0 {
		// A file left by an older version may be root-only; make it lockable
		// for the VPN client's user again. Failing that changes nothing for root.
		_ = f.Chmod(0o644)
	}
	deadline := time.Now().Add(timeout)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("taking the lock %s: %w; another vpnfw-hook may be stuck", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
