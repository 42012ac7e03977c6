package balancer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/rpc"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
	"github.com/dialtone-go/dialtone/internal/logbuf"
	"github.com/dialtone-go/dialtone/internal/returns"
)

var errReset = io.ErrUnexpectedEOF // a transport error: counts as a failure

func TestNoEndpointsErrorNamesServiceAndWhy(t *testing.T) {
	w := discoverytest.New()
	b := New(w, WithService("orders"))
	defer func() { b.Close(); w.Close() }()
	_, err := b.Pick(context.Background())
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrNoEndpoints) || !strings.Contains(err.Error(), `"orders"`) ||
		!strings.Contains(err.Error(), "not answered yet") {
		t.Fatalf("before discovery answered: %v", err)
	}
	w.SetAddrs()
	waitFor(t, b, "the empty set", func(p *picker) bool { return p.err != nil && p.err.Discovery == nil })
	_, err = b.Pick(context.Background())
	if !errors.Is(err, ErrNoEndpoints) || !strings.Contains(err.Error(), "lists none") {
		t.Fatalf("empty set: %v", err)
	}
	w.SetError(errors.New("consul down"))
	waitFor(t, b, "the error", func(p *picker) bool { return p.err != nil && p.err.Discovery != nil })
	_, err = b.Pick(context.Background())
	if !errors.Is(err, ErrNoEndpoints) || !strings.Contains(err.Error(), "consul down") {
		t.Fatalf("empty set with a discovery error: %v", err)
	}
}

func TestBreakerOpenNodesAreNotPickedAndAllOpenFailsFast(t *testing.T) {
	as := addrs(3)
	b, _ := newTest(t, as, WithBreakers(breaker.Config{ConsecutiveFailures: 3, OpenTimeout: time.Hour}),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	// Fail as[0] three times: its breaker opens.
	for range 3 {
		r, err := b.Pick(context.Background(), Exclude(as[1], as[2]))
		if err != nil || r.Endpoint.Addr != as[0] {
			t.Fatalf("Pick = %v, %v", r.Endpoint.Addr, err)
		}
		r.Done(errReset)
	}
	waitFor(t, b, "as[0] out", func(p *picker) bool { return len(p.ready) == 2 })
	got := count(t, b, 100, nil)
	if got[as[0]] != 0 {
		t.Fatalf("an open node was picked %d times", got[as[0]])
	}
	// Application errors and caller cancellations do not trip breakers.
	for _, err := range []error{rpc.ServerError("no such order"), context.Canceled} {
		count(t, b, 30, err)
	}
	if p := b.picker.Load(); len(p.ready) != 2 {
		t.Fatalf("application errors or cancellation opened breakers: %d ready", len(p.ready))
	}
	// Fail the rest: every breaker open, Pick fails at once with ErrUnavailable.
	for range 10 {
		if r, err := b.Pick(context.Background()); err == nil {
			r.Done(errReset)
		}
	}
	waitFor(t, b, "all open", func(p *picker) bool { return len(p.ready) == 0 })
	start := time.Now()
	_, err := b.Pick(context.Background())
	took := time.Since(start)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrUnavailable) || e.Open != 3 || e.Total != 3 || !strings.Contains(err.Error(), "3 with an open breaker") {
		t.Fatalf("all open: %v", err)
	}
	t.Logf("fail-fast Pick with every breaker open: %v", took)
}

func TestHalfOpenGetsOnlyProbesThenCloses(t *testing.T) {
	as := addrs(2)
	b, _ := newTest(t, as, WithPolicy(RoundRobin()), WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: 300 * time.Millisecond, MaxOpenTimeout: 300 * time.Millisecond}),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	r, _ := b.Pick(context.Background(), Exclude(as[1]))
	r.Done(errReset)
	waitFor(t, b, "as[0] open", func(p *picker) bool { return len(p.ready) == 1 })
	waitFor(t, b, "as[0] half-open, back in the picker", func(p *picker) bool { return len(p.ready) == 2 })
	// Half-open: one probe at a time. Hold the probe; other picks go elsewhere.
	var probe Result
	for range 10 {
		r, err := b.Pick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r.Endpoint.Addr == as[0] {
			if probe.Done != nil {
				t.Fatal("a half-open node got a second request while its probe was out")
			}
			probe = r
			continue
		}
		r.Done(nil)
	}
	if probe.Done == nil {
		t.Fatal("the half-open node got no probe in 10 picks")
	}
	probe.Done(nil)
	if st := (b.set.Load().byAddr())[as[0]].breakerState(); st != breaker.Closed {
		t.Fatalf("after a successful probe the breaker is %v", st)
	}
}

// When the only node is half-open with its probe out, Pick's error says so
// instead of counting no open breaker and nothing else.
func TestUnavailableErrorCountsRefusingBreakers(t *testing.T) {
	as := addrs(1)
	b, _ := newTest(t, as, WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: 100 * time.Millisecond, MaxOpenTimeout: 100 * time.Millisecond}),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	r, _ := b.Pick(context.Background())
	r.Done(errReset)
	waitFor(t, b, "open", func(p *picker) bool { return len(p.ready) == 0 })
	waitFor(t, b, "half-open", func(p *picker) bool { return len(p.ready) == 1 })
	probe, err := b.Pick(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Done(nil)
	_, err = b.Pick(context.Background())
	var be *Error
	if !errors.As(err, &be) || !errors.Is(err, ErrUnavailable) || be.Refused != 1 ||
		!strings.Contains(err.Error(), "1 refusing (breaker half-open with its probe out") {
		t.Fatalf("Pick while the only node's probe is out: %v (%+v)", err, be)
	}
}

