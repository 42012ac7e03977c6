package breaker

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/rpc"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sony/gobreaker/v2"
)

var errTransport = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

func mustAllow(t *testing.T, b *Breaker) func(error) {
	t.Helper()
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow(%s) in state %v: %v", b.Addr(), b.State(), err)
	}
	return done
}

// report sends n requests through b, each ending with err.
func report(t *testing.T, b *Breaker, n int, err error) {
	t.Helper()
	for range n {
		mustAllow(t, b)(err)
	}
}

func rawState(b *Breaker) State { return State(b.state.Load()) }

// recorder collects events; read it after synctest.Wait.
type recorder chan Event

func (r recorder) option() Option { return WithOnStateChange(func(e Event) { r <- e }) }

func (r recorder) expect(t *testing.T, want ...Event) {
	t.Helper()
	for _, w := range want {
		select {
		case e := <-r:
			if e.Addr != w.Addr || e.From != w.From || e.To != w.To || !e.At.Equal(w.At) {
				t.Fatalf("event %+v, want %+v", e, w)
			}
		default:
			t.Fatalf("no event, want %+v", w)
		}
	}
	select {
	case e := <-r:
		t.Fatalf("unexpected event %+v", e)
	default:
	}
}

func TestOpenHalfOpenClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := make(recorder, 16)
		s := NewSet(Config{ConsecutiveFailures: 3, OpenTimeout: 10 * time.Second, Jitter: -1}, ev.option())
		defer s.Close()
		b := s.Get("a")
		if b.Addr() != "a" || b.State() != Closed {
			t.Fatalf("new breaker %q is %v", b.Addr(), b.State())
		}
		t0 := time.Now()
		report(t, b, 2, errTransport)
		if b.State() != Closed {
			t.Fatalf("tripped after 2 failures")
		}
		report(t, b, 1, errTransport)
		if b.State() != Open {
			t.Fatalf("state %v after 3 failures, want open", b.State())
		}
		if _, err := b.Allow(); !errors.Is(err, ErrOpen) || !errors.Is(err, gobreaker.ErrOpenState) {
			t.Fatalf("Allow on open breaker: %v", err)
		}
		synctest.Wait()
		ev.expect(t, Event{"a", Closed, Open, t0})

		time.Sleep(10*time.Second - time.Nanosecond)
		synctest.Wait()
		if rawState(b) != Open || b.State() != Open {
			t.Fatalf("half-open before the open period ended")
		}
		ev.expect(t)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if rawState(b) != HalfOpen {
			t.Fatalf("state %v at the end of the open period, want half-open", rawState(b))
		}
		ev.expect(t, Event{"a", Open, HalfOpen, t0.Add(10 * time.Second)})

		probe := mustAllow(t, b)
		if _, err := b.Allow(); !errors.Is(err, ErrTooManyRequests) || !errors.Is(err, gobreaker.ErrTooManyRequests) {
			t.Fatalf("second half-open Allow: %v, want ErrTooManyRequests", err)
		}
		time.Sleep(time.Second)
		probe(nil)
		if b.State() != Closed {
			t.Fatalf("state %v after a successful probe, want closed", b.State())
		}
		synctest.Wait()
		ev.expect(t, Event{"a", HalfOpen, Closed, t0.Add(11 * time.Second)})
		report(t, b, 2, errTransport)
		if b.State() != Closed {
			t.Fatalf("old failures still counted after closing")
		}
	})
}

func TestHalfOpenWithoutTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: time.Minute, Jitter: -1})
		defer s.Close()
		b := s.Get("a")
		report(t, b, 1, errTransport)
		if s.pendingTimers() != 1 {
			t.Fatalf("pending timers %d, want 1", s.pendingTimers())
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		// Nothing called Allow or State: the Set's timer made the change.
		if rawState(b) != HalfOpen {
			t.Fatalf("state %v a minute after the trip, want half-open", rawState(b))
		}
		if s.pendingTimers() != 0 {
			t.Fatalf("pending timers %d after expiry, want 0", s.pendingTimers())
		}
	})
}

