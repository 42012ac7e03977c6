package etcd

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
)

// BenchmarkPropagation measures registry change to Next: each iteration
// makes one change in a real embedded etcd (a Put of a new endpoint, or the
// Delete of the one added before) and times it from just before the write
// until Next returns a State that reflects it. The prefix holds 100 other
// endpoints. It reports the p50 and p99 latency; the target is p99 <= 50 ms.
//
//	go test -run='^$' -bench=Propagation -benchtime=100x ./discovery/etcd/
func BenchmarkPropagation(b *testing.B) {
	srv := etcdtest.Start(b)
	cli := srv.Client(b)
	const base = 100
	for i := range base {
		put(b, cli, key("bench", i), ep(id(i), addr(i)))
	}
	w := startWatcher(b, cli, "bench")
	waitState(b, w, "initial set", func(s discovery.State) bool { return len(s.Endpoints) == base })

	has := func(s discovery.State, id string) bool {
		_, ok := slices.BinarySearchFunc(s.Endpoints, id, func(e discovery.Endpoint, id string) int {
			switch {
			case e.ID < id:
				return -1
			case e.ID > id:
				return 1
			}
			return 0
		})
		return ok
	}

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := base + i/2*2 // the endpoint added at even i, deleted at the next odd i
		k, name := key("bench", n), id(n)
		add := i%2 == 0
		start := time.Now()
		if add {
			put(b, cli, k, ep(name, addr(n)))
		} else {
			del(b, cli, k)
		}
		waitState(b, w, "change "+name, func(s discovery.State) bool { return has(s, name) == add })
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()

	slices.Sort(lat)
	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	if b.N >= 10 {
		fmt.Printf("\netcd propagation, registry change -> Next (%d changes, %d endpoints)\n", len(lat), base)
		fmt.Printf("  %-6s %9s\n", "", "ms")
		for _, row := range []struct {
			name string
			d    time.Duration
		}{{"min", lat[0]}, {"p50", p50}, {"p90", percentile(lat, 90)}, {"p99", p99}, {"max", lat[len(lat)-1]}} {
			fmt.Printf("  %-6s %9.3f\n", row.name, ms(row.d))
		}
		fmt.Printf("  target p99 <= 50 ms: %v\n\n", p99 <= 50*time.Millisecond)
	}
}

// percentile returns the nearest-rank p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100 // ceil(n*p/100)
	return sorted[max(i-1, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