// A node whose breaker opened carries the failures in its P2C latency
// estimate, which falls only as samples come. Once its breaker closes again
// it must get its share of picks at once, not probe traffic until its
// probes have brought the estimate down.
func TestP2CNodeBackFromOpenBreakerGetsItsShare(t *testing.T) {
	as := addrs(3)
	b, _ := newTest(t, as, WithPolicy(P2C()),
		WithBreakers(breaker.Config{ConsecutiveFailures: 5, OpenTimeout: 100 * time.Millisecond, MaxOpenTimeout: 100 * time.Millisecond}),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	nodes := b.set.Load().byAddr()
	sick := nodes[as[0]]
	sick.cost.Store(math.Float64bits(float64(250 * time.Millisecond))) // what its failures left
	onlySick := Exclude(as[1], as[2])
	for range 5 {
		r, err := b.Pick(context.Background(), onlySick)
		if err != nil || r.Endpoint.Addr != as[0] {
			t.Fatalf("pick with the others excluded: %s, %v", r.Endpoint.Addr, err)
		}
		r.Done(errReset)
	}
	waitFor(t, b, "the sick node's breaker open", func(p *picker) bool { return len(p.ready) == 2 })
	waitFor(t, b, "the sick node half-open", func(p *picker) bool { return len(p.ready) == 3 })
	probe, err := b.Pick(context.Background(), onlySick)
	if err != nil || probe.Endpoint.Addr != as[0] {
		t.Fatalf("probe pick: %s, %v", probe.Endpoint.Addr, err)
	}
	probe.Done(nil) // the breaker closes
	typical := max(nodes[as[1]].costNs(), nodes[as[2]].costNs())
	waitFor(t, b, "the node that is back to have a typical latency", func(*picker) bool {
		return sick.costNs() <= typical
	})
	// Equal latencies: outstanding requests spread evenly over all three.
	held := hold(t, b, 300)
	got := map[string]int{}
	for _, r := range held {
		got[r.Endpoint.Addr]++
		r.Done(nil)
	}
	within(t, "outstanding requests on the node that is back", got[as[0]], 100, 5)
}

// The cap rounds down but never below one node. A share of +Inf (or
// anything above 1) means no cap short of every node, and NaN the default,
// as the other shares of this package treat NaN: not a cap of one node,
// which a float-to-int conversion of their product gave.
func TestEjectionCapRounding(t *testing.T) {
	for _, tc := range []struct {
		n     int
		share float64
		want  int
	}{{3, 0.1, 1}, {1, 0.1, 1}, {10, 0.1, 1}, {10, 0.3, 3}, {20, 0.1, 2}, {7, 0.5, 3}, {0, 0.1, 0},
		{100, math.Inf(1), 100}, {100, 1e300, 100}, {100, 2, 100}, {100, math.NaN(), 10}, {100, math.Inf(-1), 10}} {
		c := OutlierConfig{MaxEjectedShare: tc.share}.withDefaults()
		if got := c.maxEjected(tc.n); got != tc.want {
			t.Errorf("maxEjected(%d nodes, %v) = %d, want %d", tc.n, tc.share, got, tc.want)
		}
	}
}

func TestOutlierEjectionIsCapped(t *testing.T) {
	as := addrs(3)
	b, _ := newTest(t, as, WithoutBreakers(), WithPanicThreshold(0),
		WithOutlierDetection(OutlierConfig{ConsecutiveFailures: 3, MaxEjectedShare: 0.1}))
	for _, a := range as[:2] { // two bad nodes
		for range 3 {
			r, _ := b.Pick(context.Background(), Exclude(others(as, a)...))
			if r.Endpoint.Addr != a {
				t.Fatalf("picked %s, want %s", r.Endpoint.Addr, a)
			}
			r.Done(errReset)
		}
	}
	waitFor(t, b, "one ejection", func(p *picker) bool { return len(p.ready) == 2 })
	st := b.Status()
	ejected := 0
	for _, s := range st {
		if s.Ejected {
			ejected++
		}
	}
	if ejected != 1 {
		t.Fatalf("%d of 3 nodes ejected with a 10%% cap, want exactly 1: %+v", ejected, st)
	}
}

// The requests in flight on a node when it is ejected fail afterwards
// (it hung, say). Their failures must not eject it again, for twice as
// long, the moment its ejection ends: it got no request in between. The
// run goroutine's wake-up at the end of the ejection used to come before
// the interval's sweep forgot them.
func TestEjectionEndsWithoutStaleFailures(t *testing.T) {
	as := addrs(3)
	b, _ := newTest(t, as, WithoutBreakers(), WithPanicThreshold(0), WithPolicy(RoundRobin()),
		WithOutlierDetection(OutlierConfig{ConsecutiveFailures: 3, BaseEjection: 300 * time.Millisecond,
			Interval: time.Hour, Jitter: 0.01, MaxEjectedShare: 0.5}))
	bad := as[0]
	var held []Result
	for len(held) < 6 {
		r, err := b.Pick(context.Background(), Exclude(others(as, bad)...))
		if err != nil || r.Endpoint.Addr != bad {
			t.Fatalf("pick %v, %v; want %s", r.Endpoint.Addr, err, bad)
		}
		held = append(held, r)
	}
	for _, r := range held[:3] {
		r.Done(errReset)
	}
	waitFor(t, b, "the ejection", func(p *picker) bool { return len(p.ready) == 2 })
	ejectedAt := time.Now()
	for _, r := range held[3:] { // the requests picked before it
		r.Done(errReset)
	}
	waitFor(t, b, "the node back", func(p *picker) bool { return len(p.ready) == 3 })
	if back := time.Since(ejectedAt); back > 750*time.Millisecond {
		t.Fatalf("the node came back %v after a 300 ms ejection: ejected again for its stale failures", back)
	}
	b.mu.Lock()
	ejections := b.nodes[bad].ejections
	b.mu.Unlock()
	if ejections != 1 {
		t.Fatalf("the node was ejected %d times, want 1", ejections)
	}
}

func others(all []string, not string) []string {
	var out []string
	for _, a := range all {
		if a != not {
			out = append(out, a)
		}
	}
	return out
}

// outlierRR returns a round-robin balancer over n nodes, without
// breakers unless opts bring them, whose outlier detection ejects a node
// after 3 consecutive failures for 10 s (times its multiplier, almost no
// jitter), at most share of the set at once; its watcher; and the nodes'
// addresses. Call it inside a bubble: it waits for the first picker.
func outlierRR(t *testing.T, n int, share float64, opts ...Option) (*Balancer, *discoverytest.Watcher, []string) {
	as := addrs(n)
	w := discoverytest.NewAddrs(as...)
	t.Cleanup(func() { w.Close() })
	opts = append([]Option{WithPolicy(RoundRobin()), WithPanicThreshold(0), WithoutBreakers(),
		WithOutlierDetection(OutlierConfig{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second,
			Jitter: 0.0001, MaxEjectedShare: share})}, opts...)
	b := New(w, opts...)
	t.Cleanup(func() { b.Close() })
	synctest.Wait()
	return b, w, as
}

// failOn picks addr n times (every other node of as excluded) and reports
// each request a transport failure, then waits for the balancer to act.
// Call it inside a bubble.
func failOn(t *testing.T, b *Balancer, as []string, addr string, n int) {
	t.Helper()
	for range n {
		r, err := b.Pick(context.Background(), Exclude(others(as, addr)...))
		if err != nil || r.Endpoint.Addr != addr {
			t.Fatalf("pick %v, %v; want %s", r.Endpoint.Addr, err, addr)
		}
		r.Done(errReset)
	}
	synctest.Wait()
}

func TestPanicModePicksAmongAll(t *testing.T) {
	as := addrs(4)
	// Round robin: every node gets picks (P2C would keep off the costliest).
	b, _ := newTest(t, as, WithPolicy(RoundRobin()), WithoutBreakers())
	for _, a := range as[:3] {
		b.Quarantine(a, time.Hour)
	}
	waitFor(t, b, "panic", func(p *picker) bool { return p.panic })
	got := count(t, b, 400, nil)
	for _, a := range as {
		if got[a] == 0 {
			t.Fatalf("panic mode with 1 of 4 healthy: %v, want every node used", got)
		}
	}
	// Above the threshold, quarantined nodes are left out.
	b2, _ := newTest(t, as, WithoutBreakers())
	b2.Quarantine(as[0], time.Hour)
	waitFor(t, b2, "3 ready", func(p *picker) bool { return len(p.ready) == 3 && !p.panic })
	if got := count(t, b2, 300, nil); got[as[0]] != 0 {
		t.Fatalf("a quarantined node was picked %d times", got[as[0]])
	}
}

func TestQuarantineEnds(t *testing.T) {
	as := addrs(3)
	b, _ := newTest(t, as, WithoutBreakers())
	if b.Quarantine("10.9.9.9:1", time.Second) {
		t.Fatal("Quarantine of an unknown address reported true")
	}
	if !b.Quarantine(as[1], 300*time.Millisecond) {
		t.Fatal("Quarantine of a node reported false")
	}
	waitFor(t, b, "quarantined", func(p *picker) bool { return len(p.ready) == 2 })
	waitFor(t, b, "released", func(p *picker) bool { return len(p.ready) == 3 })
	// A quarantine of 0 ends one early (a dial that hung, then succeeded).
	b.Quarantine(as[2], time.Hour)
	waitFor(t, b, "quarantined for an hour", func(p *picker) bool { return len(p.ready) == 2 })
	if !b.Quarantine(as[2], 0) {
		t.Fatal("Quarantine(addr, 0) of a node reported false")
	}
	waitFor(t, b, "released early", func(p *picker) bool { return len(p.ready) == 3 })
}

func TestExcludeIsAPreference(t *testing.T) {
	as := addrs(3)
	b, _ := newTest(t, as, WithoutBreakers())
	got := count(t, b, 100, nil, Exclude(as[0], as[1]))
	if got[as[2]] != 100 {
		t.Fatalf("with two excluded: %v", got)
	}
	got = count(t, b, 30, nil, Exclude(as...))
	if len(got) == 0 {
		t.Fatal("excluding every node failed the pick")
	}
}

// Several Exclude options on one Pick add up (a caller may pass the nodes
// it tried and the nodes it wants to avoid apart), whatever comes between
// them, and merging them allocates nothing.
func TestSeveralExcludesAddUp(t *testing.T) {
	as := addrs(3)
	for _, pol := range policies {
		t.Run(pol.name, func(t *testing.T) {
			b, _ := newTest(t, as, WithPolicy(pol.p()), WithoutBreakers())
			got := count(t, b, 100, nil, Exclude(as[0]), HashKey("user-42"), Exclude(as[1]))
			if got[as[2]] != 100 {
				t.Fatalf("with %s and %s excluded by two options: %v", as[0], as[1], got)
			}
			got = count(t, b, 100, nil, Exclude(as[1]), Exclude(), Exclude(as[0]))
			if got[as[2]] != 100 {
				t.Fatalf("with an empty Exclude between two: %v", got)
			}
			ctx := context.Background()
			if n := testing.AllocsPerRun(1000, func() {
				r, err := b.Pick(ctx, Exclude(as[0]), Exclude(as[1]))
				if err != nil {
					t.Fatal(err)
				}
				r.Done(nil)
			}); n != 0 {
				t.Fatalf("Pick with two Exclude options: %v allocations, want 0", n)
			}
		})
	}
}

func TestCloseFailsPicksAndIsIdempotent(t *testing.T) {
	b, _ := newTest(t, addrs(2))
	b.Close()
	b.Close()
	if _, err := b.Pick(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pick after Close: %v", err)
	}
}

// Close, called from two goroutines at once while picks are in flight and
// discovery sends an update storm, returns (its goroutines gone: goleak),
// and every later Pick fails with ErrClosed, whatever discovery still
// sends. The Done of a pick made before Close, called after it from
// another goroutine, neither blocks nor leaves the node's request in flight.
// And a Balancer whose watcher never answers closes too.
func TestConcurrentCloseDuringAnUpdateStormWithPicksInFlight(t *testing.T) {
	bounded := func(what string, fn func()) { t.Helper(); returns.Within(t, 2*time.Second, what, fn) }
	as := addrs(8)
	for _, p := range []Policy{RoundRobin(), P2C(), Maglev(0)} {
		t.Run(p.Name(), func(t *testing.T) {
			b, w := newTest(t, as, WithPolicy(p), WithBreakers(breaker.Config{}))
			held := make(chan Result, 1024)
			var picks, updates atomic.Uint64
			stopPicks := returns.Loop(4, func() {
				r, err := b.Pick(context.Background(), HashKey(as[picks.Add(1)%uint64(len(as))]))
				if err != nil {
					return
				}
				select {
				case held <- r: // ended after Close, elsewhere
				default:
					r.Done(nil)
				}
			})
			stopUpdates := returns.Loop(1, func() { w.SetAddrs(as[:4+updates.Add(1)%5]...) })
			time.Sleep(50 * time.Millisecond)
			bounded("two concurrent Closes", func() {
				var cw sync.WaitGroup
				cw.Go(func() { b.Close() })
				cw.Go(func() { b.Close() })
				cw.Wait()
			})
			w.SetAddrs(as...)
			if _, err := b.Pick(context.Background()); !errors.Is(err, ErrClosed) {
				t.Fatalf("Pick right after Close = %v; want ErrClosed", err)
			}
			stopPicks()
			stopUpdates()
			close(held)
			bounded("Done after Close", func() {
				var dw sync.WaitGroup
				for r := range held {
					dw.Go(func() { r.Done(errReset) })
				}
				dw.Wait()
			})
			if _, err := b.Pick(context.Background()); !errors.Is(err, ErrClosed) {
				t.Fatalf("Pick after Close and an update = %v; want ErrClosed", err)
			}
			for _, s := range b.Status() {
				if s.InFlight != 0 {
					t.Errorf("%s: %d in flight after every Done", s.Endpoint.Addr, s.InFlight)
				}
			}
		})
	}
	t.Run("silent watcher", func(t *testing.T) {
		w := discoverytest.New()
		defer w.Close()
		b := New(w)
		bounded("Close of a Balancer whose watcher never answered", func() { b.Close() })
		if _, err := b.Pick(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Pick after Close = %v; want ErrClosed", err)
		}
	})
}

func TestConcurrentPickDoneAndUpdates(t *testing.T) {
	as := addrs(20)
	for _, p := range []Policy{RoundRobin(), Random(), WeightedRoundRobin(), P2C(), Maglev(0)} {
		t.Run(p.Name(), func(t *testing.T) {
			b, w := newTest(t, as, WithPolicy(p), WithBreakers(breaker.Config{OpenTimeout: 10 * time.Millisecond}))
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := 0; ctx.Err() == nil && i < 20000; i++ {
						r, err := b.Pick(ctx, HashKey(as[i%len(as)]), Exclude(as[g]))
						if err != nil {
							continue
						}
						if i%7 == 0 {
							r.Done(errReset)
						} else {
							r.Done(nil)
						}
						if i%500 == 0 {
							b.Quarantine(as[i%len(as)], time.Millisecond)
							_ = b.Status()
						}
					}
				})
			}
			wg.Go(func() {
				for i := 0; ctx.Err() == nil && i < 200; i++ {
					w.SetAddrs(as[:10+i%10]...)
				}
			})
			wg.Wait()
			for _, s := range b.Status() {
				if s.InFlight != 0 {
					t.Fatalf("%s: %d in flight after every Done", s.Endpoint.Addr, s.InFlight)
				}
			}
		})
	}
}

