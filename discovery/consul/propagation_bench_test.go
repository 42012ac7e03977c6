package consul

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/stats"
)

// BenchmarkPropagation measures the time from a registry change (the start
// of the agent API call that registers or deregisters an instance) to Next
// returning a State that shows it, against a real agent, with the watcher's
// default options. Each iteration is one change. "paced" leaves 100 ms
// between changes (steady churn); "back-to-back" makes the next change as
// soon as the previous one was seen, which runs into the watcher's re-query
// rate limit (20/s, burst 10) on purpose.
//
//	go test -run='^$' -bench=Propagation -benchtime=100x ./discovery/consul/
func BenchmarkPropagation(b *testing.B) {
	for _, mode := range []struct {
		name string
		gap  time.Duration
	}{{"paced", 100 * time.Millisecond}, {"back-to-back", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			a := consultest.Start(b)
			c := agentClient(b, a)
			w, err := New("web", WithAddress(a.Addr()))
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if _, err := w.Next(ctx); err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				id := fmt.Sprintf("p-%d", i)
				start := time.Now()
				if i%2 == 0 {
					register(b, c, id, fmt.Sprintf("127.0.0.1:%d", 10000+i), nil, nil)
				} else {
					if err := c.Agent().ServiceDeregister(fmt.Sprintf("p-%d", i-1)); err != nil {
						b.Fatal(err)
					}
				}
				want := i%2 == 0
				for {
					s, err := w.Next(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if has(s, fmt.Sprintf("p-%d", i-i%2)) == want {
						break
					}
				}
				lat = append(lat, time.Since(start))
				time.Sleep(mode.gap)
			}
			b.StopTimer()
			report(b, "consul", mode.name, lat)
		})
	}
}

func has(s discovery.State, id string) bool {
	for _, e := range s.Endpoints {
		if e.ID == id {
			return true
		}
	}
	return false
}

func report(b *testing.B, registry, mode string, lat []time.Duration) {
	r := stats.Report{Registry: registry, Mode: mode, Latencies: lat}
	p50, p99 := r.Metrics()
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(0, "ns/op")
	if len(lat) >= 50 {
		fmt.Print(r.Table())
	}
}
