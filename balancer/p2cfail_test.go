package balancer

import (
	"math"
	"testing"
	"time"
)

// A failure counts as at least the failure penalty "so that a node that
// fails fast never looks cheap" (P2C's doc). For a service slower than the
// penalty (250 ms by default), a fast failure (a refused connection, 1 ms)
// was blended in like any faster sample, and lowered the estimate toward
// the penalty: the failing node then looked cheaper than its healthy peers
// and won every pair it was drawn in, drawing twice its share of the
// requests, all of them to fail. A failure must never lower the estimate.
//
// Two nodes with the same 1 s estimate; the first fails fast once, 5 s
// after its last sample. Probing is off and nothing is in flight, so
// P2C's choice is the cost alone: at a tie, the first of a uniform random
// pair, each node half the picks. Binomial(2000, 1/2) has sigma 22.4; 6
// sigma (134) is a false failure rate under 1e-8. The broken estimate
// (0.71 s) gives the failing node all 2000.
func TestP2CFastFailureNeverLowersTheEstimate(t *testing.T) {
	ready, nodes := make([]entry, 2), make([]*node, 2)
	sec := float64(time.Second)
	for i := range nodes {
		nodes[i] = &node{}
		nodes[i].cost.Store(math.Float64bits(sec))
		ready[i] = entry{idx: uint32(i), weight: 1}
	}
	tau, penalty := float64(10*time.Second), float64(250*time.Millisecond)
	failing := nodes[0]
	failing.stamp.Store(1)
	failing.observe(1+int64(5*time.Second), int64(time.Millisecond), true, tau, penalty)
	if c := failing.costNs(); c < sec {
		t.Errorf("a fast failure lowered the 1s estimate to %v", time.Duration(c))
	}
	// A run of them, close together, as a busy client samples them.
	for k := range 100 {
		failing.observe(1+int64(5*time.Second)+int64(k)*int64(10*time.Millisecond), int64(time.Millisecond), true, tau, penalty)
	}
	if c := failing.costNs(); c < sec {
		t.Errorf("100 fast failures lowered the 1s estimate to %v", time.Duration(c))
	}
	s := P2C(WithProbeAfter(0)).build(ready, nodes, samplingOnly())
	const picks = 2000
	got := 0
	for range picks {
		if i, _ := s.first(0, false); i == 0 {
			got++
		}
	}
	if got > picks/2+134 {
		t.Fatalf("the failing node won %d of %d picks against an equally fast healthy one; want about half", got, picks)
	}
	// Its estimate before the failures is still what the first success
	// after them returns to.
	failing.observe(1+int64(7*time.Second), int64(900*time.Millisecond), false, tau, penalty)
	if c := failing.costNs(); c > sec {
		t.Fatalf("a success after the failures left the estimate at %v, want at most the 1s from before", time.Duration(c))
	}
}
