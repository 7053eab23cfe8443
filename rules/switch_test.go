package rules_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/vpnfw/vpnfw/rules"
)

// switchFake is one backend's part of a fake kernel; every call is logged
// to the shared journal, so tests can check the order of events across
// backends.
type switchFake struct {
	name      string
	tunnels   []string // nil and !present: holds nothing
	present   bool
	journal   *[]string
	applyErr  error
	disarmErr error
	presence  int // Present calls
}

func (f *switchFake) Name() string { return f.name }
func (f *switchFake) Tunnels(context.Context) ([]string, error) {
	return slices.Clone(f.tunnels), nil
}
func (f *switchFake) Present(context.Context) (bool, error) { f.presence++; return f.present, nil }
func (f *switchFake) Apply(_ context.Context, rs *rules.Ruleset) error {
	*f.journal = append(*f.journal, f.name+" apply "+strings.Join(rs.Tunnels, ","))
	if f.applyErr != nil {
		return f.applyErr
	}
	f.present, f.tunnels = true, slices.Clone(rs.Tunnels)
	return nil
}
func (f *switchFake) Check(context.Context, *rules.Ruleset) error { return nil }
func (f *switchFake) Status(context.Context) (*rules.Status, error) {
	return &rules.Status{Backend: f.name}, nil
}
func (f *switchFake) Disarm(context.Context) error {
	*f.journal = append(*f.journal, f.name+" disarm")
	if f.disarmErr != nil {
		return f.disarmErr
	}
	f.present, f.tunnels = false, nil
	return nil
}

func newSwitch(chosen, other *switchFake) *rules.Switch {
	return &rules.Switch{Chosen: chosen, Others: []func(context.Context) (rules.Backend, error){
		func(context.Context) (rules.Backend, error) { return other, nil },
		// A backend that cannot be opened holds nothing.
		func(context.Context) (rules.Backend, error) { return nil, errors.New("not installed") },
	}}
}

var switchCfg = &rules.Config{TunDevices: []rules.DevicePattern{"tun+"}}

// A switch arms the new backend first, with the tunnels the old one allowed,
// and only then removes the old backend's rules.
func TestSwitchArmsBeforeRetiring(t *testing.T) {
	var journal []string
	nft := &switchFake{name: "nft", journal: &journal}
	ipt := &switchFake{name: "ipt", journal: &journal, present: true, tunnels: []string{"tun0"}}
	s := newSwitch(nft, ipt)
	ctx := context.Background()

	live, err := s.Tunnels(ctx)
	if err != nil || !slices.Equal(live, []string{"tun0"}) {
		t.Fatalf("tunnels before the switch = %v, %v; want the old backend's tun0", live, err)
	}
	if err := s.Apply(ctx, rules.Policy(switchCfg, append(live, "tun1"))); err != nil {
		t.Fatal(err)
	}
	if want := []string{"nft apply tun0,tun1", "ipt disarm"}; !slices.Equal(journal, want) {
		t.Errorf("journal %q, want %q", journal, want)
	}
	if err := s.Check(ctx, rules.Policy(switchCfg, []string{"tun0", "tun1"})); err != nil {
		t.Errorf("check after the switch: %v", err)
	}
}

// If the new backend cannot be armed, the old one keeps its rules.
func TestSwitchKeepsOldRulesWhenApplyFails(t *testing.T) {
	var journal []string
	nft := &switchFake{name: "nft", journal: &journal, applyErr: errors.New("refused")}
	ipt := &switchFake{name: "ipt", journal: &journal, present: true}
	if err := newSwitch(nft, ipt).Apply(context.Background(), rules.Policy(switchCfg, nil)); err == nil {
		t.Fatal("apply succeeded")
	}
	if slices.Contains(journal, "ipt disarm") || !ipt.present {
		t.Errorf("the old backend's rules were removed although the new one is not armed: %q", journal)
	}
}

// up and down on an armed host do not look at the other backend: that read
// would cost the hot path. baseline does.
func TestSwitchHotPathSkipsOthers(t *testing.T) {
	var journal []string
	nft := &switchFake{name: "nft", journal: &journal, present: true}
	ipt := &switchFake{name: "ipt", journal: &journal}
	for _, tunnels := range [][]string{{"tun0"}, nil} {
		if err := newSwitch(nft, ipt).Apply(context.Background(), rules.Policy(switchCfg, tunnels)); err != nil {
			t.Fatal(err)
		}
	}
	if ipt.presence != 0 {
		t.Errorf("up and down on an armed host asked the other backend %d times", ipt.presence)
	}
	s := newSwitch(nft, ipt)
	s.Sweep = true
	if err := s.Apply(context.Background(), rules.Policy(switchCfg, nil)); err != nil {
		t.Fatal(err)
	}
	if ipt.presence != 1 {
		t.Errorf("baseline asked the other backend %d times, want 1", ipt.presence)
	}
}

// Leftovers make check fail and disarm remove them; a failed removal is
// an error that says the host stays closed.
func TestSwitchLeftovers(t *testing.T) {
	var journal []string
	ctx := context.Background()
	nft := &switchFake{name: "nft", journal: &journal, present: true}
	ipt := &switchFake{name: "ipt", journal: &journal, present: true, disarmErr: errors.New("busy")}
	s := newSwitch(nft, ipt)
	s.Sweep = true
	if err := s.Check(ctx, rules.Policy(switchCfg, nil)); err == nil || !strings.Contains(err.Error(), "remain in ipt") {
		t.Errorf("check with leftovers: %v", err)
	}
	err := s.Apply(ctx, rules.Policy(switchCfg, nil))
	if err == nil || !strings.Contains(err.Error(), "stays closed") {
		t.Errorf("apply with a failing removal: %v", err)
	}
	ipt.disarmErr = nil
	if err := s.Disarm(ctx); err != nil {
		t.Fatal(err)
	}
	if nft.present || ipt.present {
		t.Errorf("disarm left rules: nft %v ipt %v", nft.present, ipt.present)
	}
}