func TestReTripGrowth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := make(recorder, 64)
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: 10 * time.Second, MaxOpenTimeout: 35 * time.Second, Jitter: -1}, ev.option())
		defer s.Close()
		b := s.Get("a")
		now := time.Now()
		report(t, b, 1, errTransport)
		want := []Event{{"a", Closed, Open, now}}
		for _, period := range []time.Duration{10, 20, 30, 35, 35} {
			period *= time.Second
			time.Sleep(period - time.Nanosecond)
			synctest.Wait()
			if rawState(b) != Open {
				t.Fatalf("half-open before %v", period)
			}
			time.Sleep(time.Nanosecond)
			synctest.Wait()
			if rawState(b) != HalfOpen {
				t.Fatalf("not half-open after %v", period)
			}
			now = now.Add(period)
			report(t, b, 1, errTransport) // the probe fails: re-trip
			want = append(want, Event{"a", Open, HalfOpen, now}, Event{"a", HalfOpen, Open, now})
		}
		time.Sleep(35 * time.Second)
		report(t, b, 1, nil) // the probe succeeds: closed, and the count restarts
		now = now.Add(35 * time.Second)
		want = append(want, Event{"a", Open, HalfOpen, now}, Event{"a", HalfOpen, Closed, now})
		report(t, b, 1, errTransport)
		want = append(want, Event{"a", Closed, Open, now})
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if rawState(b) != HalfOpen {
			t.Fatalf("open period after closing is not back to the base")
		}
		want = append(want, Event{"a", Open, HalfOpen, now.Add(10 * time.Second)})
		ev.expect(t, want...)
	})
}

func TestOpenPeriod(t *testing.T) {
	c := Config{OpenTimeout: 30 * time.Second}.withDefaults() // max 300 s, jitter 0.2
	for _, tt := range []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{1, 0.5, 30 * time.Second},
		{1, 0, 24 * time.Second},
		{2, 0.5, 60 * time.Second},
		{10, 0.5, 300 * time.Second},
		{11, 0.5, 300 * time.Second},
		{1 << 40, 0.5, 300 * time.Second},
		{11, 0, 240 * time.Second},
		{11, 0.75, 330 * time.Second},
	} {
		if got := c.openPeriod(tt.n, tt.r); got != tt.want {
			t.Errorf("openPeriod(%d, %v) = %v, want %v", tt.n, tt.r, got, tt.want)
		}
	}
	if got := c.openPeriod(1, 0.999999); got <= 35*time.Second || got >= 36*time.Second {
		t.Errorf("openPeriod(1, ~1) = %v, want just under 36s", got)
	}
	tiny := Config{OpenTimeout: time.Nanosecond, Jitter: 1}.withDefaults()
	if got := tiny.openPeriod(1, 0); got != minOpenPeriod {
		t.Errorf("tiny open period %v, want %v", got, minOpenPeriod)
	}
}

// TestJitterSpreadsFleet trips many breakers at the same instant and checks
// that their half-open times are spread within the jitter bounds, on every
// re-trip up to the cap.
func TestJitterSpreadsFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const nodes = 100
		ev := make(recorder, 4*nodes)
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: 10 * time.Second, MaxOpenTimeout: 20 * time.Second}, ev.option())
		defer s.Close()
		bs := make([]*Breaker, nodes)
		for i := range bs {
			bs[i] = s.Get(string(rune('A' + i)))
		}
		for round, base := range []time.Duration{10, 20, 20} {
			base *= time.Second
			start := time.Now()
			for _, b := range bs {
				report(t, b, 1, errTransport)
			}
			time.Sleep(base * 12 / 10)
			synctest.Wait()
			distinct := map[time.Duration]bool{}
			for range 2 * nodes {
				e := <-ev
				if e.To != HalfOpen {
					continue
				}
				d := e.At.Sub(start)
				if d < base*8/10 || d > base*12/10 {
					t.Fatalf("round %d: half-open after %v, want %v +-20%%", round, d, base)
				}
				distinct[d] = true
			}
			if len(distinct) < nodes/2 {
				t.Fatalf("round %d: only %d distinct half-open times for %d nodes", round, len(distinct), nodes)
			}
			for _, b := range bs {
				if rawState(b) != HalfOpen {
					t.Fatalf("round %d: %s is %v", round, b.Addr(), rawState(b))
				}
			}
		}
	})
}

func TestConsecutiveFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{}) // 5 consecutive failures
		defer s.Close()
		b := s.Get("a")
		report(t, b, 4, errTransport)
		report(t, b, 1, rpc.ServerError("no such method")) // the node answered
		report(t, b, 4, errTransport)
		report(t, b, 3, context.Canceled) // not counted: neither resets nor adds
		if b.State() != Closed {
			t.Fatalf("tripped without 5 consecutive failures")
		}
		report(t, b, 1, errTransport)
		if b.State() != Open {
			t.Fatalf("state %v after 5 consecutive failures, want open", b.State())
		}
	})
}

func TestFailureRatio(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{ConsecutiveFailures: -1}) // ratio 0.5 over >= 20 in 10 s
		defer s.Close()
		b := s.Get("a")
		for i := range 19 {
			err := error(nil)
			if i%2 == 1 {
				err = errTransport
			}
			report(t, b, 1, err)
			report(t, b, 1, context.DeadlineExceeded) // exclusions are not outcomes
		}
		if b.State() != Closed {
			t.Fatalf("tripped below MinRequests")
		}
		report(t, b, 1, errTransport) // 10 of 20
		if b.State() != Open {
			t.Fatalf("state %v at 10 failures of 20, want open", b.State())
		}

		// Outcomes age out of the rolling window.
		c := s.Get("b")
		report(t, c, 10, nil)
		report(t, c, 9, errTransport)
		time.Sleep(10 * time.Second)
		report(t, c, 1, errTransport)
		if c.State() != Closed {
			t.Fatalf("outcomes older than the window were counted")
		}
		report(t, c, 19, errTransport)
		if c.State() != Open {
			t.Fatalf("state %v at 20 failures in the window, want open", c.State())
		}
	})
}

// TestRacedAdmission covers a request that found its breaker half-open,
// and whose admission by gobreaker then met a change of state:
//   - tripped: the probe failed before gobreaker answered, and gobreaker (1 ns
//     timeout) would take the request as the next period's probe, early;
//   - closed and then half-open again: gobreaker answered in the closed
//     state, an answer it does not count as a probe, and taking it for one
//     let a second probe run beside the real one (seen with a 1 ms open
//     period under contention).
//
// Either way the breaker must refuse the request and give gobreaker's slot
// back, and the next probe must go through.
func TestRacedAdmission(t *testing.T) {
	halfOpen := func(t *testing.T) (*Set, *Breaker) {
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: time.Second, MaxOpenTimeout: time.Second, Jitter: -1})
		b := s.Get("a")
		report(t, b, 1, errTransport)
		time.Sleep(time.Second)
		if b.State() != HalfOpen {
			t.Fatalf("state %v, want half-open", b.State())
		}
		return s, b
	}
	hook := func(t *testing.T, h *func(), f func()) {
		*h = f
		t.Cleanup(func() { *h = nil })
	}
	t.Run("tripped", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, b := halfOpen(t)
			defer s.Close()
			hook(t, &beforeAllow, func() {
				beforeAllow = nil
				report(t, b, 1, errTransport) // the probe fails: open again
				time.Sleep(time.Millisecond)
			})
			if _, err := b.Begin(); !errors.Is(err, ErrOpen) {
				t.Fatalf("raced admission: %v, want ErrOpen", err)
			}
			if n := b.cb.Counts(); n.Requests != 1 || n.TotalExclusions != 1 {
				t.Fatalf("gobreaker counts %+v, want the raced request excluded", n)
			}
			time.Sleep(2 * time.Second)
			report(t, b, 1, nil)
			if b.State() != Closed {
				t.Fatalf("state %v after the probe, want closed", b.State())
			}
		})
	})
	t.Run("closed, tripped and half-open again", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, b := halfOpen(t)
			defer s.Close()
			hook(t, &beforeAllow, func() {
				beforeAllow = nil
				report(t, b, 1, nil) // the probe succeeds: closed
				hook(t, &afterAllow, func() {
					afterAllow = nil
					report(t, b, 1, errTransport) // tripped
					time.Sleep(time.Second)       // and half-open again
					if b.State() != HalfOpen {
						t.Fatalf("state %v, want half-open", b.State())
					}
				})
			})
			tk, err := b.Begin()
			if err == nil {
				b.End(tk, nil)
				t.Fatalf("a request gobreaker admitted in the closed state was taken for a probe (ticket %+v)", tk)
			}
			if !errors.Is(err, ErrTooManyRequests) {
				t.Fatalf("raced admission: %v, want ErrTooManyRequests", err)
			}
			probe := mustAllow(t, b) // the real probe
			if tk, err := b.Begin(); err == nil {
				t.Fatalf("a second probe was admitted (ticket %+v)", tk)
			}
			probe(nil)
			if b.State() != Closed {
				t.Fatalf("state %v after the probe, want closed", b.State())
			}
		})
	})
}