// Requests the breaker admits into one bucket of its window share one Done
// function, built once: each Done still counts its own request, so the
// breaker trips at exactly ConsecutiveFailures, and Pick plus Done with
// breakers allocates nothing.
func TestSharedDoneCountsEachRequestOnce(t *testing.T) {
	as := addrs(1)
	b, _ := newTest(t, as, WithPolicy(RoundRobin()),
		WithBreakers(breaker.Config{ConsecutiveFailures: 5, Window: time.Hour, OpenTimeout: time.Hour}),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	if n := testing.AllocsPerRun(1000, func() {
		r, err := b.Pick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		r.Done(nil)
	}); n != 0 {
		t.Fatalf("Pick+Done with breakers: %v allocations, want 0", n)
	}
	held := hold(t, b, 4)
	// A func value is a pointer to its closure: compare the closures.
	closure := func(f func(error)) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&f)) }
	if closure(held[0].Done) != closure(held[3].Done) {
		// The window's buckets are 6 minutes long: these picks are
		// microseconds apart.
		t.Fatal("picks of one bucket got different Done functions")
	}
	for _, r := range held {
		r.Done(errReset)
	}
	if st := b.breakers.Get(as[0]).State(); st != breaker.Closed {
		t.Fatalf("breaker %v after 4 failures, want closed (threshold 5)", st)
	}
	r, err := b.Pick(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.Done(errReset)
	if st := b.breakers.Get(as[0]).State(); st != breaker.Open {
		t.Fatalf("breaker %v after 5 failures, want open", st)
	}
}

