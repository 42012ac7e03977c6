package balancer

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// Benchmarks of our side alone; benchmarks/ compares against peers.
//
//	go test -run='^$' -bench=. -benchmem ./balancer/

var policies = []struct {
	name string
	p    func() Policy
}{
	{"rr", RoundRobin}, {"random", Random}, {"wrr", WeightedRoundRobin},
	{"p2c", func() Policy { return P2C() }}, {"maglev", func() Policy { return Maglev(0) }},
}

func BenchmarkPickDone(b *testing.B) {
	for _, pol := range policies {
		for _, brk := range []bool{false, true} {
			for _, n := range []int{3, 100, 1000} {
				opts := []Option{WithPolicy(pol.p())}
				if !brk {
					opts = append(opts, WithoutBreakers())
				}
				name := fmt.Sprintf("%s/breakers=%v/n=%d", pol.name, brk, n)
				b.Run(name+"/serial", func(b *testing.B) {
					bl, _ := newTest(b, addrs(n), opts...)
					pickDoneSerially(b, bl)
				})
				b.Run(name+"/parallel", func(b *testing.B) {
					bl, _ := newTest(b, addrs(n), opts...)
					ctx := context.Background()
					b.ReportAllocs()
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							r, err := bl.Pick(ctx)
							if err != nil {
								b.Fatal(err)
							}
							r.Done(nil)
						}
					})
				})
			}
		}
	}
}

// BenchmarkRebuild measures building a picker for n ready nodes, which the
// run goroutine does on every change.
func BenchmarkRebuild(b *testing.B) {
	for _, pol := range policies {
		for _, n := range []int{1000} {
			b.Run(fmt.Sprintf("%s/n=%d", pol.name, n), func(b *testing.B) {
				bl, _ := newTest(b, addrs(n), WithPolicy(pol.p()))
				bl.Close() // the benchmark calls rebuild itself, as run does
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					bl.rebuild()
				}
			})
		}
	}
}

// BenchmarkApply10k measures applying a 10,000-endpoint update to a
// balancer that already holds 10,000 (half of them replaced), through
// apply and rebuild, and reports the heap per endpoint.
func BenchmarkApply10k(b *testing.B) {
	const n = 10000
	all := addrs(2 * n)
	mk := func(as []string) discovery.State {
		s := discovery.State{Version: 1}
		for _, a := range as {
			s.Endpoints = append(s.Endpoints, discovery.Endpoint{ID: a, Addr: a, Weight: 1})
		}
		return s
	}
	first, second := mk(all[:n]), mk(all[n/2:n+n/2])
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	bl, _ := newTest(b, all[:n])
	for range 3 * n { // pick every node a few times: breakers and statistics exist
		r, err := bl.Pick(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		r.Done(nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perEndpoint := float64(after.HeapAlloc-before.HeapAlloc) / n
	// Stop the run goroutine, which owns the nodes: from here the
	// benchmark calls apply and rebuild itself, as run does.
	bl.Close()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if i%2 == 0 {
			bl.apply(second)
		} else {
			bl.apply(first)
		}
		bl.rebuild()
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N)/1000, "ms/update")
	b.ReportMetric(perEndpoint, "B/endpoint")
}

// BenchmarkFailFast measures Pick when every breaker is open (FAULTS.md
// row 18): it must fail at once with the typed error.
func BenchmarkFailFast(b *testing.B) {
	for _, n := range []int{3, 1000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			bl, _ := newTest(b, addrs(n), WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
			for _, nd := range bl.set.Load().byAddr() {
				brk := nd.breaker()
				for range 5 {
					if done, err := brk.Allow(); err == nil {
						done(errReset)
					}
				}
			}
			waitFor(b, bl, "every breaker open", func(p *picker) bool { return len(p.ready) == 0 })
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := bl.Pick(ctx); err == nil {
					b.Fatal("Pick succeeded with every breaker open")
				}
			}
		})
	}
}

//go:noinline
func returnResult(ep *discovery.Endpoint, done func(error)) (Result, error) {
	return Result{Endpoint: *ep, Done: done}, nil
}

