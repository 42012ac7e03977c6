// Package backoff computes jittered exponential delays. It is shared by the
// discovery watchers (registry errors) and rpcclient (reconnects and retries).
//
// It is a pure function of the attempt number and a random source, so tests
// drive it with a seeded source and testing/synctest. Stateful helpers such as
// cenkalti/backoff do not let a caller ask "what is the delay before attempt
// n" without mutation, which both users here need.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Policy describes an exponential backoff: Base x Factor^n, capped at Max, with
// a jitter applied to the result. The zero Policy never waits.
type Policy struct {
	// Base is the delay before the first retry (attempt 0).
	Base time.Duration
	// Factor multiplies the delay on each attempt; values below 1 mean 1.
	Factor float64
	// Max caps the delay before jitter; 0 means no cap.
	Max time.Duration
	// Jitter is the spread around the capped delay: 0.2 means +-20 %
	// (gRPC's connection backoff). Ignored when Full is set.
	Jitter float64
	// Full selects "full jitter": a uniform delay in [0, capped delay)
	// (Envoy's retry backoff).
	Full bool
}

// Delay returns the delay before retry number attempt (0-based). r supplies
// the randomness; nil uses the global source. Safe from any goroutine if r is.
func (p Policy) Delay(attempt int, r *rand.Rand) time.Duration {
	if p.Base <= 0 {
		return 0
	}
	f := max(p.Factor, 1)
	d := float64(p.Base) * math.Pow(f, float64(max(attempt, 0)))
	if p.Max > 0 && d > float64(p.Max) {
		d = float64(p.Max)
	}
	if d > math.MaxInt64/2 {
		d = math.MaxInt64 / 2
	}
	u := rand.Float64
	if r != nil {
		u = r.Float64
	}
	switch {
	case p.Full:
		d *= u()
	case p.Jitter > 0:
		d *= 1 + p.Jitter*(2*u()-1)
	}
	return time.Duration(d)
}
