package balancer

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

// A keyed retry that excludes a heavy node keeps the bound Maglev
// documents (TestMaglevKeyedRetryKeepsTheBound, with weights): the nodes
// left share the whole load. With the weighted bound, each light node's
// limit is its share of the total weight, the excluded node's included, so
// the nodes left could together hold only 1.25 x 4/8 of the load; past
// that, every retry went to the excluded node's successor in the State,
// whatever its load.
func TestMaglevKeyedRetryOffAHeavyNodeKeepsTheBound(t *testing.T) {
	as := addrs(5)
	w := discoverytest.New()
	heavy := as[0]
	w.Set(eps(map[string]int{as[0]: 4, as[1]: 1, as[2]: 1, as[3]: 1, as[4]: 1})...)
	b := New(w, WithService("svc"), WithPolicy(Maglev(0)), WithoutBreakers())
	t.Cleanup(func() { b.Close(); w.Close() })
	waitFor(t, b, "the set", func(p *picker) bool { return len(p.ready) == 5 })
	key := ""
	for i := range 100 {
		k := fmt.Sprintf("hot%d", i)
		r, err := b.Pick(context.Background(), HashKey(k))
		if err != nil {
			t.Fatal(err)
		}
		r.Done(nil)
		if r.Endpoint.Addr == heavy {
			key = k
			break
		}
	}
	if key == "" {
		t.Fatal("no key of the heavy node")
	}
	const total = 40
	held, spread := holdKey(t, b, total, key, Exclude(heavy))
	for _, r := range held {
		r.Done(nil)
	}
	// The four nodes left have equal weights: each should hold about a
	// quarter, at most ceil(1.25 x total / 4).
	limit := int(math.Ceil(1.25 * total / 4))
	for a, c := range spread {
		if c > limit {
			t.Fatalf("%d of %d retries of a key of the heavy (excluded) node on %s, past ceil(1.25 x %d / 4 nodes left) = %d: %v", c, total, a, total, limit, spread)
		}
	}
}
