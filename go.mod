module github.com/vpnfw/vpnfw

go 1.23.0

require (
	github.com/coreos/go-iptables v0.8.0
	github.com/joho/godotenv v1.5.1
	github.com/rs/zerolog v1.35.1
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	golang.org/x/sys v0.29.0 // indirect
)