// A half-open probe's Done is its own: a caller's second Done on a probe
// does nothing, and a second Done on another pick cannot end a probe. (A
// pooled Done, handed on to the next pick that needs one, once let the
// first probe's second Done end the second probe as a failure, re-opening
// a node whose probe succeeded.)
func TestSecondDoneCannotEndAProbe(t *testing.T) {
	as := addrs(2)
	b, _ := newTest(t, as, WithPolicy(RoundRobin()),
		WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: 50 * time.Millisecond,
			MaxOpenTimeout: 50 * time.Millisecond, Jitter: -1}),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	for _, a := range as {
		r, _ := b.Pick(context.Background(), Exclude(others(as, a)...))
		r.Done(errReset)
		if st := b.breakers.Get(a).State(); st == breaker.Closed {
			t.Fatalf("%s is still closed after a failure (ConsecutiveFailures 1)", a)
		}
	}
	// Both tripped. No moment with both open is waited for: the first is
	// half-open again 50 ms after its trip, which a descheduled test
	// goroutine can miss (or reach only after the second trip).
	halfOpen := func(a string) bool { return b.breakers.Get(a).State() == breaker.HalfOpen }
	waitFor(t, b, "both half-open", func(p *picker) bool { return len(p.ready) == 2 && halfOpen(as[0]) && halfOpen(as[1]) })
	first, err := b.Pick(context.Background(), Exclude(as[1]))
	if err != nil || first.Endpoint.Addr != as[0] {
		t.Fatalf("first probe: %s, %v; want %s", first.Endpoint.Addr, err, as[0])
	}
	first.Done(nil) // as[0]'s probe succeeded: it closes
	second, err := b.Pick(context.Background(), Exclude(as[0]))
	if err != nil || second.Endpoint.Addr != as[1] {
		t.Fatalf("second probe: %s, %v; want %s", second.Endpoint.Addr, err, as[1])
	}
	first.Done(errReset) // the caller's bug: a second Done on the first probe
	if st := b.breakers.Get(as[0]).State(); st != breaker.Closed {
		t.Fatalf("%s is %v: the second Done of its probe counted as a failure", as[0], st)
	}
	if st := b.breakers.Get(as[1]).State(); st != breaker.HalfOpen {
		t.Fatalf("%s is %v before its probe ended: the first probe's second Done ended it", as[1], st)
	}
	second.Done(nil) // as[1]'s probe succeeded
	if st := b.breakers.Get(as[1]).State(); st != breaker.Closed {
		t.Fatalf("%s is %v after its probe succeeded, want closed", as[1], st)
	}
}

