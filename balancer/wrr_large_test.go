package balancer

import (
	"fmt"
	"math"
	"testing"
)

// WeightedRoundRobin's schedule gives each node a share proportional to
// its effective weight for large sets too: a Degraded node half a healthy
// node's share, a node at the start of its slow start a tenth. The schedule
// was capped at maxSchedule slots whatever the number of nodes and every
// node kept at least one slot, so from about 22,000 equal nodes on a
// Degraded node or a ramping one got a healthy node's full share (at
// 20,000 nodes a node at 10 % of its slow start took half a share).
func TestWeightedScheduleLargeSetKeepsReducedWeights(t *testing.T) {
	for _, tc := range []struct {
		n     int
		light float32
	}{{20000, 0.1}, {30000, 0.1}, {30000, 0.5}, {40000, 0.5}} {
		t.Run(fmt.Sprintf("n=%d/light=%v", tc.n, tc.light), func(t *testing.T) {
			ready := make([]entry, tc.n)
			for i := range ready {
				ready[i] = entry{idx: uint32(i), weight: 1}
			}
			ready[0].weight = tc.light
			var got []int
			if tc.n <= 1<<16 {
				got = slotCounts(edfSchedule[uint16](ready, nil), tc.n)
			} else {
				got = slotCounts(edfSchedule[uint32](ready, nil), tc.n)
			}
			if r := float64(got[0]) / float64(got[1]); math.Abs(r-float64(tc.light)) > 0.1*float64(tc.light) {
				t.Fatalf("a node of weight %v beside %d of weight 1: %d slots against %d, a share of %.3f of theirs",
					tc.light, tc.n-1, got[0], got[1], r)
			}
		})
	}
}

func slotCounts[T readyIndex](sched []T, n int) []int {
	got := make([]int, n)
	for _, s := range sched {
		got[s]++
	}
	return got
}
