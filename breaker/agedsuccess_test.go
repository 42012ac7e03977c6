package breaker

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/sony/gobreaker/v2"
)

// TestAgedOutSuccessOnAnIdleWindow: a success whose request began more
// than Window ago is dropped by gobreaker, and the failure run it would
// have ended goes on. Ours must not count it either when the window has
// gone quiet: the Set's timer stopped rolling it a bucket after the last
// request began, so the success's bucket, long aged out, was never
// cleared, and the success ended the run: the breaker tripped four
// failures after gobreaker.
func TestAgedOutSuccessOnAnIdleWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{ConsecutiveFailures: 5, FailureRatio: -1, Window: 10 * time.Second,
			OpenTimeout: time.Second, Jitter: -1})
		defer s.Close()
		b := s.Get("a")
		bare := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Interval: 10 * time.Second, BucketPeriod: time.Second, Timeout: time.Second,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 5 },
		})
		both := func() (ours, theirs func(error)) {
			theirs, err := bare.Allow()
			if err != nil {
				t.Fatalf("bare gobreaker refused: %v", err)
			}
			return mustAllow(t, b), theirs
		}
		check := func(what string) {
			t.Helper()
			ours, theirs := b.State() == Open, bare.State() == gobreaker.StateOpen
			if ours != theirs {
				t.Fatalf("%s: ours open %v, gobreaker open %v", what, ours, theirs)
			}
		}

		time.Sleep(500 * time.Millisecond)
		long, longBare := both() // begins at 0.5 s (bucket 0), succeeds at 10.7 s
		time.Sleep(3 * time.Second)
		synctest.Wait()
		for range 4 { // a run of four failures at 3.5 s
			ours, theirs := both()
			ours(errTransport)
			theirs(errTransport)
		}
		check("four failures")
		time.Sleep(7200 * time.Millisecond) // quiet: no request begins until 10.7 s
		synctest.Wait()
		long(nil) // its bucket aged out at 10 s
		longBare(nil)
		ours, theirs := both()
		ours(errTransport)
		theirs(errTransport)
		check("the fifth failure of the run, after a success too old to count")
	})
}
