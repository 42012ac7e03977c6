package benchmarks

// Dialtone's side of every comparison in peers_test.go. Each entry runs
// under the same Benchmark<Kind> as the peers, named peer=dialtone[-variant].

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
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
					b.Error(err) // not Fatal: this is not the benchmark's goroutine
					return
				}
				r.Done(nil)
			}
		})
	})
}

// pickDoneOverlap measures Pick + Done(nil) serially with one request
// always in flight: each request's Done comes after the next Pick, as in a
// client whose calls overlap. pickDone's serial loop ends each request
// before the next pick, which over few nodes then reads the in-flight count
// a locked add wrote nanoseconds earlier and waits for it: P2C over 3
// nodes costs about 30 ns there and 20 ns here, the same as over 100
// (session 27). grpcPick measures the peers the same way.
func pickDoneOverlap(b *testing.B, bl *balancer.Balancer) {
	ctx := context.Background()
	b.Run("overlap", func(b *testing.B) {
		b.ReportAllocs()
		prev, err := bl.Pick(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			r, err := bl.Pick(ctx)
			if err != nil {
				b.Fatal(err)
			}
			prev.Done(nil)
			prev = r
		}
		prev.Done(nil)
	})
}

func policyBench(name string, weighted bool, opts ...balancer.Option) func(b *testing.B) {
	return policyBenchModes(name, weighted, false, opts...)
}

// policyBenchModes is policyBench, with the overlap mode too when overlap
// is set (the kinds whose peers' Done does work: P2C and LeastRequest).
func policyBenchModes(name string, weighted, overlap bool, opts ...balancer.Option) func(b *testing.B) {
	return func(b *testing.B) {
		b.Run("peer="+name, func(b *testing.B) {
			forSizes(b, func(b *testing.B, n int) {
				bl := newBalancer(b, endpoints(n, weighted), opts...)
				pickDone(b, bl)
				if overlap {
					pickDoneOverlap(b, bl)
				}
			})
		})
	}
}

