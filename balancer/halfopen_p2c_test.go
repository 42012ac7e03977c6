package balancer

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

// A half-open node must get its probe whatever the policy: with P2C's
// probing off (WithProbeAfter(0), documented as a tuning knob), the node
// still carries the failure penalty that opened its breaker, P2C always
// prefers the other node of every pair, and the probe that would close the
// breaker (and reseed the node) is never sent: the node is out for good.
func TestP2CHalfOpenNodeGetsItsProbeWithoutProbing(t *testing.T) {
	bubble(t, func(t *testing.T) {
		as := addrs(3)
		w := discoverytest.NewAddrs(as...)
		defer w.Close()
		b := New(w, WithPolicy(P2C(WithProbeAfter(0))),
			WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Second, MaxOpenTimeout: time.Second, Jitter: -1}),
			WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
		defer b.Close()
		for len(b.picker.Load().ready) != 3 {
			time.Sleep(time.Millisecond)
		}
		bad := as[0]
		r, err := b.Pick(context.Background(), Exclude(others(as, bad)...))
		if err != nil || r.Endpoint.Addr != bad {
			t.Fatalf("pick %v, %v; want %s", r.Endpoint.Addr, err, bad)
		}
		r.Done(errReset) // opens its breaker
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if st := status(b, bad).Breaker; st != breaker.HalfOpen {
			t.Fatalf("after its open period the breaker is %v, want half-open", st)
		}
		got := 0
		pickBad := func() (Result, bool) {
			for range 1000 {
				r, err := b.Pick(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if r.Endpoint.Addr == bad {
					return r, true
				}
				r.Done(nil)
				time.Sleep(time.Millisecond)
			}
			return Result{}, false
		}
		// The caller gives up on the first probe: it says nothing of the
		// node, and the next probe must follow.
		if r, ok := pickBad(); !ok {
			t.Fatalf("a half-open node got no probe in 1000 picks over 1 s; breaker %v, latency %v",
				status(b, bad).Breaker, status(b, bad).Latency)
		} else {
			r.Done(context.Canceled)
		}
		synctest.Wait()
		for range 1000 {
			r, err := b.Pick(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if r.Endpoint.Addr == bad {
				got++
			}
			r.Done(nil)
			time.Sleep(time.Millisecond)
		}
		if got == 0 {
			t.Fatalf("a half-open node whose first probe was cancelled got no probe in 1000 picks over 1 s; breaker %v, latency %v",
				status(b, bad).Breaker, status(b, bad).Latency)
		}
		if st := status(b, bad).Breaker; st != breaker.Closed {
			t.Fatalf("after a successful probe the breaker is %v", st)
		}
	})
}
