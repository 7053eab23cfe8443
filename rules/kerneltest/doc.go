// Package kerneltest holds the kernel tests of vpnfw-hook: the real binary
// drives the real backends (both iptables flavours, and the nftables table)
// inside network namespaces the tests create, and real packets show what the
// firewall lets through. The tests need root; without it they skip, except
// under CI, where they fail.
//
// Run them with scripts/test.sh, which installs what they need.
package kerneltest
