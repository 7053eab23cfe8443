module github.com/vpnfw/vpnfw

go 1.23.0

require (
	github.com/coreos/go-iptables v0.8.0
	github.com/google/nftables v0.3.0
	github.com/joho/godotenv v1.5.1
	github.com/mdlayher/netlink v1.7.3-0.20250113171957-fbb4dce95f42
	github.com/rs/zerolog v1.35.1
	golang.org/x/sys v0.29.0
)

require (
	github.com/google/go-cmp v0.6.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/mdlayher/socket v0.5.0 // indirect
	golang.org/x/net v0.33.0 // indirect
	golang.org/x/sync v0.6.0 // indirect
)