// Error messages name the service, say when it has no name, and an
// ErrUnavailable on a stale set says discovery is failing too.
func TestErrorMessages(t *testing.T) {
	boom := errors.New("registry down")
	for _, tc := range []struct {
		e    Error
		want []string
	}{
		{Error{Service: "orders", Kind: ErrNoEndpoints}, []string{`service "orders"`, "discovery lists none"}},
		{Error{Kind: ErrNoEndpoints}, []string{"unnamed service", "WithService"}},
		{Error{Service: "orders", Kind: ErrUnavailable, Total: 3, Open: 3, Discovery: boom},
			[]string{"3 with an open breaker", "discovery is failing too", "registry down"}},
	} {
		msg := tc.e.Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q does not say %q", msg, w)
			}
		}
	}
}

// An ejection lasts at most MaxEjection, jitter included, and never a
// negative time, whatever the Jitter.
func TestEjectionTimeIsCappedAfterJitter(t *testing.T) {
	for _, jitter := range []float64{0.15, 1.5} {
		as := addrs(3)
		cfg := OutlierConfig{BaseEjection: 30 * time.Second, MaxEjection: 300 * time.Second, Jitter: jitter, Interval: time.Hour}
		b, _ := newTest(t, as, WithOutlierDetection(cfg))
		n := b.set.Load().byAddr()[as[0]]
		b.mu.Lock()
		for range 200 {
			n.ejections = 20 // 600 s before the cap
			n.setEjected(0)
			now := mono()
			b.eject(n, now, "test")
			if d := time.Duration(n.ejectedUntil - now); d <= 0 || d > cfg.MaxEjection {
				b.mu.Unlock()
				t.Fatalf("jitter %v: ejected for %v; want (0, %v]", jitter, d, cfg.MaxEjection)
			}
		}
		n.setEjected(0)
		b.mu.Unlock()
	}
}