// TestLateDoneIgnored: outcomes of requests admitted before a trip do not
// count after it.
func TestLateDoneIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: time.Second, Jitter: -1})
		defer s.Close()
		b := s.Get("a")
		late := mustAllow(t, b)
		report(t, b, 1, errTransport)
		time.Sleep(time.Second)
		if b.State() != HalfOpen {
			t.Fatalf("state %v, want half-open", b.State())
		}
		late(errTransport)
		if b.State() != HalfOpen {
			t.Fatalf("a late failure from before the trip re-opened the breaker")
		}
	})
}

// TestTripsLikeGobreaker feeds the same random outcome sequences, with time
// passing, to a Breaker and to a bare gobreaker with the same rules, and
// checks that both trip at the same request. Up to four requests are in
// flight at once and end in random order (gobreaker files an outcome in the
// bucket of the request's start); after each trip, outcomes of requests
// admitted before it arrive (both must ignore them), then a probe closes both
// and the sequence goes on, so later generations, whose buckets count from
// the close, are compared too. The test waits after each sleep for the
// Set's timer goroutine, which rolls the window at bucket boundaries, so
// that it is never late (see closed.go for what lateness means).
func TestTripsLikeGobreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{MinRequests: 10, OpenTimeout: time.Second, Jitter: -1})
		defer s.Close()
		type pair struct{ ours, theirs func(error) }
		trips, outcomes := 0, 0
		for seed := range uint64(300) {
			r := rand.New(rand.NewPCG(seed, 1))
			b := s.Get(string(rune(seed)))
			bare := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
				Interval:     10 * time.Second,
				BucketPeriod: time.Second,
				Timeout:      time.Second,
				ReadyToTrip: func(c gobreaker.Counts) bool {
					total := c.TotalSuccesses + c.TotalFailures
					return c.ConsecutiveFailures >= 5 || (total >= 10 && 2*c.TotalFailures >= total)
				},
				IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
			})
			failP := r.Float64()
			outcome := func() error {
				switch x := r.Float64(); {
				case x < 0.1:
					return context.Canceled
				case x < 0.1+0.9*failP:
					return errTransport
				}
				return nil
			}
			var pending []pair
			for step := range 3000 {
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(1500)) * time.Millisecond)
					// Let the Set's timer goroutine roll the windows it
					// owns at a boundary reached by this sleep.
					synctest.Wait()
				}
				if len(pending) < 4 && (len(pending) == 0 || r.IntN(2) == 0) {
					theirs, gerr := bare.Allow()
					if gerr != nil {
						t.Fatalf("seed %d step %d: bare gobreaker refused: %v", seed, step, gerr)
					}
					pending = append(pending, pair{mustAllow(t, b), theirs})
					continue
				}
				k := r.IntN(len(pending))
				p := pending[k]
				pending = append(pending[:k], pending[k+1:]...)
				err := outcome()
				p.ours(err)
				p.theirs(err)
				outcomes++
				oursOpen, theirsOpen := b.State() == Open, bare.State() == gobreaker.StateOpen
				if oursOpen != theirsOpen {
					t.Fatalf("seed %d step %d: ours open %v, gobreaker open %v", seed, step, oursOpen, theirsOpen)
				}
				if !oursOpen {
					continue
				}
				trips++
				for _, p := range pending { // admitted before the trip: ignored by both
					err := outcome()
					p.ours(err)
					p.theirs(err)
				}
				pending = pending[:0]
				if b.State() != Open || bare.State() != gobreaker.StateOpen {
					t.Fatalf("seed %d step %d: outcomes from before the trip changed the state", seed, step)
				}
				time.Sleep(time.Second + time.Millisecond)
				report(t, b, 1, nil)
				theirs, gerr := bare.Allow()
				if gerr != nil {
					t.Fatalf("seed %d step %d: bare gobreaker refused the probe: %v", seed, step, gerr)
				}
				theirs(nil)
				if b.State() != Closed || bare.State() != gobreaker.StateClosed {
					t.Fatalf("seed %d step %d: after the probe ours %v, gobreaker %v", seed, step, b.State(), bare.State())
				}
			}
			for _, p := range pending {
				p.ours(nil)
				p.theirs(nil)
			}
		}
		t.Logf("%d trips over 300 sequences, %d outcomes compared", trips, outcomes)
		if trips < 300 {
			t.Fatalf("only %d trips over 300 sequences", trips)
		}
	})
}

