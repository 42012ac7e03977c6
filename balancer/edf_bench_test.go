package balancer

import (
	"fmt"
	"testing"
)

// BenchmarkEDFSchedule measures the weighted round robin's schedule for n
// nodes of weights 1 to 10, which every picker rebuild of a weighted set
// computes; also with one node ramping up in slow start at a tenth of its
// weight, which makes the lightest slot ten times finer.
func BenchmarkEDFSchedule(b *testing.B) {
	for _, ramp := range []bool{false, true} {
		for _, n := range []int{1000} {
			b.Run(fmt.Sprintf("n=%d/ramp=%v", n, ramp), func(b *testing.B) {
				ready := make([]entry, n)
				for i := range ready {
					ready[i] = entry{idx: uint32(i), weight: float32(i%10 + 1)}
				}
				if ramp {
					ready[n-1].weight = 0.1
				}
				var s edfScratch
				b.ReportAllocs()
				for range b.N {
					edfSchedule[uint16](ready, &s)
				}
			})
		}
	}
}
