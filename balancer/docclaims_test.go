package balancer

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestSamplingGoesDownToOneIn256 pins Result's doc: a P2C pick is sampled
// every time under light traffic, down to one in 256 (the doc once said
// 64), the rate falling as traffic rises.
func TestSamplingGoesDownToOneIn256(t *testing.T) {
	var s sampling
	s.init()
	if m := s.mask.Load(); m != 0 {
		t.Fatalf("initial mask %d, want 0 (every pick)", m)
	}
	now := int64(1)
	for range 20 {
		now += 1000 // samples 1 µs apart: far more often than the 10 ms per node needed
		s.sampled(now, 3)
	}
	if m := s.mask.Load(); m != 255 {
		t.Fatalf("mask %d under fast traffic, want 255 (one in 256)", m)
	}
}

// TestReadmeDefaultsAreTheCodes checks the defaults the README's balancer
// table and the package doc state against defaultOptions and
// OutlierConfig's defaults (the breaker's are checked in package breaker).
func TestReadmeDefaultsAreTheCodes(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cell := func(option string) string {
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(line, "| `"+option) {
				cells := strings.Split(strings.Trim(line, "|"), " | ")
				if len(cells) > 1 {
					return strings.TrimSpace(cells[1])
				}
			}
		}
		t.Fatalf("README has no table row for %s", option)
		return ""
	}
	o := defaultOptions()
	oc := OutlierConfig{}.withDefaults()
	p, isP2C := o.policy.(p2c)
	for _, c := range []struct {
		option, want string
		ok           bool
	}{
		{"WithPolicy(p)", "`P2C()` (peak-EWMA latency × in-flight: steers away from slow nodes and from nodes whose requests stop coming back)", isP2C},
		{"WithOutlierDetection(OutlierConfig{})", "5 consecutive failures, ejected 30 s × n (cap 300 s) ±15 %, at most 10 % of nodes (at least one)",
			oc.ConsecutiveFailures == 5 && oc.BaseEjection == 30*time.Second && oc.MaxEjection == 300*time.Second &&
				oc.Jitter == 0.15 && oc.MaxEjectedShare == 0.1 && oc.maxEjected(3) == 1 && oc.Interval == time.Second},
		{"WithPanicThreshold(share)", "0.5", o.panicThreshold == 0.5},
		{"WithSlowStart(window, min)", "30 s from 10 %", o.slowStart == 30*time.Second && o.slowStartMin == 0.1},
		{"WithDegradedFactor(f)", "0.5", o.degradedFactor == 0.5},
		{"WithSubset(size)", "0 (every node)", o.subset == 0},
		{"WithLocalZone(zone)`, `WithOverprovision(f)", "none; 1.4", o.zone == "" && o.overprovision == 1.4 && o.zoneMemory == 5*time.Minute},
	} {
		if got := cell(c.option); got != c.want {
			t.Errorf("README row %s: default %q, want %q", c.option, got, c.want)
		}
		if !c.ok {
			t.Errorf("%s: the code's default is not the README's %q", c.option, c.want)
		}
	}
	if !o.breakers {
		t.Error("breakers are off by default; the README says on")
	}
	// P2C's option docs: decay 10 s, failure penalty 250 ms, probe after 2 s.
	if !isP2C || p.tau != 10*time.Second || p.penalty != 250*time.Millisecond || p.probeAfter != 2*time.Second {
		t.Errorf("P2C defaults %+v, documented decay 10 s, penalty 250 ms, probe after 2 s", p)
	}
	// Maglev's doc: loadFactor <= 1 means 1.25.
	if m := Maglev(0).(maglev); m.c != 1.25 {
		t.Errorf("Maglev(0) load factor %v, documented 1.25", m.c)
	}
}