// A node back from an open breaker is reseeded at the median latency of the
// others (reseed). A fast sampled success afterwards must not raise its
// cost: observe blended it into the estimate the node had before its
// failures (calm), which reseed left in place, so the first fast request
// after the reseed put a node that was slow before it failed back at that
// old estimate, and P2C shunned it for the minute the EWMA takes to decay.
// (The same race made TestP2CNodeBackFromOpenBreakerGetsItsShare time out
// now and then: the probe's own sample, taken after End, can land after
// the rebuild that End triggers.)
func TestReseededNodeIsNotRaisedByAFastSample(t *testing.T) {
	as := addrs(3)
	b, _ := newTest(t, as, WithPolicy(P2C(WithProbeAfter(0))),
		WithBreakers(breaker.Config{ConsecutiveFailures: 5, OpenTimeout: 100 * time.Millisecond, MaxOpenTimeout: 100 * time.Millisecond}),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	nodes := b.set.Load().byAddr()
	sick := nodes[as[0]]
	sick.cost.Store(math.Float64bits(float64(100 * time.Millisecond))) // slow before it failed
	onlySick := Exclude(as[1], as[2])
	pick := func(sampled bool) Result {
		t.Helper()
		if sampled {
			b.samp.mask.Store(0) // every pick sampled
		} else {
			b.samp.mask.Store(math.MaxUint64) // none
		}
		r, err := b.Pick(context.Background(), onlySick)
		if err != nil || r.Endpoint.Addr != as[0] {
			t.Fatalf("pick with the others excluded: %s, %v", r.Endpoint.Addr, err)
		}
		return r
	}
	for range 5 {
		pick(true).Done(errReset)
	}
	waitFor(t, b, "the sick node's breaker open", func(p *picker) bool { return len(p.ready) == 2 })
	waitFor(t, b, "the sick node half-open", func(p *picker) bool { return len(p.ready) == 3 })
	pick(false).Done(nil) // the probe, not sampled: the breaker closes
	typical := max(nodes[as[1]].costNs(), nodes[as[2]].costNs())
	waitFor(t, b, "the node that is back reseeded", func(*picker) bool { return sick.costNs() <= typical })
	pick(true).Done(nil) // a fast request, sampled
	if got := time.Duration(sick.costNs()); got > 2*time.Duration(typical) {
		t.Fatalf("a fast sample raised the reseeded node's cost from %v to %v", time.Duration(typical), got)
	}
}

// A node whose ejection the cap refused, and whose breaker then kept it
// out of traffic, must not be ejected later, when another node's ejection
// ends, for the same failures: they are stale (it has had no request
// since), its breaker already dealt with them, and the ejection would keep
// it out past its breaker's half-open time, for as long again.
func TestCappedEjectionIsNotDeferredOntoStaleFailures(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b, _, as := outlierRR(t, 3, 0.1, WithBreakers(breaker.Config{ConsecutiveFailures: 3, OpenTimeout: 12 * time.Second, Jitter: -1})) // one node of 3 at once
		fail := func(addr string) { failOn(t, b, as, addr, 3) }
		fail(as[0]) // ejected for 10 s, breaker open for 12 s
		time.Sleep(time.Second)
		fail(as[1]) // ejection refused by the cap; breaker open for 12 s (until 13 s)
		if s := status(b, as[1]); s.Ejected || s.Breaker != breaker.Open {
			t.Fatalf("second bad node: %+v, want not ejected, breaker open", s)
		}
		time.Sleep(12*time.Second + 100*time.Millisecond) // past its breaker's open period
		synctest.Wait()
		if s := status(b, as[1]); s.Ejected || !s.Ready || s.Breaker != breaker.HalfOpen {
			t.Fatalf("13 s after its failures, with no request since: %+v; want half-open and ready, not ejected", s)
		}
	})
}

// The other side: a node the cap kept in that still fails in rotation is
// ejected by its next run once a slot is free.
func TestCappedNodeStillFailingIsEjectedLater(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b, _, as := outlierRR(t, 3, 0.1)
		failOn(t, b, as, as[0], 3)
		failOn(t, b, as, as[1], 5) // capped
		if status(b, as[1]).Ejected {
			t.Fatal("ejected past the cap")
		}
		time.Sleep(10*time.Second + 10*time.Millisecond)
		synctest.Wait()
		if status(b, as[0]).Ejected {
			t.Fatal("first ejection did not end")
		}
		if !status(b, as[1]).Ejected {
			failOn(t, b, as, as[1], 3) // a new run
		}
		if !status(b, as[1]).Ejected {
			t.Fatalf("a node still failing in rotation was not ejected once the cap allowed: %+v", status(b, as[1]))
		}
	})
}