var sinkResult Result

// BenchmarkResultCopy measures the floor of any Pick under the contract
// that Result carries discovery.Endpoint by value: returning one Result.
func BenchmarkResultCopy(b *testing.B) {
	bl, _ := newTest(b, addrs(3), WithoutBreakers())
	p := bl.picker.Load()
	e := &p.ready[0]
	for range b.N {
		r, _ := returnResult(&bl.eps[e.idx], p.nodes[e.idx].done)
		sinkResult.Done = r.Done
	}
}

// BenchmarkPickDoneCold measures Pick + Done(nil) on caches another 4 MiB of
// work has just gone through, as a Call's Done and its next Pick run after
// a network round trip (kernel, scheduler, codec). It reports cold-ns, the
// mean time of Pick + Done less that of an empty timed section; ns/op is
// mostly the flush. BenchmarkPickDone measures the same warm.
//
//	go test -run='^$' -bench=PickDoneCold -benchtime=20000x ./balancer/
func BenchmarkPickDoneCold(b *testing.B) {
	flush := make([]byte, 4<<20)
	evict := func() {
		for i := 0; i < len(flush); i += 64 {
			flush[i]++
		}
	}
	for _, v := range []struct {
		name string
		opts []Option
	}{
		{"p2c+breakers", nil}, // the defaults
		{"p2c", []Option{WithoutBreakers()}},
		{"rr+breakers", []Option{WithPolicy(RoundRobin())}},
		{"rr", []Option{WithPolicy(RoundRobin()), WithoutBreakers()}},
	} {
		b.Run(v.name, func(b *testing.B) {
			bl, _ := newTest(b, addrs(3), v.opts...)
			ctx := context.Background()
			var picked, empty time.Duration
			for range b.N {
				evict()
				start := time.Now()
				r, err := bl.Pick(ctx)
				if err != nil {
					b.Fatal(err)
				}
				r.Done(nil)
				picked += time.Since(start)
				evict()
				start = time.Now()
				empty += time.Since(start)
			}
			b.ReportMetric(float64(picked-empty)/float64(b.N), "cold-ns")
		})
	}
}

// BenchmarkStatusAndListed compares, for 1,000 nodes, the full Status
// with Listed, the lookup rpcclient's drain loop makes for each endpoint it
// holds after every update.
func BenchmarkStatusAndListed(b *testing.B) {
	as := addrs(1000)
	bl, _ := newTest(b, as)
	b.Run("Status", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if len(bl.Status()) != len(as) {
				b.Fatal("Status lost nodes")
			}
		}
	})
	b.Run("Listed", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			if !bl.Listed(as[i%len(as)]) {
				b.Fatal("a listed address is not Listed")
			}
		}
	})
}

// BenchmarkPickDoneZone measures picks with WithLocalZone over 100 nodes in
// two zones, breakers off: every pick in the zone (local), and 20 of the
// zone's 50 nodes out, so that 84 % stay and the rest spill over (spill);
// against BenchmarkPickDone's n=100 without the option.
func BenchmarkPickDoneZone(b *testing.B) {
	es := zoned(50, "a", "b")
	local := inZone(es, "a")
	for _, pol := range policies {
		for _, mode := range []string{"local", "spill"} {
			b.Run(fmt.Sprintf("%s/%s", pol.name, mode), func(b *testing.B) {
				bl, _ := newZoneTest(b, es, "a", 50, WithPolicy(pol.p()), WithoutBreakers(),
					WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
				if mode == "spill" {
					for _, a := range local[:20] {
						bl.Quarantine(a, time.Hour)
					}
					waitFor(b, bl, "the spill", func(p *picker) bool { return len(p.ready) == 80 })
				}
				pickDoneSerially(b, bl)
			})
		}
	}
}

// pickDoneSerially times b.N picks of bl, each Done at once with success.
func pickDoneSerially(b *testing.B, bl *Balancer) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r, err := bl.Pick(ctx)
		if err != nil {
			b.Fatal(err)
		}
		r.Done(nil)
	}
}