// TestAgedOutFailureAsksTheTripRule: a failure whose request began more
// than Window ago is counted by neither breaker, but gobreaker still asks
// ReadyToTrip with its current counts, and trips when successes brought them
// to the rule since the last failure; ours must trip at the same request.
// A failure from an earlier generation (before the breaker last closed) is
// dropped by gobreaker without asking, and must not trip ours either.
func TestAgedOutFailureAsksTheTripRule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4, Window: 10 * time.Second,
			OpenTimeout: time.Second, Jitter: -1})
		defer s.Close()
		b := s.Get("a")
		bare := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Interval: 10 * time.Second, BucketPeriod: time.Second, Timeout: time.Second,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				total := c.TotalSuccesses + c.TotalFailures
				return total >= 4 && 2*c.TotalFailures >= total
			},
		})
		both := func() (ours, theirs func(error)) {
			theirs, err := bare.Allow()
			if err != nil {
				t.Fatalf("bare gobreaker refused: %v", err)
			}
			return mustAllow(t, b), theirs
		}
		// Two failures, then two successes: the counts reach the ratio
		// rule (2 of 4), but no failure came after them to ask it.
		failThenSucceed := func() {
			for _, err := range []error{errTransport, errTransport, nil, nil} {
				ours, theirs := both()
				ours(err)
				theirs(err)
			}
			if b.State() != Closed || bare.State() != gobreaker.StateClosed {
				t.Fatalf("tripped before the stale failure: ours %v, gobreaker %v", b.State(), bare.State())
			}
		}
		check := func(what string, wantOpen bool) {
			t.Helper()
			ours, theirs := b.State() == Open, bare.State() == gobreaker.StateOpen
			if ours != theirs || ours != wantOpen {
				t.Fatalf("%s: ours open %v, gobreaker open %v, want %v", what, ours, theirs, wantOpen)
			}
		}

		long, longBare := both() // begins at 0 s, fails at 11 s, its bucket gone
		time.Sleep(6 * time.Second)
		synctest.Wait()
		failThenSucceed()
		prev, prevBare := both() // begins at 6 s, fails after the breakers closed again
		time.Sleep(5 * time.Second)
		synctest.Wait()
		long(errTransport)
		longBare(errTransport)
		check("a failure too old to count, with the counts at the rule", true)

		time.Sleep(time.Second + time.Millisecond)
		ours, theirs := both() // the half-open probe
		ours(nil)
		theirs(nil)
		check("after the probe", false)
		failThenSucceed()
		prev(errTransport)
		prevBare(errTransport)
		check("a failure from before the breaker closed", false)
	})
}

// TestRollsOnlyWindowsInUse: the Set's timer goroutine rolls a closed
// breaker's window while requests arrive, and stops once a whole bucket
// passed without one; the next request re-arms it.
func TestRollsOnlyWindowsInUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{Window: 10 * time.Second})
		defer s.Close()
		b := s.Get("a")
		if n := s.pendingTimers(); n != 0 {
			t.Fatalf("%d deadlines before any request, want 0", n)
		}
		for range 5 { // one request every half bucket: kept rolling
			report(t, b, 1, nil)
			time.Sleep(500 * time.Millisecond)
			synctest.Wait()
			if n := s.pendingTimers(); n != 1 {
				t.Fatalf("%d deadlines while in use, want 1", n)
			}
		}
		if age := b.closed.age.Load(); age != 2 {
			t.Fatalf("window at bucket %d after 2.5 s, want 2", age)
		}
		time.Sleep(3 * time.Second) // idle: at most one more roll, then none
		synctest.Wait()
		if n := s.pendingTimers(); n != 0 {
			t.Fatalf("%d deadlines after 3 idle seconds, want 0", n)
		}
		report(t, b, 1, nil) // re-armed, and rolled by the clock first
		if n, age := s.pendingTimers(), b.closed.age.Load(); n != 1 || age != 5 {
			t.Fatalf("after a new request: %d deadlines at bucket %d, want 1 at 5", n, age)
		}
	})
}