// The cap on ejected nodes is a share of the set: when discovery shrinks
// the set under nodes already ejected, the cap shrinks with it, and the
// ejections past it end (the soonest first), rather than keep the smaller
// set short of more nodes than the cap allows for up to MaxEjection.
func TestEjectionCapFollowsTheSetWhenItShrinks(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b, w, as := outlierRR(t, 20, 0.1) // 2 of 20, 1 of 5
		for i, bad := range as[:2] {
			failOn(t, b, as, bad, 3)
			if i == 0 {
				time.Sleep(time.Second) // the second ejection ends later
			}
		}
		if !status(b, as[0]).Ejected || !status(b, as[1]).Ejected {
			t.Fatalf("want 2 ejected: %+v", b.Status())
		}
		w.SetAddrs(as[:5]...)
		synctest.Wait()
		ejected := 0
		for _, s := range b.Status() {
			if s.Ejected {
				ejected++
			}
		}
		if ejected > 1 || len(b.picker.Load().ready) < 4 {
			t.Fatalf("after the set shrank to 5: %d ejected, %d ready; the cap allows 1 of 5", ejected, len(b.picker.Load().ready))
		}
		if !status(b, as[1]).Ejected {
			t.Fatal("the ejection that ends last should stay")
		}
	})
}

// The panic threshold is a share: exactly that share of healthy nodes is
// not below it, whatever the float error of share x n (0.07 x 100 is
// 7.000000000000001, which counted 7 healthy nodes of 100 as below 7 %).
func TestPanicThresholdShareIsExact(t *testing.T) {
	for _, n := range []int{3, 10, 100, 1000} {
		for pct := 1; pct < 100; pct++ {
			share := float64(pct) / 100
			if n*pct%100 != 0 {
				continue // the share is no whole number of nodes
			}
			k := n * pct / 100
			if belowShare(k, n, share) {
				t.Errorf("%d healthy of %d counted below the share %v", k, n, share)
			}
			if !belowShare(k-1, n, share) {
				t.Errorf("%d healthy of %d not counted below the share %v", k-1, n, share)
			}
		}
	}
}

// A half-open node must get its probe whatever the policy: with P2C's
// probing off (WithProbeAfter(0), documented as a tuning knob), the node
// still carries the failure penalty that opened its breaker, P2C always
// prefers the other node of every pair, and the probe that would close the
// breaker (and reseed the node) is never sent: the node is out for good.
func TestP2CHalfOpenNodeGetsItsProbeWithoutProbing(t *testing.T) {
	bubble(t, func(t *testing.T) {
		as := addrs(3)
		w := discoverytest.NewAddrs(as...)
		defer w.Close()
		b := New(w, WithPolicy(P2C(WithProbeAfter(0))),
			WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Second, MaxOpenTimeout: time.Second, Jitter: -1}),
			WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
		defer b.Close()
		for len(b.picker.Load().ready) != 3 {
			time.Sleep(time.Millisecond)
		}
		bad := as[0]
		r, err := b.Pick(context.Background(), Exclude(others(as, bad)...))
		if err != nil || r.Endpoint.Addr != bad {
			t.Fatalf("pick %v, %v; want %s", r.Endpoint.Addr, err, bad)
		}
		r.Done(errReset) // opens its breaker
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if st := status(b, bad).Breaker; st != breaker.HalfOpen {
			t.Fatalf("after its open period the breaker is %v, want half-open", st)
		}
		got := 0
		pickBad := func() (Result, bool) {
			for range 1000 {
				r, err := b.Pick(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if r.Endpoint.Addr == bad {
					return r, true
				}
				r.Done(nil)
				time.Sleep(time.Millisecond)
			}
			return Result{}, false
		}
		// The caller gives up on the first probe: it says nothing of the
		// node, and the next probe must follow.
		if r, ok := pickBad(); !ok {
			t.Fatalf("a half-open node got no probe in 1000 picks over 1 s; breaker %v, latency %v",
				status(b, bad).Breaker, status(b, bad).Latency)
		} else {
			r.Done(context.Canceled)
		}
		synctest.Wait()
		for range 1000 {
			r, err := b.Pick(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if r.Endpoint.Addr == bad {
				got++
			}
			r.Done(nil)
			time.Sleep(time.Millisecond)
		}
		if got == 0 {
			t.Fatalf("a half-open node whose first probe was cancelled got no probe in 1000 picks over 1 s; breaker %v, latency %v",
				status(b, bad).Breaker, status(b, bad).Latency)
		}
		if st := status(b, bad).Breaker; st != breaker.Closed {
			t.Fatalf("after a successful probe the breaker is %v", st)
		}
	})
}

// A breaker that opens takes its node out of the picker at once, however
// long the WithBreakerEvents observer takes: the observer ran before the
// run goroutine was woken, so a slow one left the open node in the picker
// until the next outlier review (an hour here).
func TestSlowBreakerObserverDoesNotDelayThePicker(t *testing.T) {
	as := addrs(2)
	release := make(chan struct{})
	// Round robin: P2C's first picks of new nodes wake the run goroutine
	// themselves (see p2cSel.claim).
	b, _ := newTest(t, as, WithPanicThreshold(0), WithPolicy(RoundRobin()),
		WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour}),
		WithOutlierDetection(OutlierConfig{Disabled: true, Interval: time.Hour}),
		WithBreakerEvents(func(breaker.Event) { <-release }))
	t.Cleanup(func() { close(release) }) // before Close, which waits for the observer
	r, err := b.Pick(context.Background(), Exclude(as[1]))
	if err != nil || r.Endpoint.Addr != as[0] {
		t.Fatalf("Pick: %v, %v", r.Endpoint.Addr, err)
	}
	r.Done(errReset) // opens as[0]'s breaker
	waitFor(t, b, "the open node out of the picker", func(p *picker) bool { return len(p.ready) == 1 })
}

