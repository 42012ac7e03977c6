package balancer

import (
	"testing"
	"time"
)

// A node in the middle of a run of failures, not yet out of rotation (its
// breaker and the ejection threshold not reached), must not set the seed
// of a node discovery adds: medianCost of two nodes is the higher one, and
// failures now double the estimate, so the new node started at the
// failing node's doubled cost and, its first fast sample blending in with
// a weight near 1, stayed there, getting only probe traffic for minutes.
func TestNewNodeSeedIgnoresAFailureRun(t *testing.T) {
	as := addrs(3)
	b, w := newTest(t, as[:2], WithPolicy(P2C()))
	b.mu.Lock()
	good, bad := b.nodes[as[0]], b.nodes[as[1]]
	b.mu.Unlock()
	tau, penalty := float64(10*time.Second), float64(250*time.Millisecond)
	now := mono()
	good.observe(now, int64(time.Millisecond), false, tau, penalty)
	bad.observe(now, int64(time.Millisecond), false, tau, penalty)
	for k := range 4 { // under the breaker's and the ejection's thresholds
		bad.observe(now+int64(k+1), int64(time.Millisecond), true, tau, penalty)
	}
	w.SetAddrs(as...)
	waitFor(t, b, "the third node", func(p *picker) bool { return len(p.ready) == 3 })
	b.mu.Lock()
	fresh := b.nodes[as[2]]
	b.mu.Unlock()
	if c := time.Duration(fresh.costNs()); c > 10*time.Millisecond {
		t.Fatalf("a node added beside a 1ms node and one in a run of 4 failures (estimate %v) starts at %v, want the service's typical 1ms",
			time.Duration(bad.costNs()), c)
	}
}
