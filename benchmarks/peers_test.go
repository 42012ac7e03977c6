// Package benchmarks measures dialtone's balancer against its peers, side by
// side in one run (see DESIGN.md, section Performance). This file holds the
// peers; ours_test.go holds dialtone's side.
//
// Naming: Benchmark<Kind>/peer=<name>/n=<endpoints>/<serial|parallel>, except
// BenchmarkFloor (no n) and BenchmarkRebuild (no mode). cmd/benchtable prints
// the results as a table with dialtone's ratio to every peer.
package benchmarks

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/cloudwego/kitex/pkg/discovery"
	kitexlb "github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"github.com/sony/gobreaker/v2"
	"github.com/zeromicro/go-zero/core/logx"
	_ "github.com/zeromicro/go-zero/zrpc" // registers "p2c_ewma" in grpc's balancer registry
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/leastrequest" // registers "least_request_experimental"
	"google.golang.org/grpc/balancer/roundrobin"   // registers "round_robin"
)

// ours holds dialtone's side, keyed by Kind ("RoundRobin", "LeastRequest",
// "P2C", "Weighted", "Rebuild", "Breaker", "Floor"). ours_test.go fills it in
// an init func; each Benchmark<Kind> below calls ours[Kind](b) last, so
// dialtone's results are named Benchmark<Kind>/peer=dialtone.../... and sit
// in the same groups as the peers'.
var ours = map[string]func(b *testing.B){}

// runOurs runs dialtone's sub-benchmarks for kind, if ours_test.go has any.
func runOurs(b *testing.B, kind string) {
	if f := ours[kind]; f != nil {
		f(b)
	}
}

// sizes are the endpoint counts every policy is measured at.
var sizes = []int{3, 100, 1000}

// goZeroP2CName is go-zero's p2c.Name; the constant lives in an internal
// package (zrpc/internal/balancer/p2c), so it is repeated here.
const goZeroP2CName = "p2c_ewma"

func init() {
	// go-zero's p2c picker logs statistics once a minute through logx.
	logx.Disable()
}

// forSizes runs f as the sub-benchmark "n=<n>" for every size.
func forSizes(b *testing.B, f func(b *testing.B, n int)) {
	for _, n := range sizes {
		b.Run("n="+strconv.Itoa(n), func(b *testing.B) { f(b, n) })
	}
}

// grpcPick measures Pick on a grpc picker; withDone also calls
// PickResult.Done, as a finished RPC would.
func grpcPick(b *testing.B, p balancer.Picker, withDone bool) {
	info := balancer.PickInfo{Ctx: context.Background(), FullMethodName: "/bench.Service/Method"}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			res, err := p.Pick(info)
			if err != nil {
				b.Fatal(err)
			}
			if withDone && res.Done != nil {
				res.Done(balancer.DoneInfo{})
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				res, err := p.Pick(info)
				if err != nil {
					b.Error(err)
					return
				}
				if withDone && res.Done != nil {
					res.Done(balancer.DoneInfo{})
				}
			}
		})
	})
	if !withDone {
		return
	}
	// overlap: serial, but each request ends after the next one is
	// picked, so one is always in flight, as in a client whose calls
	// overlap (see ours_test.go, pickDoneOverlap).
	b.Run("overlap", func(b *testing.B) {
		b.ReportAllocs()
		prev, err := p.Pick(info)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i++ {
			res, err := p.Pick(info)
			if err != nil {
				b.Fatal(err)
			}
			if prev.Done != nil {
				prev.Done(balancer.DoneInfo{})
			}
			prev = res
		}
		if prev.Done != nil {
			prev.Done(balancer.DoneInfo{})
		}
	})
}

// kitexLB is what kitex's client picks from on every call: the path of
// lbcache.Balancer.GetPicker (pkg/loadbalance/lbcache/cache.go, v0.16.3),
// copied statement for statement: clear the expiry flag, load the cached
// discovery.Result, and ask the Loadbalancer for the picker cached under
// its CacheKey (a sync.Map lookup by string). kitex's client calls it before
// every Next (client/middlewares.go: "we always need to get a new picker
// every time"), as dialtone's Pick loads its current picker on every call,
// so it belongs in kitex's per-call cost. Next alone left most of it out:
// kitex's round robin over 3 instances costs 2.8 ns in Next alone, 18 ns
// with Loadbalancer.GetPicker, 26 ns on this whole path (serial, review
// session 30). lbcache itself is not used because its BalancerFactory
// starts goroutines that never end (the expiry watcher and the shared
// refresh ticker), which goleak in TestMain would report.
type kitexLB struct {
	lb     kitexlb.Loadbalancer
	res    atomic.Value // discovery.Result
	expire int32
}

