package balancer

import (
	"context"
	"math"
	"testing"
	"time"
)

// An ejection time near math.MaxInt64 ("eject for good") must eject the
// node, not wrap negative on the way (n x BaseEjection, the jitter, or
// now + d) into an ejection that is over before it began.
func TestHugeEjectionTimeEjects(t *testing.T) {
	for _, c := range []OutlierConfig{
		{BaseEjection: math.MaxInt64, MaxEjection: math.MaxInt64},
		{BaseEjection: math.MaxInt64},                                 // capped at the default 300 s
		{BaseEjection: time.Hour, MaxEjection: math.MaxInt64},         // the second ejection overflows no more
		{BaseEjection: math.MaxInt64 / 2, MaxEjection: math.MaxInt64}, // jittered up past MaxInt64
		{Jitter: math.NaN()},                                          // NaN jitter: every ejection time was NaN
	} {
		c.ConsecutiveFailures, c.MaxEjectedShare = 3, 0.5
		if c.Jitter == 0 {
			c.Jitter = 0.15
		}
		for try := range 8 { // the jitter is random: some tries go up
			as := addrs(2)
			b, w := newTest(t, as, WithoutBreakers(), WithPanicThreshold(0), WithOutlierDetection(c))
			for range 3 {
				r, _ := b.Pick(context.Background(), Exclude(as[1]))
				r.Done(errReset)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			for len(b.picker.Load().ready) != 1 && ctx.Err() == nil {
				select {
				case <-b.Updated():
				case <-ctx.Done():
				}
			}
			cancel()
			if n := len(b.picker.Load().ready); n != 1 {
				t.Fatalf("%+v, try %d: %d of 2 nodes ready after 3 failures of one; want it ejected (status %+v)", c, try, n, b.Status())
			}
			b.Close()
			w.Close()
		}
	}
}