func init() {
	rr := policyBench("dialtone", false, balancer.WithPolicy(balancer.RoundRobin()), balancer.WithoutBreakers())
	rrBrk := policyBench("dialtone-breakers", false, balancer.WithPolicy(balancer.RoundRobin()))
	ours["RoundRobin"] = func(b *testing.B) { rr(b); rrBrk(b) }
	p2c := policyBenchModes("dialtone", false, true, balancer.WithPolicy(balancer.P2C()), balancer.WithoutBreakers())
	ours["LeastRequest"] = p2c
	// The defaults (P2C with breakers), beside the peers' P2C pickers,
	// which have no breakers.
	p2cBrk := policyBenchModes("dialtone-defaults", false, true)
	ours["P2C"] = func(b *testing.B) { p2c(b); p2cBrk(b) }
	ours["Weighted"] = policyBench("dialtone", true, balancer.WithPolicy(balancer.WeightedRoundRobin()), balancer.WithoutBreakers())

	// Rebuild: a discovery update of 1,000 endpoints (one endpoint changes)
	// until the new picker is published, for every policy that builds
	// something per snapshot: round robin (the cursor), weighted round robin
	// (the EDF schedule), P2C (inverse weights) and Maglev (the 65,537-slot
	// lookup table). Like kitex's side, which is handed its instances
	// ready-made, the States come ready-made, and like kitex's Rebalance,
	// which the benchmark calls on its own goroutine, the balancer's watch
	// goroutine takes them back to back from seqWatcher, without waiting
	// for anyone: this is the balancer's work per update (merging the
	// nodes, building and publishing the picker), which is what kitex's
	// createPicker is measured for. Every peer reports cpu-ns/op, the CPU
	// time the process spent per update (garbage collection included),
	// which benchtable compares.
	//
	// Two variants add what surrounds that work, for the closing note's
	// context. dialtone-handoff (round robin) hands each State over from
	// the benchmark's goroutine and waits for its picker before sending
	// the next: two goroutine wake-ups per update, which a watcher's
	// goroutine delivering States one by one pays once. dialtone-static
	// adds what discovery does before that: discovery.Static validates,
	// copies and sorts the 1,000 endpoints and diffs them with the last set.
	ours["Rebuild"] = func(b *testing.B) {
		// The second set shares the first's values for the 999
		// endpoints it leaves unchanged, as discovery.Publisher hands
		// them on from one State to the next.
		a := endpoints(1001, true)
		sets := [2][]discovery.Endpoint{a[:1000], append(slices.Clone(a[:999]), a[1000])}
		for _, set := range sets { // as discovery publishes them
			slices.SortFunc(set, func(x, y discovery.Endpoint) int { return strings.Compare(x.ID, y.ID) })
		}
		//
		// Slow start is off in these, as kitex has none: with it on (the
		// default, dialtone-wrr-slowstart), the endpoint each update adds
		// ramps up, and the schedule is built for its fractional weight.
		noSlowStart := balancer.WithSlowStart(0, 0)
		for _, v := range []struct {
			name string
			pol  balancer.Policy
			opts []balancer.Option
		}{
			{"dialtone", balancer.RoundRobin(), []balancer.Option{noSlowStart}},
			{"dialtone-wrr", balancer.WeightedRoundRobin(), []balancer.Option{noSlowStart}},
			{"dialtone-wrr-slowstart", balancer.WeightedRoundRobin(), nil},
			{"dialtone-p2c", balancer.P2C(), []balancer.Option{noSlowStart}},
			{"dialtone-maglev", balancer.Maglev(0), []balancer.Option{noSlowStart}},
		} {
			b.Run("peer="+v.name+"/n=1000", func(b *testing.B) {
				w := newSeqWatcher(sets)
				bl := balancer.New(w, append([]balancer.Option{balancer.WithPolicy(v.pol)}, v.opts...)...)
				defer func() { bl.Close(); w.Close() }()
				w.release(b, bl, 1)
				b.ReportAllocs()
				cpu := startCPU(b)
				w.release(b, bl, uint64(1+b.N))
				cpu.stop()
				checkRebuilt(b, bl, sets[b.N%2])
			})
		}
		// A health change rebuilds the picker from the nodes the Balancer
		// holds, with no State to merge: a breaker that opens or closes,
		// an ejection, a quarantine, a slow-start step. This is the
		// picker rebuild alone, the work kitex's createPicker does from
		// its instances. Quarantine takes one node out and puts it back,
		// in turn; each wakes the Balancer's run goroutine, which builds
		// and publishes the picker, and the benchmark waits for it: the
		// two goroutine wake-ups are included.
		for _, v := range []struct {
			name string
			pol  balancer.Policy
		}{
			{"dialtone-health", balancer.RoundRobin()},
			{"dialtone-wrr-health", balancer.WeightedRoundRobin()},
			{"dialtone-p2c-health", balancer.P2C()},
			{"dialtone-maglev-health", balancer.Maglev(0)},
		} {
			b.Run("peer="+v.name+"/n=1000", func(b *testing.B) {
				w := newSeqWatcher(sets)
				bl := balancer.New(w, balancer.WithPolicy(v.pol), noSlowStart)
				defer func() { bl.Close(); w.Close() }()
				w.release(b, bl, 1)
				addr := sets[0][len(sets[0])/2].Addr
				toggle := func(i int) {
					ch := bl.Updated()
					d := time.Duration(0)
					if i%2 == 0 {
						d = time.Hour
					}
					if !bl.Quarantine(addr, d) {
						b.Fatalf("%s is not a node", addr)
					}
					select {
					case <-ch:
					case <-time.After(10 * time.Second):
						b.Fatal("no picker published within 10s of a quarantine change")
					}
				}
				b.ReportAllocs()
				cpu := startCPU(b)
				for i := range b.N {
					toggle(i)
				}
				cpu.stop()
				if b.N%2 == 1 {
					toggle(1) // end the quarantine, for the check below
				}
				for _, n := range bl.Status() {
					if !n.Ready {
						b.Fatalf("%s is not ready once its quarantine ended", n.Endpoint.Addr)
					}
				}
			})
		}
		b.Run("peer=dialtone-handoff/n=1000", func(b *testing.B) {
			w := newFeedWatcher()
			bl := balancer.New(w, balancer.WithPolicy(balancer.RoundRobin()), balancer.WithSlowStart(0, 0))
			defer func() { bl.Close(); w.Close() }()
			version := uint64(1)
			w.send(b, bl, discovery.State{Endpoints: sets[0], Version: version})
			b.ReportAllocs()
			cpu := startCPU(b)
			for i := range b.N {
				version++
				w.send(b, bl, discovery.State{Endpoints: sets[(i+1)%2], Version: version})
			}
			cpu.stop()
			checkRebuilt(b, bl, sets[b.N%2])
		})
		b.Run("peer=dialtone-static/n=1000", func(b *testing.B) {
			w, err := discovery.NewStatic(sets[0]...)
			if err != nil {
				b.Fatal(err)
			}
			bl := balancer.New(w, balancer.WithPolicy(balancer.RoundRobin()), balancer.WithSlowStart(0, 0))
			defer func() { bl.Close(); w.Close() }()
			waitVersion(b, bl, 1)
			b.ReportAllocs()
			cpu := startCPU(b)
			for i := range b.N {
				before := bl.StateVersion()
				if err := w.Update(sets[(i+1)%2]...); err != nil {
					b.Fatal(err)
				}
				waitVersion(b, bl, before+1)
			}
			cpu.stop()
			checkRebuilt(b, bl, sets[b.N%2])
		})
	}

	// Floor: what any Pick that keeps the contract's Result (the endpoint
	// by value, 104 bytes) costs before it chooses anything, built as
	// Balancer.Pick is: an inlined wrapper that copies a ready-made Result
	// out of a function that is not inlined and returns a pointer to it,
	// then Done. Compared with grpc-go's whole round_robin pick in
	// RoundRobin, it says how much of that target the Result's copies
	// alone take: the compiler copies the Result twice, from the pointer
	// into the wrapper's result and from there into the caller's variable.
	// A picker returning only the pointer does the same loop in about
	// 4 ns (scratch run, session 20, not kept).
	ours["Floor"] = func(b *testing.B) {
		eps := endpoints(3, false)
		rs := make([]balancer.Result, len(eps))
		for i := range eps {
			rs[i] = balancer.Result{Endpoint: eps[i], Done: func(error) {}}
		}
		b.Run("peer=dialtone-result", func(b *testing.B) {
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for i := range b.N {
					r, err := resultOf(rs, i)
					if err != nil {
						b.Fatal(err)
					}
					r.Done(nil)
				}
			})
		})
	}

	// Breaker: the success path on per-node breakers, through Begin and End
	// (what the balancer uses; no allocation) and through the two-step
	// Allow + done form (one closure per request, like gobreaker's).
	ours["Breaker"] = func(b *testing.B) {
		// Each call is one closure over the breakers, as gobreaker's is
		// (one indirect call per op on both sides).
		for _, v := range []struct {
			name string
			call func(brks []*breaker.Breaker) func(i int) error
		}{
			{"dialtone", func(brks []*breaker.Breaker) func(int) error {
				return func(i int) error {
					br := brks[i]
					t, err := br.Begin()
					if err == nil {
						br.End(t, nil)
					}
					return err
				}
			}},
			{"dialtone-allow", func(brks []*breaker.Breaker) func(int) error {
				return func(i int) error {
					done, err := brks[i].Allow()
					if err == nil {
						done(nil)
					}
					return err
				}
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
					breakerLoop(b, n, v.call(brks))
				})
			})
		}
	}
}

