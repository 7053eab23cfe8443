package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vpnfw/vpnfw/rules"
)

// Event is one validated request to change the firewall's state.
type Event struct {
	Command string // baseline, up or down
	Dev     string
	// Server is the VPN server the tunnel runs to, when known; it must be one
	// the configuration allows, or the tunnel is refused.
	Server   netip.Addr
	Endpoint rules.Endpoint // zero when unknown
	// Boot is baseline --boot: a configuration error applies the lockdown.
	Boot bool
}

// usageError is bad input from the command line or environment: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// refusedError is valid input the configuration disagrees with: exit 1,
// since it means the VPN and the firewall were set up differently.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// openvpnProtos maps OpenVPN's proto_1 values to the transport they use.
var openvpnProtos = map[string]rules.Proto{
	"udp": rules.UDP, "udp4": rules.UDP, "udp6": rules.UDP,
	"tcp": rules.TCP, "tcp4": rules.TCP, "tcp6": rules.TCP,
	"tcp-client": rules.TCP, "tcp4-client": rules.TCP, "tcp6-client": rules.TCP,
}

// openVPNEvent turns OpenVPN's script environment into an event. Every
// value is hostile until it parses.
func openVPNEvent(getenv func(string) (string, bool)) (Event, error) {
	scriptType, _ := getenv("script_type")
	var ev Event
	switch scriptType {
	case "up", "route-up":
		ev.Command = "up"
	case "down":
		ev.Command = "down"
	default:
		return ev, usagef("script_type=%q: expected up, route-up or down; configure vpnfw-hook only as OpenVPN's up, route-up and down script", scriptType)
	}
	dev, _ := getenv("dev")
	if err := rules.ValidIfaceName(dev); err != nil {
		return ev, usagef("dev=%q: %v", dev, err)
	}
	ev.Dev = dev

	ip, hasIP := getenv("trusted_ip")
	if ip6, ok := getenv("trusted_ip6"); ok && !hasIP {
		ip, hasIP = ip6, true
	}
	if hasIP {
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Zone() != "" {
			return ev, usagef("trusted_ip=%q: expected an IP address", ip)
		}
		ev.Server = a.Unmap()
	} else if ev.Command == "up" {
		return ev, usagef("OpenVPN passed no trusted_ip for %s; the tunnel's server cannot be checked against VPNFW_SERVERS", scriptType)
	}
	port, hasPort := getenv("trusted_port")
	proto, hasProto := getenv("proto_1")
	if hasPort {
		n, err := rules.ParsePort(port)
		if err != nil {
			return ev, usagef("trusted_port=%q: %v", port, err)
		}
		ev.Endpoint.Port = n
	}
	// proto_1 is validated but not used for the check: it names the first
	// remote's protocol, not necessarily the one OpenVPN fell back to, so
	// only trusted_port (the connection in use) is checked.
	if hasProto {
		if _, ok := openvpnProtos[strings.ToLower(proto)]; !ok {
			return ev, usagef("proto_1=%q: expected one of OpenVPN's protocols (udp, tcp-client, udp4, udp6, tcp4-client, tcp6-client)", proto)
		}
	}
	return ev, nil
}

// validate checks the event against the configuration: a device it may
// allow, and a server and endpoint it knows.
func (ev Event) validate(cfg *rules.Config) error {
	if ev.Command == "baseline" {
		return nil
	}
	if err := rules.ValidIfaceName(ev.Dev); err != nil {
		return usagef("dev: %v", err)
	}
	if !cfg.AllowsDevice(ev.Dev) {
		return usagef("dev %q is not a tunnel device VPNFW_TUN_DEVICES allows (%s)", ev.Dev, patterns(cfg.TunDevices))
	}
	if ev.Command != "up" {
		return nil
	}
	if ev.Server.IsValid() && !cfg.AllowsServer(ev.Server) {
		return &refusedError{fmt.Sprintf("server %s is not in VPNFW_SERVERS; the tunnel is refused because the VPN and the firewall disagree: add the server to the configuration", ev.Server)}
	}
	if ev.Endpoint.Port != 0 && !cfg.AllowsEndpoint(ev.Endpoint) {
		return &refusedError{fmt.Sprintf("server endpoint %s is not in VPNFW_SERVER_PORTS; the tunnel is refused: add it to the configuration", ev.Endpoint)}
	}
	return nil
}

func patterns(ps []rules.DevicePattern) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, " ")
}