// GetPicker is lbcache.Balancer.GetPicker.
func (bl *kitexLB) GetPicker() kitexlb.Picker {
	atomic.StoreInt32(&bl.expire, 0)
	res := bl.res.Load().(discovery.Result)
	return bl.lb.GetPicker(res)
}

// pick is one pick as kitex's client makes it (client/middlewares.go):
// GetPicker, Next, then Recycle if the picker is pooled (kitex's
// internal.Reusable).
func (bl *kitexLB) pick(ctx context.Context) discovery.Instance {
	p := bl.GetPicker()
	ins := p.Next(ctx, nil)
	if r, ok := p.(interface{ Recycle() }); ok {
		r.Recycle()
	}
	return ins
}

// kitexNext measures one kitex pick. With client set it is the whole
// per-call path of kitex's client (GetPicker + Next + Recycle, see
// kitexLB: rows peer=kitex-client); without it, Next on a picker fetched
// once (rows peer=kitex, the strict comparison: kitex's pick alone, less
// than kitex's client pays per call).
func kitexNext(b *testing.B, bl *kitexLB, client bool) {
	ctx := context.Background()
	p := bl.GetPicker()
	// Each loop calls kitex directly, as Pick is called on our side: a
	// func value chosen once cost kitex's Next-alone rows an indirect call
	// per pick (round robin 4.3-4.6 ns with it).
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var ins discovery.Instance
			if client {
				ins = bl.pick(ctx)
			} else {
				ins = p.Next(ctx, nil)
			}
			if ins == nil {
				b.Fatal("kitex picker returned nil")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				var ins discovery.Instance
				if client {
					ins = bl.pick(ctx)
				} else {
					ins = p.Next(ctx, nil)
				}
				if ins == nil {
					b.Error("kitex picker returned nil")
					return
				}
			}
		})
	})
}

// kitexInstances returns n kitex instances; weighted gives them weights
// 1..10 (cycling), otherwise they all have discovery.DefaultWeight.
func kitexInstances(n int, weighted bool) []discovery.Instance {
	ins := make([]discovery.Instance, n)
	for i := range ins {
		w := discovery.DefaultWeight
		if weighted {
			w = i%10 + 1
		}
		ins[i] = discovery.NewInstance("tcp", fmt.Sprintf("127.0.%d.%d:8080", i/250, i%250+1), w, nil)
	}
	return ins
}

// kitexPicker builds what kitex's client picks from (kitexLB) over n
// instances: one discovery result, cached under its CacheKey (lbcache
// prefixes the resolver's name), whose picker GetPicker builds on first
// use and then finds in lb's cache.
func kitexPicker(b *testing.B, lb kitexlb.Loadbalancer, n int, weighted bool) *kitexLB {
	ins := kitexInstances(n, weighted)
	bl := &kitexLB{lb: lb}
	bl.res.Store(discovery.Result{Cacheable: true, CacheKey: "bench:bench.service", Instances: ins})
	// A random picker reaches an instance of the least weight, 1, with
	// probability 1/total per draw. 50n draws (the old bound) left 1,000
	// weighted instances (total 5,500) a 1 % chance of missing one;
	// 30 x total leaves each e^-30. The loop stops once all are seen.
	total := 0
	for _, in := range ins {
		total += in.Weight()
	}
	seen := make(map[discovery.Instance]struct{}, n)
	for i := 0; i < 30*total && len(seen) < n; i++ {
		seen[bl.pick(context.Background())] = struct{}{}
	}
	if len(seen) != n {
		b.Fatalf("kitex %s picker reached %d of %d instances", lb.Name(), len(seen), n)
	}
	return bl
}

// BenchmarkRoundRobin: one Pick from a round-robin picker over n ready endpoints.
func BenchmarkRoundRobin(b *testing.B) {
	// grpc-go's round_robin, built through the registry. In grpc 1.83 it is
	// endpointsharding over one pick_first child per endpoint; the top picker
	// rotates over the children's pickers.
	b.Run("peer=grpc", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			grpcPick(b, buildGRPCPicker(b, roundrobin.Name, "", n), false)
		})
	})
	// go-kit's sd/lb round robin over a fixed endpointer.
	b.Run("peer=gokit", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			eps := make(sd.FixedEndpointer, n)
			for i := range eps {
				eps[i] = endpoint.Nop
			}
			bal := kitlb.NewRoundRobin(eps)
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					if _, err := bal.Endpoint(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := bal.Endpoint(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	})
	// kitex has no separate round-robin balancer: NewWeightedRoundRobinBalancer
	// with equal weights builds its plain RoundRobinPicker (an atomic counter).
	b.Run("peer=kitex", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			kitexNext(b, kitexPicker(b, kitexlb.NewWeightedRoundRobinBalancer(), n, false), false)
		})
	})
	b.Run("peer=kitex-client", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			kitexNext(b, kitexPicker(b, kitexlb.NewWeightedRoundRobinBalancer(), n, false), true)
		})
	})
	runOurs(b, "RoundRobin")
}

