package breaker

import (
	"errors"
	"math"
	"testing"
	"time"
)

// A huge open period ("stay open until I say so": math.MaxInt64) must keep
// a tripped breaker open, not overflow into one already over: the
// jittered period, or the deadline since() + period, wrapped negative and
// the breaker refused nothing.
func TestHugeOpenTimeoutStaysOpen(t *testing.T) {
	for _, cfg := range []Config{
		{OpenTimeout: math.MaxInt64},
		{OpenTimeout: math.MaxInt64, Jitter: -1},
		{OpenTimeout: time.Duration(math.MaxInt64 / 4 * 3)},
	} {
		for _, r := range []float64{0, 0.5, 0.99} {
			s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: cfg.OpenTimeout, Jitter: cfg.Jitter},
				func(o *options) { o.rand = func() float64 { return r } })
			b := s.Get("10.0.0.1:80")
			done, err := b.Allow()
			if err != nil {
				t.Fatal(err)
			}
			done(errors.New("boom"))
			time.Sleep(5 * time.Millisecond)
			if st := b.State(); st != Open {
				t.Errorf("OpenTimeout %v, jitter %v, r %v: state %v 5 ms after the trip; want open", cfg.OpenTimeout, cfg.Jitter, r, st)
			}
			s.Close()
		}
	}
}
