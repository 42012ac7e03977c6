package balancer

import (
	"context"
	"math"
	"testing"
)

// A keyed pick whose node is excluded (a retry: rpcclient passes the
// nodes already tried with the call's HashKey) or whose breaker refuses
// (half-open, its probe out) still keeps to the bound Maglev documents:
// no node is sent a request that makes it hold more than ceil(1.25 x the
// average load). Such picks went to the excluded node's successor in the
// State, whatever its load: every retry of a hot key, and of every other
// key of the failing node, piled onto that one neighbour.
func TestMaglevKeyedRetryKeepsTheBound(t *testing.T) {
	as := addrs(5)
	b, _ := newTest(t, as, WithPolicy(Maglev(0)), WithoutBreakers())
	r, err := b.Pick(context.Background(), HashKey("hot"))
	if err != nil {
		t.Fatal(err)
	}
	r.Done(nil)
	failed := r.Endpoint.Addr // the key's node, which the retries avoid
	const total = 40
	var held []Result
	spread := map[string]int{}
	for range total {
		r, err := b.Pick(context.Background(), HashKey("hot"), Exclude(failed))
		if err != nil {
			t.Fatal(err)
		}
		spread[r.Endpoint.Addr]++
		held = append(held, r)
	}
	for _, r := range held {
		r.Done(nil)
	}
	if spread[failed] != 0 {
		t.Fatalf("the excluded node got %d retries while others were under their bound: %v", spread[failed], spread)
	}
	limit := int(math.Ceil(1.25 * total / float64(len(as))))
	for a, c := range spread {
		if c > limit {
			t.Fatalf("%d of %d retries of the hot key on %s, past the bound of %d: %v", c, total, a, limit, spread)
		}
	}
}
