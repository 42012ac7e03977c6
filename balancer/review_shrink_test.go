package balancer

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

// The cap on ejected nodes is a share of the set: when discovery shrinks
// the set under nodes already ejected, the cap shrinks with it, and the
// ejections past it end (the soonest first), rather than keep the smaller
// set short of more nodes than the cap allows for up to MaxEjection.
func TestEjectionCapFollowsTheSetWhenItShrinks(t *testing.T) {
	bubble(t, func(t *testing.T) {
		as := addrs(20)
		w := discoverytest.NewAddrs(as...)
		defer w.Close()
		b := New(w, WithPolicy(RoundRobin()), WithPanicThreshold(0), WithoutBreakers(),
			WithOutlierDetection(OutlierConfig{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second,
				Jitter: 0.0001, MaxEjectedShare: 0.1})) // 2 of 20, 1 of 5
		defer b.Close()
		synctest.Wait()
		for i, bad := range as[:2] {
			for range 3 {
				r, err := b.Pick(context.Background(), Exclude(others(as, bad)...))
				if err != nil || r.Endpoint.Addr != bad {
					t.Fatalf("pick %v, %v; want %s", r.Endpoint.Addr, err, bad)
				}
				r.Done(errReset)
			}
			synctest.Wait()
			if i == 0 {
				time.Sleep(time.Second) // the second ejection ends later
			}
		}
		if !status(b, as[0]).Ejected || !status(b, as[1]).Ejected {
			t.Fatalf("want 2 ejected: %+v", b.Status())
		}
		w.SetAddrs(as[:5]...)
		synctest.Wait()
		ejected := 0
		for _, s := range b.Status() {
			if s.Ejected {
				ejected++
			}
		}
		if ejected > 1 || len(b.picker.Load().ready) < 4 {
			t.Fatalf("after the set shrank to 5: %d ejected, %d ready; the cap allows 1 of 5", ejected, len(b.picker.Load().ready))
		}
		if !status(b, as[1]).Ejected {
			t.Fatal("the ejection that ends last should stay")
		}
	})
}
