package breaker

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestHugeCountsAreNotTruncated: counts beyond uint32 (gobreaker's width)
// mean "practically never", not their low 32 bits: 1<<32 consecutive
// failures must not trip the breaker at the first one, and 1<<32 half-open
// probes must let more than one through.
func TestHugeCountsAreNotTruncated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{ConsecutiveFailures: 1 << 32, FailureRatio: -1, OpenTimeout: time.Second, Jitter: -1})
		defer s.Close()
		b := s.Get("a")
		report(t, b, 3, errors.New("reset"))
		if st := b.State(); st != Closed {
			t.Fatalf("ConsecutiveFailures 1<<32: after 3 failures the breaker is %v, want closed", st)
		}

		s2 := NewSet(Config{ConsecutiveFailures: 1, HalfOpenMaxRequests: 1 << 32, OpenTimeout: time.Second, Jitter: -1})
		defer s2.Close()
		b2 := s2.Get("a")
		report(t, b2, 1, errors.New("reset"))
		time.Sleep(2 * time.Second)
		if _, err := b2.Begin(); err != nil {
			t.Fatalf("first probe: %v", err)
		}
		if _, err := b2.Begin(); err != nil {
			t.Fatalf("HalfOpenMaxRequests 1<<32: the second probe was refused: %v", err)
		}
	})
}