// Panic mode picks among the nodes whose breaker is not open (doc.go): an
// ejected or quarantined node comes back into the picker, a node with an
// open breaker does not. A picker that took in the open ones too would
// still have their breakers refuse each pick, but Status would report them
// Ready, and every pick would walk through refusing breakers first.
func TestPanicModeLeavesOpenBreakersOut(t *testing.T) {
	as := addrs(4)
	b, _ := newTest(t, as, WithPolicy(RoundRobin()),
		WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour, Jitter: -1}),
		WithOutlierDetection(OutlierConfig{Disabled: true}))
	for _, a := range as[:2] {
		r, err := b.Pick(context.Background(), Exclude(others(as, a)...))
		if err != nil || r.Endpoint.Addr != a {
			t.Fatalf("Pick = %v, %v; want %s", r.Endpoint.Addr, err, a)
		}
		r.Done(errReset)
	}
	b.Quarantine(as[2], time.Hour) // 1 healthy of 4: panic
	waitFor(t, b, "panic", func(p *picker) bool { return p.panic })
	for _, s := range b.Status() {
		open := s.Endpoint.Addr == as[0] || s.Endpoint.Addr == as[1]
		if s.Ready == open {
			t.Fatalf("panic mode: %s (breaker %v, quarantined %v) ready %v; want ready exactly when its breaker is not open",
				s.Endpoint.Addr, s.Breaker, s.Quarantined, s.Ready)
		}
	}
	if got := count(t, b, 40, nil); got[as[2]] == 0 || got[as[3]] == 0 || len(got) != 2 {
		t.Fatalf("panic-mode picks %v; want the quarantined and the healthy node only", got)
	}
}

// The ejection multiplier decays: a node calm for BaseEjection after its
// ejection ended has one ejection forgiven (OutlierConfig.Interval: "ended,
// multiplier decayed"), so that a node ejected once long ago is ejected for
// BaseEjection again, not for twice as long.
func TestEjectionMultiplierDecaysAfterCalm(t *testing.T) {
	bubble(t, func(t *testing.T) {
		b, _, as := outlierRR(t, 3, 0.5)
		fail := func() { failOn(t, b, as, as[0], 3) }
		fail() // first ejection: 10 s
		if !status(b, as[0]).Ejected {
			t.Fatal("not ejected after 3 failures")
		}
		time.Sleep(11 * time.Second) // the ejection ends
		synctest.Wait()
		if status(b, as[0]).Ejected {
			t.Fatal("still ejected 11 s into a 10 s ejection")
		}
		time.Sleep(12 * time.Second) // calm for more than BaseEjection: the multiplier decays
		synctest.Wait()
		fail() // ejected again, for BaseEjection x 1
		time.Sleep(10*time.Second + 500*time.Millisecond)
		synctest.Wait()
		if s := status(b, as[0]); s.Ejected {
			t.Fatalf("10.5 s into an ejection after a calm of 12 s (> BaseEjection): still ejected (%+v); the multiplier did not decay", s)
		}
	})
}

// A registry request that timed out is the registry's, not the caller's:
// through a balancer Error, errors.Is must not find context.DeadlineExceeded
// (or Canceled) in the discovery error, or a caller would take it for its
// own deadline's end (newcomer review: a Call with a 6 s deadline returned
// after 4 s, etcd's list timeout inside, and errors.Is(err,
// context.DeadlineExceeded) held). The rest of the discovery error stays
// reachable.
func TestDiscoveryContextErrorIsNotTheCallers(t *testing.T) {
	sentinel := errors.New("etcd: no leader")
	var pe *os.PathError
	for _, cause := range []error{context.DeadlineExceeded, context.Canceled} {
		disc := fmt.Errorf("etcd: list %q: %w (%w)", "/services/greeter", sentinel, &os.PathError{Op: "read", Path: "x", Err: cause})
		err := error(&Error{Service: "greeter", Kind: ErrNoEndpoints, Discovery: disc})
		if errors.Is(err, cause) {
			t.Errorf("errors.Is(%v, %v) = true; the registry's timeout is not the caller's", err, cause)
		}
		if !errors.Is(err, ErrNoEndpoints) || !errors.Is(err, sentinel) || !errors.As(err, &pe) {
			t.Errorf("%v: the kind, the discovery error's sentinel or its *os.PathError is lost", err)
		}
	}
}

// Panic mode is logged when it starts, as a warning, and when it ends, as
// news: an operator's alerts on warnings fire once, not again on recovery.
func TestPanicModeLogLevels(t *testing.T) {
	var logs logbuf.Buffer
	as := addrs(4)
	b, _ := newTest(t, as, WithoutBreakers(), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	for _, a := range as[:3] { // 1 of 4 healthy: below the 50 % threshold
		b.Quarantine(a, time.Hour)
	}
	waitFor(t, b, "panic mode", func(p *picker) bool { return p.panic })
	for _, a := range as[:3] {
		b.Quarantine(a, 0)
	}
	waitFor(t, b, "the end of panic mode", func(p *picker) bool { return !p.panic && len(p.ready) == 4 })
	out := logs.String()
	on := regexp.MustCompile(`level=WARN msg="balancer: panic mode" service=svc on=true`)
	off := regexp.MustCompile(`level=INFO msg="balancer: panic mode" service=svc on=false`)
	if len(on.FindAllString(out, -1)) != 1 || len(off.FindAllString(out, -1)) != 1 {
		t.Fatalf("want one WARN line as panic mode starts and one INFO line as it ends; logged:\n%s", out)
	}
}
