package etcd

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	"github.com/dialtone-go/dialtone/internal/stats"
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

	r := stats.Report{Registry: "etcd", Mode: "back-to-back", Latencies: lat}
	p50, p99 := r.Metrics()
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(0, "ns/op")
	if b.N >= 50 {
		fmt.Print(r.Table())
	}
}
