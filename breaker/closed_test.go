package breaker

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/sony/gobreaker/v2"
)

// A success takes no lock, so it can zero the consecutive-failure run
// while a failure holds the window's lock between counting itself and
// asking the trip rule. The rule must judge the run the failure made:
// judging a run reloaded after the success dropped the failure from it,
// a result no serial order gives (failure first: the rule sees the longer
// run and trips; success first: a run of one).
func TestFailureJudgesTheRunItMade(t *testing.T) {
	defer func() { testHookCounted = nil }()
	var c closedCounts
	c.init(int64(10*time.Second), 0)
	trip3 := func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= 3 }
	for range 2 {
		tk, _ := c.begin(1)
		if c.failure(tk, 1, trip3) {
			t.Fatal("tripped on fewer than 3 consecutive failures")
		}
	}
	third, _ := c.begin(1)
	ok, _ := c.begin(1)
	testHookCounted = func() { testHookCounted = nil; c.success(ok) }
	tripped := c.failure(third, 1, trip3)
	if run := c.consec.Load(); !tripped && run != 1 {
		t.Fatalf("a third failure raced by a success: no trip and a run of %d; a serial order trips, or leaves a run of 1", run)
	}
}

// Rolling the window trims the run by the failures of the bucket that ages
// out. A success that zeroes the run between the trim's read and its write
// must stay zeroed.
func TestTrimKeepsASuccessZero(t *testing.T) {
	defer func() { testHookCounted = nil }()
	var c closedCounts
	window := int64(10 * time.Second)
	c.init(window, 0)
	never := func(gobreaker.Counts) bool { return false }
	for range 2 { // bucket 0
		tk, _ := c.begin(1)
		c.failure(tk, 1, never)
	}
	tk, _ := c.begin(c.period) // bucket 1
	c.failure(tk, c.period, never)
	ok, _ := c.begin(c.period)
	if run := c.consec.Load(); run != 3 {
		t.Fatalf("run %d after 3 failures, want 3", run)
	}
	testHookCounted = func() { testHookCounted = nil; c.success(ok) }
	c.roll(int64(len(c.buckets)) * c.period) // bucket 0 ages out: trim
	if testHookCounted != nil {
		t.Fatal("the roll did not trim the run")
	}
	if run := c.consec.Load(); run != 0 {
		t.Fatalf("run %d after a success that raced the trim, want 0", run)
	}
}

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