// TestRollsByClockAfterClose: once the Set is closed (or the breaker
// dropped), nothing rolls the window on time, so Begin rolls it by the
// clock; outcomes still land in the right bucket.
func TestRollsByClockAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{Window: 10 * time.Second})
		b := s.Get("a")
		report(t, b, 1, nil) // armed
		s.Close()
		time.Sleep(2500 * time.Millisecond)
		report(t, b, 1, nil)
		if age := b.closed.age.Load(); age != 2 {
			t.Fatalf("window at bucket %d 2.5 s after the first request, want 2", age)
		}
		d := s.Get("b") // Get still works after Close
		report(t, d, 1, nil)
		s.Retain(nil)
		time.Sleep(1500 * time.Millisecond)
		report(t, d, 1, nil)
		if age := d.closed.age.Load(); age != 1 {
			t.Fatalf("dropped breaker's window at bucket %d after 1.5 s, want 1", age)
		}
	})
}

// Closed-state tickets of one bucket share a key; a later bucket, a
// half-open probe and the zero Ticket do not.
func TestTicketKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSet(Config{ConsecutiveFailures: 1, Window: 10 * time.Second, OpenTimeout: time.Minute, Jitter: -1})
		defer s.Close()
		b := s.Get("a")
		begin := func() Ticket {
			t.Helper()
			tk, err := b.Begin()
			if err != nil {
				t.Fatal(err)
			}
			return tk
		}
		t1, t2 := begin(), begin()
		k1, ok1 := t1.Key()
		k2, ok2 := t2.Key()
		if !ok1 || !ok2 || k1 != k2 {
			t.Fatalf("two tickets of one bucket: keys %x,%v and %x,%v; want one shared key", k1, ok1, k2, ok2)
		}
		b.End(t1, nil)
		b.End(t2, nil)
		time.Sleep(time.Second) // one bucket later
		synctest.Wait()
		t3 := begin()
		if k3, ok := t3.Key(); !ok || k3 == k1 {
			t.Fatalf("ticket of the next bucket: key %x,%v; want a new key (the first was %x)", k3, ok, k1)
		}
		if _, ok := (Ticket{}).Key(); ok {
			t.Fatal("the zero Ticket has a key")
		}
		b.End(t3, errTransport) // trips
		time.Sleep(time.Minute)
		synctest.Wait()
		if rawState(b) != HalfOpen {
			t.Fatalf("state %v, want half-open", rawState(b))
		}
		probe := begin()
		if _, ok := probe.Key(); ok {
			t.Fatal("a half-open probe's ticket has a key; probes must not share a Done")
		}
		b.End(probe, nil)
		if b.State() != Closed {
			t.Fatalf("state %v after the probe succeeded, want closed", b.State())
		}
	})
}

// TestOneProbeAtATimeUnderContention: eight goroutines hammer a breaker that
// trips on every failure and stays open 1 ms, a third of their requests
// failing, and count the probes out at once: never more than
// HalfOpenMaxRequests (1). Before admit compared the transitions around
// gobreaker's answer, 2 runs of 8 (1 s each, without -race) saw two
// (TestRacedAdmission has the interleaving, deterministically).
// Bounded by 1 s and 2,000,000 requests per goroutine.
func TestOneProbeAtATimeUnderContention(t *testing.T) {
	s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: time.Millisecond, MaxOpenTimeout: time.Millisecond, Jitter: -1})
	defer s.Close()
	b := s.Get("a")
	var out, most, probes atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for g := range 8 {
		wg.Go(func() {
			for i := 0; i < 2_000_000 && time.Now().Before(deadline); i++ {
				tk, err := b.Begin()
				if err != nil {
					_ = b.State() // refused: look again, as a caller would
					continue
				}
				var outcome error
				if (i+g)%3 == 0 {
					outcome = errTransport
				}
				if tk.probe != nil {
					probes.Add(1)
					n := out.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					for range 200 { // a little work while the probe is out
						_ = b.State()
					}
					out.Add(-1)
				}
				b.End(tk, outcome)
			}
		})
	}
	wg.Wait()
	if probes.Load() == 0 {
		t.Fatal("no probe ran: the breaker never turned half-open")
	}
	if m := most.Load(); m > 1 {
		t.Fatalf("%d probes out at once (of %d), want at most 1", m, probes.Load())
	}
}

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