// seqWatcher is a discovery.Watcher that hands out the States of a
// benchmark back to back: State v lists sets[(v-1)%2]. Next returns the
// next State at once while fewer than the released count have been handed
// out, so the balancer's watch goroutine applies them one after another
// without blocking, and then blocks until release or Close, offering the
// count handed out to release. Only the watch goroutine calls Next, so
// handed and limit need no lock.
type seqWatcher struct {
	sets   [2][]discovery.Endpoint
	handed uint64      // States handed out; the last one's Version
	limit  uint64      // States released
	more   chan uint64 // a new limit
	idle   chan uint64 // handed, offered once every released State is applied
	closed chan struct{}
	once   sync.Once
}

func newSeqWatcher(sets [2][]discovery.Endpoint) *seqWatcher {
	return &seqWatcher{sets: sets, more: make(chan uint64), idle: make(chan uint64), closed: make(chan struct{})}
}

func (w *seqWatcher) Next(ctx context.Context) (discovery.State, error) {
	for w.handed >= w.limit {
		// Idle: every State released is applied and its picker
		// published (the watch goroutine asks for the next one only then).
		select {
		case l := <-w.more:
			w.limit = l
		case w.idle <- w.handed:
		case <-w.closed:
			return discovery.State{}, discovery.ErrClosed
		case <-ctx.Done():
			return discovery.State{}, ctx.Err()
		}
	}
	w.handed++
	return discovery.State{Endpoints: w.sets[(w.handed-1)%2], Version: w.handed}, nil
}

