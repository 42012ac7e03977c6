package balancer

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A node leaving the ready set (its breaker opens, it is ejected or
// quarantined) moves only its own keys, also in a set around 4,096 nodes,
// where Maglev's table grows from 65,537 slots to 655,373: the size was
// chosen by the ready nodes, so one node of 4,097 quarantined changed it
// and remapped almost every key, and did again when it came back.
func TestMaglevTableSizeDoesNotFollowHealth(t *testing.T) {
	as := addrs(4097)
	b, _ := newTest(t, as, WithPolicy(Maglev(0)), WithoutBreakers())
	keys := func() map[string]string {
		m := map[string]string{}
		for i := range 2000 {
			k := fmt.Sprintf("user-%d", i)
			r, err := b.Pick(context.Background(), HashKey(k))
			if err != nil {
				t.Fatal(err)
			}
			r.Done(nil)
			m[k] = r.Endpoint.Addr
		}
		return m
	}
	before := keys()
	out := as[100]
	b.Quarantine(out, time.Hour)
	waitFor(t, b, "the node quarantined", func(p *picker) bool { return len(p.ready) == len(as)-1 })
	moved := 0
	for k, a := range keys() {
		if before[k] != a && before[k] != out {
			moved++
		}
	}
	// Maglev moves a few keys beyond the node's own: 1 % is generous.
	if moved > 20 {
		t.Fatalf("quarantining 1 of %d nodes moved %d of 2000 keys that were on other nodes", len(as), moved)
	}
}
