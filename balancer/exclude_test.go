package balancer

import (
	"context"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
)

// A pick whose policy's first choice is excluded (a retry, a hedged leg)
// must still follow the policy: it must not go to the excluded node's
// successor in the State whenever the policy chose the excluded node.
// With P2C over 3 nodes, a retry excluding the first node went to the
// second, slow one half the time; with weighted round robin, the light
// second node took the first node's whole share.
func TestExcludedChoiceDoesNotFallToTheNextNode(t *testing.T) {
	as := addrs(3)
	t.Run("p2c", func(t *testing.T) {
		b, _ := newTest(t, as, WithPolicy(P2C(WithProbeAfter(0))), WithoutBreakers(),
			WithOutlierDetection(OutlierConfig{Disabled: true}))
		nodes := b.set.Load().byAddr()
		nodes[as[1]].observe(mono(), int64(500*time.Millisecond), false, b.tau, b.penalty) // slow
		got := countPicks(t, b, 3000, Exclude(as[0]))
		if got[as[1]] > 300 {
			t.Fatalf("picks excluding %s: %v; the slow node %s got %d of 3000, want almost none", as[0], got, as[1], got[as[1]])
		}
	})
	t.Run("weighted", func(t *testing.T) {
		w := eps(map[string]int{as[0]: 5, as[1]: 1, as[2]: 5})
		b, fw := newTest(t, nil, WithPolicy(WeightedRoundRobin()), WithoutBreakers(), WithSlowStart(0, 0))
		fw.Set(w...)
		waitFor(t, b, "3 nodes", func(p *picker) bool { return len(p.ready) == 3 })
		got := countPicks(t, b, 6000, Exclude(as[0]))
		// Weights 1 and 5 among the nodes not excluded: 1,000 and 5,000.
		if got[as[1]] > 1500 {
			t.Fatalf("picks excluding %s: %v; the weight-1 node %s got %d of 6000, want about 1000", as[0], got, as[1], got[as[1]])
		}
	})
	// The excluded node holds most of the weight: the other two, of
	// equal weight, must still share the picks evenly, not 80/20.
	t.Run("weighted, heavy excluded", func(t *testing.T) {
		b, fw := newTest(t, nil, WithPolicy(WeightedRoundRobin()), WithoutBreakers(), WithSlowStart(0, 0))
		fw.Set(eps(map[string]int{as[0]: 18, as[1]: 1, as[2]: 1})...)
		waitFor(t, b, "3 nodes", func(p *picker) bool { return len(p.ready) == 3 })
		got := countPicks(t, b, 10000, Exclude(as[0]))
		within(t, "picks on "+as[1], got[as[1]], 5000, 750)
		within(t, "picks on "+as[2], got[as[2]], 5000, 750)
	})
}

// A half-open node whose probe is out refuses picks; they must follow the
// policy too, not all fall to the node after it in the State. With weighted
// round robin over weights 5, 1 and 5 and the first node half-open, the
// light second node took the first node's share on top of its own.
func TestRefusedChoiceDoesNotFallToTheNextNode(t *testing.T) {
	as := addrs(3)
	b, fw := newTest(t, nil, WithPolicy(WeightedRoundRobin()), WithSlowStart(0, 0),
		WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: 100 * time.Millisecond, MaxOpenTimeout: 100 * time.Millisecond}),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	fw.Set(eps(map[string]int{as[0]: 5, as[1]: 1, as[2]: 5})...)
	waitFor(t, b, "3 nodes", func(p *picker) bool { return len(p.ready) == 3 })
	onlyFirst := Exclude(as[1], as[2])
	r, err := b.Pick(context.Background(), onlyFirst)
	if err != nil || r.Endpoint.Addr != as[0] {
		t.Fatalf("pick with the others excluded: %s, %v", r.Endpoint.Addr, err)
	}
	r.Done(errReset)
	waitFor(t, b, "the first node's breaker open", func(p *picker) bool { return len(p.ready) == 2 })
	waitFor(t, b, "the first node half-open", func(p *picker) bool { return len(p.ready) == 3 })
	probe, err := b.Pick(context.Background(), onlyFirst)
	if err != nil || probe.Endpoint.Addr != as[0] {
		t.Fatalf("probe pick: %s, %v", probe.Endpoint.Addr, err)
	}
	defer probe.Done(nil)
	got := countPicks(t, b, 6000)
	if got[as[0]] != 0 {
		t.Fatalf("the half-open node got %d picks while its probe was out", got[as[0]])
	}
	// Weights 1 and 5 among the nodes that take requests: 1,000 and 5,000.
	if got[as[1]] > 1500 {
		t.Fatalf("picks while %s's probe is out: %v; the weight-1 node %s got %d of 6000, want about 1000", as[0], got, as[1], got[as[1]])
	}
}

// countPicks makes n picks with opts, calling Done(nil) on each, and
// returns how many went to each address (logged too).
func countPicks(t *testing.T, b *Balancer, n int, opts ...PickOption) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		r, err := b.Pick(context.Background(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		got[r.Endpoint.Addr]++
		r.Done(nil)
	}
	t.Logf("%v", got)
	return got
}

// A retry's or a hedge's pick (one with Exclude) must not move the
// round-robin rotation that first attempts follow. When it did, a client
// hedging over round robin sent every call's first attempt to the slow
// node: over 2 nodes, each call whose first attempt went to the slow node
// advanced the rotation twice (its backup took the fast one), so the next
// call started on the slow node again; over 3, one node never got a first
// attempt. Each node must start its share of the calls.
func TestRetryPicksLeaveTheRotation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy Policy
		n      int
	}{
		{"round robin/2", RoundRobin(), 2},
		{"round robin/3", RoundRobin(), 3},
		{"weighted/2", WeightedRoundRobin(), 2},
		{"weighted/3", WeightedRoundRobin(), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := addrs(tc.n)
			b, _ := newTest(t, as, WithPolicy(tc.policy), WithoutBreakers(), WithSlowStart(0, 0),
				WithOutlierDetection(OutlierConfig{Disabled: true}))
			slow := as[0]
			const calls = 3000
			firsts := map[string]int{}
			for range calls {
				first, err := b.Pick(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				firsts[first.Endpoint.Addr]++
				if first.Endpoint.Addr == slow {
					// The hedge: a backup on another node; the fast
					// backup answers and the slow first leg is cancelled.
					backup, err := b.Pick(context.Background(), Exclude(slow))
					if err != nil {
						t.Fatal(err)
					}
					if backup.Endpoint.Addr == slow {
						t.Fatalf("the backup went to the excluded node %s", slow)
					}
					backup.Done(nil)
				}
				first.Done(context.Canceled)
			}
			t.Logf("first attempts: %v", firsts)
			for _, a := range as {
				within(t, "first attempts on "+a, firsts[a], calls/tc.n, calls/tc.n/5)
			}
		})
	}
}
