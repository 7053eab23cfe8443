package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// lock serialises state changes: two OpenVPN instances calling the hook at
// once must not both read the live tunnels and each drop the other's.
func lock(path string, timeout time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the lock %s: %w (run as root)", path, err)
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