// BenchmarkLeastRequest: grpc-go's least_request (choiceCount 2), Pick + Done.
func BenchmarkLeastRequest(b *testing.B) {
	b.Run("peer=grpc", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			grpcPick(b, buildGRPCPicker(b, leastrequest.Name, `{"choiceCount":2}`, n), true)
		})
	})
	runOurs(b, "LeastRequest")
}

// BenchmarkP2C: power-of-two-choices Pick + Done (a successful call).
func BenchmarkP2C(b *testing.B) {
	// go-zero's p2c_ewma (registered by importing zrpc): base balancer,
	// picker under one mutex, EWMA latency update in Done.
	b.Run("peer=gozero", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			grpcPick(b, buildGRPCPicker(b, goZeroP2CName, "", n), true)
		})
	})
	// grpc-go's least_request with choiceCount 2 is a P2C on in-flight
	// counts; repeated here so the table shows dialtone's P2C against it.
	b.Run("peer=grpc-least_request", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			grpcPick(b, buildGRPCPicker(b, leastrequest.Name, `{"choiceCount":2}`, n), true)
		})
	})
	runOurs(b, "P2C")
}

// BenchmarkWeighted: one weighted pick over n instances with weights 1..10.
func BenchmarkWeighted(b *testing.B) {
	// kitex's weighted random with the alias method (O(1) per pick).
	b.Run("peer=kitex", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			kitexNext(b, kitexPicker(b, kitexlb.NewWeightedRandomWithAliasMethodBalancer(), n, true), false)
		})
	})
	// The same alias picker on kitex's client path (GetPicker + Next).
	b.Run("peer=kitex-client", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			kitexNext(b, kitexPicker(b, kitexlb.NewWeightedRandomWithAliasMethodBalancer(), n, true), true)
		})
	})
	// kitex's default NewWeightedBalancer: smooth weighted round robin over
	// precomputed virtual nodes (RWMutex on the fast path).
	b.Run("peer=kitex-wrr", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			kitexNext(b, kitexPicker(b, kitexlb.NewWeightedBalancer(), n, true), false)
		})
	})
	// kitex's NewWeightedRandomBalancer: linear scan over the weights.
	b.Run("peer=kitex-random", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			kitexNext(b, kitexPicker(b, kitexlb.NewWeightedRandomBalancer(), n, true), false)
		})
	})
	runOurs(b, "Weighted")
}

// BenchmarkRebuild/peer=kitex/n=1000 measures what kitex does per discovery
// change for one service: kitex's lbcache calls Rebalancer.Rebalance(change)
// on the balancer, which runs weightedBalancer.createPicker over all
// change.Result.Instances (copy the instance slice, drop zero weights, sum
// weights, and, weights being unequal, build the alias-method tables: alias
// and prob slices plus scratch small/large/scaledProb) and stores the new
// picker in its sync.Map under the CacheKey. The instances themselves are
// built once outside the loop, so resolver/diff cost is not included.
func BenchmarkRebuild(b *testing.B) {
	b.Run("peer=kitex", func(b *testing.B) {
		kitexRebalance(b, kitexlb.NewWeightedRandomWithAliasMethodBalancer())
	})
	// kitex's consistent-hash balancer, the like-for-like peer of dialtone's
	// Maglev: Rebalance rebuilds its virtual-node ring (VirtualFactor 100 x
	// weight points per instance, hashed and sorted) from the same weighted
	// instances.
	b.Run("peer=kitex-consist", func(b *testing.B) {
		kitexRebalance(b, kitexlb.NewConsistBalancer(kitexlb.NewConsistentHashOption(func(context.Context, any) string { return "key" })))
	})
	// kitex-refresh: what lbcache's Balancer.Refresh does per discovery
	// change once the resolver has answered: discovery.DefaultDiff of the
	// previous and the new instances (two maps by address), then Rebalance
	// with the Change, alternating between two sets of 1,000 weighted
	// instances that differ in one, as dialtone's side alternates. That is
	// the like-for-like of peer=dialtone, whose update merges the new
	// State's endpoints with the nodes it holds before it builds the
	// picker; peer=kitex leaves kitex's diff out.
	b.Run("peer=kitex-refresh", func(b *testing.B) {
		b.Run("n=1000", func(b *testing.B) {
			lb := kitexlb.NewWeightedRandomWithAliasMethodBalancer()
			rb := lb.(kitexlb.Rebalancer)
			a := kitexInstances(1001, true)
			sets := [2]discovery.Result{
				{Cacheable: true, CacheKey: "bench", Instances: a[:1000]},
				{Cacheable: true, CacheKey: "bench", Instances: append(slices.Clone(a[:999]), a[1000])},
			}
			b.ReportAllocs()
			cpu := startCPU(b)
			for i := 0; i < b.N; i++ {
				ch, ok := discovery.DefaultDiff("bench", sets[i%2], sets[(i+1)%2])
				if !ok {
					b.Fatal("kitex's DefaultDiff found no change")
				}
				rb.Rebalance(ch)
			}
			cpu.stop()
			if p := lb.GetPicker(sets[b.N%2]); p.Next(context.Background(), nil) == nil {
				b.Fatal("rebuilt kitex picker returned nil")
			}
		})
	})
	runOurs(b, "Rebuild")
}

