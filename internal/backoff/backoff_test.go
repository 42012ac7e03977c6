package backoff

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestDelayBoundsAndGrowth(t *testing.T) {
	p := Policy{Base: time.Second, Factor: 1.6, Max: 120 * time.Second, Jitter: 0.2}
	r := rand.New(rand.NewPCG(1, 2))
	want := float64(time.Second)
	for n := range 20 {
		if want > float64(120*time.Second) {
			want = float64(120 * time.Second)
		}
		for range 200 {
			d := p.Delay(n, r)
			if float64(d) < 0.8*want-1 || float64(d) > 1.2*want+1 {
				t.Fatalf("attempt %d: delay %v outside %v +-20%%", n, d, time.Duration(want))
			}
		}
		want *= 1.6
	}
}

// The +-20 % jitter spreads both ways around the delay: below it as often
// as above, and reaching near both ends (mutation review: a jitter of
// 1 + J*u, only upward, passed TestDelayBoundsAndGrowth).
func TestJitterSpreadsBothWays(t *testing.T) {
	p := Policy{Base: time.Second, Factor: 1.6, Max: 120 * time.Second, Jitter: 0.2}
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 3, 30} { // 30: at the cap
		want := min(float64(time.Second)*math.Pow(1.6, float64(n)), float64(120*time.Second))
		var below, above int
		lo, hi := math.Inf(1), math.Inf(-1)
		for range 1000 {
			d := float64(p.Delay(n, r)) / want
			lo, hi = min(lo, d), max(hi, d)
			if d < 1 {
				below++
			} else {
				above++
			}
		}
		if below < 400 || above < 400 || lo > 0.82 || hi < 1.18 {
			t.Fatalf("attempt %d: %d delays below %v, %d above, spread x%.3f..x%.3f; want about half each way over x0.8..x1.2",
				n, below, time.Duration(want), above, lo, hi)
		}
	}
}

func TestFullJitterSpreads(t *testing.T) {
	p := Policy{Base: 25 * time.Millisecond, Factor: 2, Max: 250 * time.Millisecond, Full: true}
	r := rand.New(rand.NewPCG(3, 4))
	var lo, hi int
	for range 1000 {
		d := p.Delay(10, r)
		if d < 0 || d >= 250*time.Millisecond {
			t.Fatalf("full jitter delay %v outside [0, 250ms)", d)
		}
		if d < 125*time.Millisecond {
			lo++
		} else {
			hi++
		}
	}
	if lo < 400 || hi < 400 {
		t.Fatalf("full jitter not uniform: %d below half, %d above", lo, hi)
	}
}

func TestZeroPolicyAndHugeAttempt(t *testing.T) {
	if d := (Policy{}).Delay(5, nil); d != 0 {
		t.Fatalf("zero policy waited %v", d)
	}
	p := Policy{Base: time.Second, Factor: 10}
	if d := p.Delay(1000, nil); d <= 0 {
		t.Fatalf("uncapped huge attempt overflowed to %v", d)
	}
}
