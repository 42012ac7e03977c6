package breaker

import (
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"
)

// TestHugeWindowIsCapped: a Window meant as "for ever" (the largest
// Duration) must give a working breaker, as a huge OpenTimeout does, not a
// panic on the first Get.
func TestHugeWindowIsCapped(t *testing.T) {
	synctest.Test(t, testHugeWindow)
}

func testHugeWindow(t *testing.T) {
	for _, w := range []time.Duration{math.MaxInt64, math.MaxInt64 - 5, math.MaxInt64 / 10 * 9} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("Window %v: Get panicked: %v", w, r)
				}
			}()
			s := NewSet(Config{Window: w, ConsecutiveFailures: 2, OpenTimeout: time.Millisecond, Jitter: -1})
			defer s.Close()
			b := s.Get("a")
			report(t, b, 2, errors.New("reset"))
			if st := b.State(); st != Open {
				t.Fatalf("Window %v: after 2 failures the breaker is %v, want open", w, st)
			}
			time.Sleep(5 * time.Millisecond)
			report(t, b, 1, nil) // the probe, through gobreaker
			if st := b.State(); st != Closed {
				t.Fatalf("Window %v: after the probe the breaker is %v, want closed", w, st)
			}
		}()
	}
}
