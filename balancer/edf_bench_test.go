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

// BenchmarkMaglevTable measures Maglev's lookup table for n nodes of weights
// 1 to 10, which every picker rebuild of a Maglev balancer computes (a
// discovery update, and a health change: a breaker, an ejection, a
// quarantine): 65,537 slots up to 4,096 nodes, 655,373 above.
func BenchmarkMaglevTable(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ready, nodes := maglevSet(n)
			size := uint64(65537)
			if n > 4096 {
				size = 655373
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				maglevTable(ready, nodes, size)
			}
		})
	}
}
