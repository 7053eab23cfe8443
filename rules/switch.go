package rules

import (
	"context"
	"errors"
	"fmt"
)

// Switch is the backend VPNFW_BACKEND picks together with the others, which
// may still hold rules from before the choice changed. The rules of another
// backend are removed only after the chosen one is armed, so a switch never
// leaves the host open, and the tunnels they allowed carry over.
type Switch struct {
	Chosen Backend
	// Others open the other backends; one that cannot be opened (not
	// installed, not supported by the kernel) holds nothing.
	Others []func(context.Context) (Backend, error)
	// Sweep makes every apply look for the others' rules, not only the
	// first apply of the chosen backend: baseline sets it, which is how
	// an administrator clears what a failed switch left behind.
	Sweep bool
	// chosenPresent is what Chosen.Present said before the first change.
	chosenPresent *bool
}

var _ Backend = (*Switch)(nil)

// Name implements Backend.
func (s *Switch) Name() string { return s.Chosen.Name() }

func (s *Switch) present(ctx context.Context) (bool, error) {
	if s.chosenPresent == nil {
		p, err := s.Chosen.Present(ctx)
		if err != nil {
			return false, err
		}
		s.chosenPresent = &p
	}
	return *s.chosenPresent, nil
}

// others returns the other backends that hold rules of the project.
func (s *Switch) others(ctx context.Context) ([]Backend, error) {
	var out []Backend
	for _, open := range s.Others {
		b, err := open(ctx)
		if err != nil {
			continue
		}
		p, err := b.Present(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		if p {
			out = append(out, b)
		}
	}
	return out, nil
}

// Tunnels implements Backend: the chosen backend's, or when it holds nothing
// yet, those of the backend it replaces.
func (s *Switch) Tunnels(ctx context.Context) ([]string, error) {
	p, err := s.present(ctx)
	if err != nil || p {
		if err != nil {
			return nil, err
		}
		return s.Chosen.Tunnels(ctx)
	}
	old, err := s.others(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range old {
		return b.Tunnels(ctx)
	}
	return nil, nil
}

// Present implements Backend.
func (s *Switch) Present(ctx context.Context) (bool, error) {
	if p, err := s.present(ctx); err != nil || p {
		return p, err
	}
	old, err := s.others(ctx)
	return len(old) > 0, err
}

// Apply implements Backend: the chosen backend first, then the others'
// rules removed. Looking for them costs a read of each other backend (for
// iptables, processes), so up and down on an armed host skip it: a switch
// is found at the first apply of the chosen backend, and by baseline.
func (s *Switch) Apply(ctx context.Context, rs *Ruleset) error {
	p, err := s.present(ctx)
	if err != nil {
		return err
	}
	if err := s.Chosen.Apply(ctx, rs); err != nil {
		return err
	}
	t := true
	s.chosenPresent = &t
	if p && !s.Sweep {
		return nil
	}
	return s.retire(ctx)
}

func (s *Switch) retire(ctx context.Context) error {
	old, err := s.others(ctx)
	if err != nil {
		return fmt.Errorf("%s is armed, but looking for rules of vpnfw in another backend failed: %w", s.Chosen.Name(), err)
	}
	var errs []error
	for _, b := range old {
		if err := b.Disarm(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s is armed, but the rules vpnfw left in %s could not be removed (the host stays closed; tunnels may stay blocked by them): %w", s.Chosen.Name(), b.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// Check implements Backend: the chosen backend's check, and no rules of
// the project left in another.
func (s *Switch) Check(ctx context.Context, rs *Ruleset) error {
	if err := s.Chosen.Check(ctx, rs); err != nil {
		return err
	}
	old, err := s.others(ctx)
	if err != nil {
		return err
	}
	for _, b := range old {
		return fmt.Errorf("rules of vpnfw remain in %s, beside %s which VPNFW_BACKEND chooses; run vpnfw-hook baseline to remove them", b.Name(), s.Chosen.Name())
	}
	return nil
}

// Status implements Backend.
func (s *Switch) Status(ctx context.Context) (*Status, error) { return s.Chosen.Status(ctx) }

// Disarm implements Backend: every backend's rules go.
func (s *Switch) Disarm(ctx context.Context) error {
	if err := s.Chosen.Disarm(ctx); err != nil {
		return err
	}
	old, err := s.others(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range old {
		if err := b.Disarm(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b.Name(), err))
		}
	}
	return errors.Join(errs...)
}
