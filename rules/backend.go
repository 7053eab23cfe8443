package rules

import "context"

// Backend applies rulesets to the kernel. Every method that changes the
// kernel does so in one transaction per address family, and none of them
// leaves the host less closed than the ruleset it was given, except Disarm.
type Backend interface {
	// Name says which backend and flavour is in use, for logs and status.
	Name() string
	// Tunnels reads back the tunnel devices the live ruleset allows; the
	// kernel is the only record of them, so nothing can drift.
	Tunnels(ctx context.Context) ([]string, error)
	// Present reports whether any rule of the project is in the kernel
	// through this backend, armed or not.
	Present(ctx context.Context) (bool, error)
	// Apply makes the live ruleset equal to rs.
	Apply(ctx context.Context, rs *Ruleset) error
	// Check returns nil only if the live ruleset is fail-closed and equal to
	// rs; otherwise an error naming the first difference.
	Check(ctx context.Context, rs *Ruleset) error
	// Status reports what is live, with the counters of every rule.
	Status(ctx context.Context) (*Status, error)
	// Disarm removes every rule of the project and opens the built-in
	// policies: the only way to fail open.
	Disarm(ctx context.Context) error
}

// Status is the live state as a backend reads it back.
type Status struct {
	Backend string    `json:"backend"`
	Armed   bool      `json:"armed"`
	State   State     `json:"state"`
	Tunnels []string  `json:"tunnels"`
	Rules   []Counter `json:"rules"`
}

// Counter is one live rule of the project with its counters.
type Counter struct {
	Family  string `json:"family"`
	Chain   string `json:"chain"`
	Purpose string `json:"purpose"`
	Verdict string `json:"verdict"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// LiveState is the state a backend reads back: disarmed unless every packet
// meets the project's rules, else connected while a tunnel is allowed.
func LiveState(armed bool, tunnels []string) State {
	switch {
	case !armed:
		return Disarmed
	case len(tunnels) > 0:
		return Connected
	}
	return Blocked
}