// release lets the balancer take States up to version v and returns once
// it has published the picker built from State v.
func (w *seqWatcher) release(b *testing.B, bl *balancer.Balancer, v uint64) {
	select {
	case w.more <- v:
	case <-time.After(10 * time.Second):
		b.Fatal("the balancer did not ask for a State within 10s")
	}
	select {
	case h := <-w.idle:
		if h != v {
			b.Fatalf("the watcher handed out %d States, want %d", h, v)
		}
	case <-time.After(time.Minute):
		b.Fatalf("the balancer did not apply State version %d within a minute", v)
	}
	if got := bl.StateVersion(); got != v {
		b.Fatalf("the balancer published State version %d, want %d", got, v)
	}
}

func (w *seqWatcher) ResolveNow() {}

func (w *seqWatcher) Close() error {
	w.once.Do(func() { close(w.closed) })
	return nil
}

// resultOf returns a Result the way Balancer.Pick does: it is small
// enough to inline, and copies a ready-made Result that a function that is
// not inlined points it to.
func resultOf(rs []balancer.Result, i int) (balancer.Result, error) {
	r, err := resultAt(rs, i)
	return *r, err
}

//go:noinline
func resultAt(rs []balancer.Result, i int) (*balancer.Result, error) {
	return &rs[i%len(rs)], nil
}

// feedWatcher is a discovery.Watcher whose States the benchmark hands over
// ready-made, so that Rebuild measures the balancer and not discovery.
type feedWatcher struct {
	ch     chan discovery.State
	closed chan struct{}
	once   sync.Once
}

func newFeedWatcher() *feedWatcher {
	return &feedWatcher{ch: make(chan discovery.State), closed: make(chan struct{})}
}

func (w *feedWatcher) Next(ctx context.Context) (discovery.State, error) {
	select {
	case s := <-w.ch:
		return s, nil
	case <-w.closed:
		return discovery.State{}, discovery.ErrClosed
	case <-ctx.Done():
		return discovery.State{}, ctx.Err()
	}
}

func (w *feedWatcher) ResolveNow() {}

func (w *feedWatcher) Close() error {
	w.once.Do(func() { close(w.closed) })
	return nil
}

// send hands s to the balancer and returns once the balancer has applied it
// and published the picker built from it.
func (w *feedWatcher) send(b *testing.B, bl *balancer.Balancer, s discovery.State) {
	select {
	case w.ch <- s:
	case <-time.After(10 * time.Second):
		b.Fatal("the balancer did not take a State within 10s")
	}
	waitVersion(b, bl, s.Version)
}

// waitVersion returns once bl has published a picker built from a State of
// version v or newer.
func waitVersion(b *testing.B, bl *balancer.Balancer, v uint64) {
	timeout := time.After(10 * time.Second)
	for {
		ch := bl.Updated()
		if bl.StateVersion() >= v {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			b.Fatalf("the balancer did not publish State version %d within 10s", v)
		}
	}
}

// checkRebuilt fails b unless bl's picker holds exactly eps, the last set
// it was sent (the two sets differ in their last endpoint).
func checkRebuilt(b *testing.B, bl *balancer.Balancer, eps []discovery.Endpoint) {
	st := bl.Status()
	if len(st) != len(eps) {
		b.Fatalf("the balancer has %d nodes, want %d", len(st), len(eps))
	}
	want := eps[len(eps)-1].Addr
	for _, n := range st {
		if n.Endpoint.Addr == want {
			if !n.Ready {
				b.Fatalf("%s is not ready in the rebuilt picker", want)
			}
			return
		}
	}
	b.Fatalf("the rebuilt picker lacks %s, which only the last set has", want)
}
