package balancer

import (
	"context"
	"math"
	"testing"
	"time"
)

// WithLogger(nil) keeps the default: a nil logger would crash the first
// ejection's log line, on the balancer's goroutine.
func TestWithLoggerNilKeepsTheDefault(t *testing.T) {
	o := defaultOptions()
	WithLogger(nil)(&o)
	if o.logger == nil {
		t.Fatal("WithLogger(nil) left no logger")
	}
	o.logger.Warn("balancer: the default logger takes this") // would panic on nil
}

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

// Quarantine keeps addr out of picks for d, however long: a d near
// math.MaxInt64 ("until I lift it") wrapped mono() + d negative, and the
// node was not quarantined at all.
func TestHugeQuarantineQuarantines(t *testing.T) {
	as := addrs(2)
	b, _ := newTest(t, as, WithPanicThreshold(0))
	if !b.Quarantine(as[0], math.MaxInt64) {
		t.Fatal("Quarantine: not a current node")
	}
	time.Sleep(20 * time.Millisecond) // the run goroutine rebuilds
	waitFor(t, b, "the quarantine", func(p *picker) bool { return len(p.ready) == 1 })
}

// A slow-start window near math.MaxInt64 ("new nodes stay at their
// starting share") must not wrap the end of the window negative: the run
// goroutine then rebuilt the picker every millisecond for as long as the
// node ramped, that is for ever.
func TestHugeSlowStartWindowDoesNotSpin(t *testing.T) {
	as := addrs(2)
	b, w := newTest(t, as[:1], WithSlowStart(math.MaxInt64, 0.5))
	w.SetAddrs(as...)
	waitFor(t, b, "the second node", func(p *picker) bool { return len(p.ready) == 2 })
	time.Sleep(50 * time.Millisecond)
	b.mu.Lock()
	at := b.wakeAt
	b.mu.Unlock()
	if at < mono()-int64(20*time.Millisecond) {
		t.Fatalf("the run goroutine's next wake-up (%d) is before now (%d): it rebuilds every millisecond", at, mono())
	}
}

// OutlierConfig's Jitter reads as breaker.Config's: zero and NaN mean the
// default, a negative value turns jitter off (it meant the default, so
// ejection times could not be made exact); and an Interval of a
// nanosecond, which kept the run goroutine sweeping, means 10 ms.
func TestOutlierJitterAndIntervalBounds(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{{0, 0.15}, {math.NaN(), 0.15}, {-1, 0}, {-0.5, 0}, {0.3, 0.3}, {5, 1}} {
		if got := (OutlierConfig{Jitter: tc.in}).withDefaults().Jitter; got != tc.want {
			t.Errorf("Jitter %v: %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want time.Duration }{{0, time.Second}, {-1, time.Second}, {1, 10 * time.Millisecond}, {20 * time.Millisecond, 20 * time.Millisecond}} {
		if got := (OutlierConfig{Interval: tc.in}).withDefaults().Interval; got != tc.want {
			t.Errorf("Interval %v: %v, want %v", tc.in, got, tc.want)
		}
	}
	// With jitter off, every first ejection lasts BaseEjection exactly.
	as := addrs(2)
	b, _ := newTest(t, as, WithoutBreakers(), WithPanicThreshold(0),
		WithOutlierDetection(OutlierConfig{ConsecutiveFailures: 1, MaxEjectedShare: 0.5, BaseEjection: time.Minute, Jitter: -1}))
	before := mono()
	r, _ := b.Pick(context.Background(), Exclude(as[1]))
	r.Done(errReset)
	waitFor(t, b, "the ejection", func(p *picker) bool { return len(p.ready) == 1 })
	after := mono()
	b.mu.Lock()
	until := b.nodes[as[0]].ejectedUntil
	b.mu.Unlock()
	if d := time.Duration(until - before); d < time.Minute || d > time.Minute+time.Duration(after-before) {
		t.Fatalf("with Jitter -1 the ejection ends %v after the failure, want 1m", d)
	}
}
