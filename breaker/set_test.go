package breaker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/rpc"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestRetain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := make(recorder, 16)
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: 10 * time.Second, Jitter: -1}, ev.option())
		defer s.Close()
		a, b, c := s.Get("a"), s.Get("b"), s.Get("c")
		if s.Get("a") != a || s.Len() != 3 {
			t.Fatalf("Get does not return the same breaker")
		}
		t0 := time.Now()
		report(t, a, 1, errTransport)
		report(t, b, 1, errTransport)
		if s.pendingTimers() != 2 {
			t.Fatalf("pending timers %d, want 2", s.pendingTimers())
		}
		synctest.Wait()
		ev.expect(t, Event{"a", Closed, Open, t0}, Event{"b", Closed, Open, t0})

		s.Retain([]string{"b", "c", "d"})
		if s.Len() != 2 || s.Get("b") != b || s.Get("c") != c {
			t.Fatalf("Retain kept the wrong breakers (or created d)")
		}
		if s.pendingTimers() != 1 {
			t.Fatalf("pending timers %d after dropping a, want 1", s.pendingTimers())
		}
		if na := s.Get("a"); na == a || na.State() != Closed {
			t.Fatalf("a breaker for a dropped address was reused")
		}

		time.Sleep(10 * time.Second)
		synctest.Wait()
		ev.expect(t, Event{"b", Open, HalfOpen, t0.Add(10 * time.Second)}) // nothing for the dropped a
		if rawState(a) != Open {
			t.Fatalf("dropped breaker was expired by the timer")
		}
		// The dropped breaker still answers whoever holds it, lazily.
		report(t, a, 1, nil)
		if a.State() != Closed {
			t.Fatalf("dropped breaker state %v, want closed", a.State())
		}
		report(t, a, 1, errTransport) // trips, but schedules nothing
		if s.pendingTimers() != 0 {
			t.Fatalf("a dropped breaker scheduled a timer")
		}
		synctest.Wait()
		ev.expect(t)

		s.Retain(nil)
		if s.Len() != 0 {
			t.Fatalf("Retain(nil) left %d breakers", s.Len())
		}
	})
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := make(recorder, 16)
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: time.Second, Jitter: -1}, ev.option())
		b := s.Get("a")
		report(t, b, 1, errTransport)
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		wg.Wait()
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if s.pendingTimers() != 0 {
			t.Fatalf("timers left after Close")
		}
		s.Retain(nil) // must not touch the discarded timer heap
		// Breakers keep working after Close; open ones expire lazily.
		time.Sleep(time.Second)
		if b.State() != HalfOpen {
			t.Fatalf("state %v after Close and the open period, want half-open", b.State())
		}
		report(t, s.Get("x"), 1, errTransport)
		if s.pendingTimers() != 0 {
			t.Fatalf("a trip after Close scheduled a timer")
		}
	})
}

// TestConcurrent hammers one Set from many goroutines; run it with -race.
// With a 50 us window, the closed-state windows roll (by the clock and by
// the timer goroutine) while outcomes are counted.
func TestConcurrent(t *testing.T) {
	for _, window := range []time.Duration{10 * time.Second, 50 * time.Microsecond} {
		t.Run(window.String(), func(t *testing.T) { hammer(t, window) })
	}
}

func hammer(t *testing.T, window time.Duration) {
	addrs := make([]string, 16)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.0.%d:80", i)
	}
	var s *Set
	var events sync.WaitGroup
	events.Add(1)
	var once sync.Once
	s = NewSet(Config{ConsecutiveFailures: 2, OpenTimeout: 100 * time.Microsecond, MaxOpenTimeout: time.Millisecond, Window: window},
		WithOnStateChange(func(e Event) {
			// Calling back into the Set from the callback must not deadlock.
			_ = s.Get(e.Addr).State()
			once.Do(events.Done)
		}))
	errs := []error{nil, nil, nil, errTransport, context.Canceled, rpc.ServerError("x"), ErrAttemptTimeout}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 2))
			for i := range 3000 {
				if g == 0 && i%100 == 0 {
					s.Retain(addrs[r.IntN(4):])
					continue
				}
				b := s.Get(addrs[r.IntN(len(addrs))])
				done, err := b.Allow()
				if err != nil {
					if !errors.Is(err, ErrOpen) && !errors.Is(err, ErrTooManyRequests) {
						t.Errorf("Allow: %v", err)
					}
					continue
				}
				_ = b.State()
				done(errs[r.IntN(len(errs))])
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan struct{})
	go func() { events.Wait(); close(got) }()
	select {
	case <-got:
	case <-ctx.Done():
		t.Errorf("no state change event delivered")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A Window below 10 ms (Window: 5, meant as seconds) is 10 ms, not a
// bucket period of 0 that divides by zero.
func TestTinyWindowIsClamped(t *testing.T) {
	s := NewSet(Config{Window: 5})
	defer s.Close()
	b := s.Get("a")
	tk, err := b.Begin()
	if err != nil {
		t.Fatal(err)
	}
	b.End(tk, nil)
}

// Events of a breaker that Retain drops are not reported: not those its
// breaker queues afterwards, and not those still queued behind a slow
// callback when Retain returns (the callback would otherwise see a state
// change of an address the caller has already let go of, and, for a
// gauge per address, recreate it after its removal).
func TestRetainDropsQueuedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var got []Event
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: time.Second, Jitter: -1},
			WithOnStateChange(func(e Event) {
				if len(got) == 0 {
					<-release // a slow callback: the next events queue meanwhile
				}
				got = append(got, e)
			}))
		defer s.Close()
		report(t, s.Get("a"), 1, errTransport) // delivered, and held in the callback
		synctest.Wait()
		report(t, s.Get("b"), 1, errTransport) // queued behind it
		s.Retain([]string{"a"})                // b leaves before its event is delivered
		close(release)
		synctest.Wait()
		for _, e := range got {
			if e.Addr == "b" {
				t.Fatalf("event %+v of a breaker dropped by Retain was reported after Retain returned", e)
			}
		}
		if len(got) != 1 {
			t.Fatalf("events %+v, want a's trip only", got)
		}
	})
}
