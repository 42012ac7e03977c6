package benchmarks

// Dialtone's side of every comparison in peers_test.go. Each entry runs
// under the same Benchmark<Kind> as the peers, named peer=dialtone[-variant].

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
)

func endpoints(n int, weighted bool) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, n)
	for i := range eps {
		a := fmt.Sprintf("10.%d.%d.%d:80", i/62500, i/250%250, i%250+1)
		eps[i] = discovery.Endpoint{ID: a, Addr: a, Weight: 1}
		if weighted {
			eps[i].Weight = 1 + i%10
		}
	}
	return eps
}

// newBalancer builds a Balancer over a static set of n endpoints and waits
// until it picks.
func newBalancer(b *testing.B, eps []discovery.Endpoint, opts ...balancer.Option) *balancer.Balancer {
	w, err := discovery.NewStatic(eps...)
	if err != nil {
		b.Fatal(err)
	}
	bl := balancer.New(w, opts...)
	b.Cleanup(func() { bl.Close(); w.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		ch := bl.Updated()
		if r, err := bl.Pick(ctx); err == nil {
			r.Done(nil)
			return bl
		}
		select {
		case <-ch:
		case <-ctx.Done():
			b.Fatal("balancer never became ready")
		}
	}
}

// pickDone measures Pick + Done(nil), serial and parallel.
func pickDone(b *testing.B, bl *balancer.Balancer) {
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			r, err := bl.Pick(ctx)
			if err != nil {
				b.Fatal(err)
			}
			r.Done(nil)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
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

func policyBench(name string, weighted bool, opts ...balancer.Option) func(b *testing.B) {
	return func(b *testing.B) {
		b.Run("peer="+name, func(b *testing.B) {
			forSizes(b, func(b *testing.B, n int) {
				pickDone(b, newBalancer(b, endpoints(n, weighted), opts...))
			})
		})
	}
}

func init() {
	rr := policyBench("dialtone", false, balancer.WithPolicy(balancer.RoundRobin()), balancer.WithoutBreakers())
	rrBrk := policyBench("dialtone-breakers", false, balancer.WithPolicy(balancer.RoundRobin()))
	ours["RoundRobin"] = func(b *testing.B) { rr(b); rrBrk(b) }
	p2c := policyBench("dialtone", false, balancer.WithPolicy(balancer.P2C()), balancer.WithoutBreakers())
	ours["LeastRequest"] = p2c
	// The defaults (P2C with breakers), beside the peers' P2C pickers,
	// which have no breakers.
	p2cBrk := policyBench("dialtone-defaults", false)
	ours["P2C"] = func(b *testing.B) { p2c(b); p2cBrk(b) }
	ours["Weighted"] = policyBench("dialtone", true, balancer.WithPolicy(balancer.WeightedRoundRobin()), balancer.WithoutBreakers())

	// Rebuild: a discovery update of 1,000 endpoints (one endpoint changes)
	// until the new picker is published, for every policy that builds
	// something per snapshot: round robin (the cursor), weighted round robin
	// (the EDF schedule), P2C (inverse weights) and Maglev (the 65,537-slot
	// lookup table).
	ours["Rebuild"] = func(b *testing.B) {
		for _, v := range []struct {
			name string
			pol  balancer.Policy
		}{
			{"dialtone", balancer.RoundRobin()},
			{"dialtone-wrr", balancer.WeightedRoundRobin()},
			{"dialtone-p2c", balancer.P2C()},
			{"dialtone-maglev", balancer.Maglev(0)},
		} {
			b.Run("peer="+v.name+"/n=1000", func(b *testing.B) {
				a, c := endpoints(1001, true), endpoints(1001, true)
				sets := [2][]discovery.Endpoint{a[:1000], append(c[:999:999], c[1000])}
				w, err := discovery.NewStatic(sets[0]...)
				if err != nil {
					b.Fatal(err)
				}
				bl := balancer.New(w, balancer.WithPolicy(v.pol), balancer.WithSlowStart(0, 0))
				defer func() { bl.Close(); w.Close() }()
				time.Sleep(100 * time.Millisecond)
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					ch := bl.Updated()
					if err := w.Update(sets[(i+1)%2]...); err != nil {
						b.Fatal(err)
					}
					<-ch
				}
			})
		}
	}

	// Breaker: the success path on per-node breakers, through Begin and End
	// (what the balancer uses; no allocation) and through the two-step
	// Allow + done form (one closure per request, like gobreaker's).
	ours["Breaker"] = func(b *testing.B) {
		for _, v := range []struct {
			name string
			once func(*breaker.Breaker) error
		}{
			{"dialtone", func(br *breaker.Breaker) error {
				t, err := br.Begin()
				if err == nil {
					br.End(t, nil)
				}
				return err
			}},
			{"dialtone-allow", func(br *breaker.Breaker) error {
				done, err := br.Allow()
				if err == nil {
					done(nil)
				}
				return err
			}},
		} {
			b.Run("peer="+v.name, func(b *testing.B) {
				forSizes(b, func(b *testing.B, n int) {
					s := breaker.NewSet(breaker.Config{})
					defer s.Close()
					brks := make([]*breaker.Breaker, n)
					for i := range brks {
						brks[i] = s.Get(fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1))
					}
					b.Run("serial", func(b *testing.B) {
						b.ReportAllocs()
						for i := range b.N {
							if err := v.once(brks[i%n]); err != nil {
								b.Fatal(err)
							}
						}
					})
					b.Run("parallel", func(b *testing.B) {
						b.ReportAllocs()
						b.RunParallel(func(pb *testing.PB) {
							i := 0
							for pb.Next() {
								if err := v.once(brks[i%n]); err != nil {
									b.Fatal(err)
								}
								i++
							}
						})
					})
				})
			})
		}
	}
}
