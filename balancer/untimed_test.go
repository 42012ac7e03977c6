package balancer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
)

// Done(Untimed) of a sampled pick takes no latency sample: P2C's estimate
// keeps its value, and the node is due for a probe that gives it one.
func TestUntimedIsASuccessWithoutASample(t *testing.T) {
	b, _ := newTest(t, addrs(2), WithPolicy(P2C()), WithSlowStart(0, 0),
		WithBreakers(breaker.Config{ConsecutiveFailures: 5}), WithOutlierDetection(OutlierConfig{Disabled: true}))
	// A new node's first pick is sampled: it probes the node.
	r, err := b.Pick(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	addr := r.Endpoint.Addr
	n := b.set.Load().lookup(addr)
	before := n.costNs()
	if n.probed.Load() == neverProbed {
		t.Fatal("the first pick did not probe its node")
	}
	time.Sleep(20 * time.Millisecond) // a dial
	r.Done(Untimed)
	if got := n.costNs(); got != before {
		t.Fatalf("estimate after Done(Untimed): %v ns, was %v: a sample was taken", got, before)
	}
	if p := n.probed.Load(); p != neverProbed+1 {
		t.Fatalf("probed %d after Done(Untimed): not due for a probe", p)
	}
}

// Every Done path counts Untimed as a success: four failures, Untimed and
// one failure are no run of 5, for the consecutive failures and the
// breaker alike (Untimed counted as a failure would open it).
func TestUntimedCountsAsASuccess(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []Option
	}{
		{"breaker's shared Done", []Option{WithPolicy(RoundRobin())}},
		{"node's Done", []Option{WithPolicy(RoundRobin()), WithoutBreakers()}},
		{"P2C", []Option{WithPolicy(P2C())}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, _ := newTest(t, addrs(2), append([]Option{WithSlowStart(0, 0),
				WithBreakers(breaker.Config{ConsecutiveFailures: 5}), WithOutlierDetection(OutlierConfig{Disabled: true})}, c.opts...)...)
			addr := addrs(2)[0]
			n := b.set.Load().lookup(addr)
			boom := errors.New("boom")
			done := func(err error) {
				t.Helper()
				for range 100 {
					// (Exclude: P2C avoids a failing node.)
					r, err2 := b.Pick(context.Background(), Exclude(addrs(2)[1]))
					if err2 != nil {
						t.Fatal(err2)
					}
					if r.Endpoint.Addr == addr {
						r.Done(err)
						return
					}
					r.Done(nil)
				}
				t.Fatalf("no pick of %s in 100", addr)
			}
			for range 4 {
				done(boom)
			}
			done(Untimed)
			if c := n.consec.Load(); c != 0 {
				t.Fatalf("consecutive failures %d after Done(Untimed), want 0", c)
			}
			done(boom)
			if st := n.breakerState(); st != breaker.Closed {
				t.Fatalf("breaker %v after 4 failures, Untimed and 1 failure; want closed", st)
			}
		})
	}
}
