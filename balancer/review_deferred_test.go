package balancer

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

// A node whose ejection the cap refused, and whose breaker then kept it
// out of traffic, must not be ejected later, when another node's ejection
// ends, for the same failures: they are stale (it has had no request
// since), its breaker already dealt with them, and the ejection would keep
// it out past its breaker's half-open time, for as long again.
func TestCappedEjectionIsNotDeferredOntoStaleFailures(t *testing.T) {
	bubble(t, func(t *testing.T) {
		as := addrs(3)
		w := discoverytest.NewAddrs(as...)
		defer w.Close()
		b := New(w, WithPolicy(RoundRobin()), WithPanicThreshold(0),
			WithBreakers(breaker.Config{ConsecutiveFailures: 3, OpenTimeout: 12 * time.Second, Jitter: -1}),
			WithOutlierDetection(OutlierConfig{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second,
				Jitter: 0.0001, MaxEjectedShare: 0.1})) // one node of 3 at once
		defer b.Close()
		synctest.Wait()
		fail := func(addr string) {
			for range 3 {
				r, err := b.Pick(context.Background(), Exclude(others(as, addr)...))
				if err != nil || r.Endpoint.Addr != addr {
					t.Fatalf("pick %v, %v; want %s", r.Endpoint.Addr, err, addr)
				}
				r.Done(errReset)
			}
			synctest.Wait()
		}
		fail(as[0]) // ejected for 10 s, breaker open for 12 s
		time.Sleep(time.Second)
		fail(as[1]) // ejection refused by the cap; breaker open for 12 s (until 13 s)
		if s := status(b, as[1]); s.Ejected || s.Breaker != breaker.Open {
			t.Fatalf("second bad node: %+v, want not ejected, breaker open", s)
		}
		time.Sleep(12*time.Second + 100*time.Millisecond) // past its breaker's open period
		synctest.Wait()
		if s := status(b, as[1]); s.Ejected || !s.Ready || s.Breaker != breaker.HalfOpen {
			t.Fatalf("13 s after its failures, with no request since: %+v; want half-open and ready, not ejected", s)
		}
	})
}

// The other side: a node the cap kept in that still fails in rotation is
// ejected by its next run once a slot is free.
func TestCappedNodeStillFailingIsEjectedLater(t *testing.T) {
	bubble(t, func(t *testing.T) {
		as := addrs(3)
		w := discoverytest.NewAddrs(as...)
		defer w.Close()
		b := New(w, WithPolicy(RoundRobin()), WithPanicThreshold(0), WithoutBreakers(),
			WithOutlierDetection(OutlierConfig{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second,
				Jitter: 0.0001, MaxEjectedShare: 0.1}))
		defer b.Close()
		synctest.Wait()
		fail := func(addr string, n int) {
			for range n {
				r, err := b.Pick(context.Background(), Exclude(others(as, addr)...))
				if err != nil || r.Endpoint.Addr != addr {
					t.Fatalf("pick %v, %v; want %s", r.Endpoint.Addr, err, addr)
				}
				r.Done(errReset)
			}
			synctest.Wait()
		}
		fail(as[0], 3)
		fail(as[1], 5) // capped
		if status(b, as[1]).Ejected {
			t.Fatal("ejected past the cap")
		}
		time.Sleep(10*time.Second + 10*time.Millisecond)
		synctest.Wait()
		if status(b, as[0]).Ejected {
			t.Fatal("first ejection did not end")
		}
		if !status(b, as[1]).Ejected {
			fail(as[1], 3) // a new run
		}
		if !status(b, as[1]).Ejected {
			t.Fatalf("a node still failing in rotation was not ejected once the cap allowed: %+v", status(b, as[1]))
		}
	})
}

// bubble runs f in a synctest bubble, with the balancer's clock anchored in
// the bubble's time (mono() would be negative otherwise).
func bubble(t *testing.T, f func(t *testing.T)) {
	synctest.Test(t, func(t *testing.T) {
		old := epoch
		epoch = time.Now().Add(-time.Second)
		defer func() { epoch = old }()
		f(t)
	})
}

func status(b *Balancer, addr string) NodeStatus {
	for _, s := range b.Status() {
		if s.Endpoint.Addr == addr {
			return s
		}
	}
	return NodeStatus{}
}