// kitexRebalance measures lb's Rebalance for one change of 1,000 weighted
// instances, as sub-benchmark n=1000, and checks that the rebuilt picker picks.
func kitexRebalance(b *testing.B, lb kitexlb.Loadbalancer) {
	b.Run("n=1000", func(b *testing.B) {
		rb, ok := lb.(kitexlb.Rebalancer)
		if !ok {
			b.Fatalf("kitex %s balancer is not a Rebalancer", lb.Name())
		}
		ch := discovery.Change{Result: discovery.Result{Cacheable: true, CacheKey: "bench", Instances: kitexInstances(1000, true)}}
		b.ReportAllocs()
		cpu := startCPU(b)
		for i := 0; i < b.N; i++ {
			rb.Rebalance(ch)
		}
		cpu.stop()
		if p := lb.GetPicker(ch.Result); p.Next(context.Background(), nil) == nil {
			b.Fatalf("rebuilt kitex %s picker returned nil", lb.Name())
		}
	})
}

// BenchmarkBreaker: bare gobreaker v2 two-step accounting for a successful
// call: one TwoStepCircuitBreaker per node, round robin over the n nodes,
// Allow() then done(nil).
func BenchmarkBreaker(b *testing.B) {
	b.Run("peer=gobreaker", func(b *testing.B) {
		forSizes(b, func(b *testing.B, n int) {
			cbs := make([]*gobreaker.TwoStepCircuitBreaker[struct{}], n)
			for i := range cbs {
				cbs[i] = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{Name: "node-" + strconv.Itoa(i)})
			}
			breakerLoop(b, n, func(i int) error {
				done, err := cbs[i].Allow()
				if err != nil {
					return err
				}
				done(nil)
				return nil
			})
		})
	})
	runOurs(b, "Breaker")
}

// breakerLoop measures call(i), one request on the breaker of node i, over
// n nodes in turn, serial and parallel, the same way for every peer of
// BenchmarkBreaker. In parallel each goroutine walks the nodes with its own
// counter, from its own start (goroutine g of k starts at node g*n/k): no
// peer pays for a counter the goroutines share, and the goroutines do not
// step through the same nodes in lockstep. gobreaker's side used one atomic
// counter for all goroutines, which dialtone's side did not: 121-132 ns/op
// against 102-110 at n=100 and 87-100 at n=1000 with a counter of its own
// (review session 30), which flattered dialtone's parallel ratios by a
// fifth to a quarter.
func breakerLoop(b *testing.B, n int, call func(i int) error) {
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			if err := call(i % n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var goroutines atomic.Int64
		k := int64(runtime.GOMAXPROCS(0))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int((goroutines.Add(1) - 1) % k * int64(n) / k)
			for pb.Next() {
				if err := call(i); err != nil {
					b.Error(err) // not Fatal: this is not the benchmark's goroutine
					return
				}
				if i++; i == n {
					i = 0
				}
			}
		})
	})
}

// BenchmarkFloor: one shared atomic add, the cheapest shared state a picker
// can touch.
func BenchmarkFloor(b *testing.B) {
	b.Run("peer=atomic", func(b *testing.B) {
		var counter uint64
		b.Run("serial", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				atomic.AddUint64(&counter, 1)
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					atomic.AddUint64(&counter, 1)
				}
			})
		})
	})
	runOurs(b, "Floor")
}
