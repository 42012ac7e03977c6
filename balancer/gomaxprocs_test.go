package balancer

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// Since Go 1.25 the runtime changes GOMAXPROCS itself when the container's
// CPU limit changes, so a long-running client sees it grow and shrink
// between and during the builds of its pickers. These tests change it
// themselves, and put it back when they end.

// setProcs sets GOMAXPROCS to n, and has the test put back the value it
// found on its first call.
func setProcs(t *testing.T, n int) {
	t.Helper()
	prev := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// counters is how many counters c has handed picks out from: each walks
// the slots in turn, so the picks per slot are spread by at most one per
// counter.
func counters(c *cursor) int {
	if m := c.more.Load(); m != nil {
		return len(c.shards) + len(*m)
	}
	return len(c.shards)
}

// flipProcs changes GOMAXPROCS through sizes, below and above what the
// cursors were built with, changes times, counting them in flips.
func flipProcs(sizes []int, changes int, flips *atomic.Int32) {
	for i := range changes {
		runtime.GOMAXPROCS(sizes[i%len(sizes)])
		flips.Add(1)
		runtime.Gosched()
	}
}

// busy reports, once in a while, whether the test's background work is
// still going: the pickers pick until it is done, or for at most 5 s, or
// until they reach their bound. It yields now and then, as a client
// doing anything between its picks would: a loop of picks, each pinned to
// its P, holds off the stops of the world that changing GOMAXPROCS takes.
func busy(i int, done <-chan struct{}, deadline time.Time) bool {
	if i%64 != 0 {
		return true
	}
	runtime.Gosched()
	select {
	case <-done:
		return false
	default:
		return time.Now().Before(deadline)
	}
}

// TestCursorUnderGOMAXPROCSChanges picks from round-robin cursors (a plain
// one and a weighted schedule's) from many goroutines while GOMAXPROCS
// changes under them, above and below the size the cursors were built at,
// and new cursors are built: no pick may fail or fall outside the slots,
// and each cursor still spreads its picks by at most one per counter.
func TestCursorUnderGOMAXPROCSChanges(t *testing.T) {
	sizes := []int{1, 3, 8, 2, 16, 5}
	setProcs(t, 1)
	ready := []entry{{idx: 0, weight: 1}, {idx: 1, weight: 2}, {idx: 2, weight: 5}}
	for _, build := range []int{1, 2, 8} {
		runtime.GOMAXPROCS(build)
		const n = 7
		c := newCursor(n)
		sel := wrr{}.build(ready, nil, &Balancer{}).(*wrrSel[uint16])
		done := make(chan struct{})
		var bg sync.WaitGroup
		var flips atomic.Int32
		bg.Go(func() { flipProcs(sizes, 200, &flips) })
		bg.Go(func() { // snapshot rebuilds, picked from at once
			for i := range 2000 {
				if s := newCursor(1 + i%9).next(); s < 0 || s >= 1+i%9 {
					t.Errorf("a new cursor over %d slots picked %d", 1+i%9, s)
				}
			}
		})
		go func() { bg.Wait(); close(done) }()
		deadline := time.Now().Add(5 * time.Second)
		const goroutines, picks = 8, 5_000_000
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slots [n]int
		perNode := make([]int, len(ready))
		for range goroutines {
			wg.Go(func() {
				var mine [n]int
				theirs := make([]int, len(ready))
				for i := 0; i < picks && busy(i, done, deadline); i++ {
					s := c.next()
					if s < 0 || s >= n {
						t.Errorf("slot %d of %d", s, n)
						return
					}
					mine[s]++
					i, _ := sel.first(0, false)
					theirs[i]++
				}
				mu.Lock()
				for i, k := range mine {
					slots[i] += k
				}
				for i, k := range theirs {
					perNode[i] += k
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		during := flips.Load()
		<-done
		if lo, hi := slices.Min(slots[:]), slices.Max(slots[:]); hi-lo > counters(c) {
			t.Errorf("built at GOMAXPROCS %d: picks per slot %v: spread %d, want at most %d (one per counter)", build, slots, hi-lo, counters(c))
		}
		// A counter that stops part way through the schedule gives a
		// node at most its slots in the schedule above its share.
		total := 0
		for _, k := range perNode {
			total += k
		}
		t.Logf("built at GOMAXPROCS %d: %d picks over %d GOMAXPROCS changes, per slot %v, per weighted node %v", build, total, during, slots, perNode)
		for i, w := range []int{1, 2, 5} {
			within(t, fmt.Sprintf("weighted picks of node %d", i), perNode[i], total*w/8, w*counters(sel.cur))
		}
	}
}

// TestPicksUnderGOMAXPROCSChanges picks through Balancers, round robin and
// weighted, from many goroutines while GOMAXPROCS changes and discovery
// updates rebuild the picker: every pick succeeds and every node gets its
// share. Each picker's cursor starts at a random slot and is exact per
// counter, so the shares are off by little more than the rebuilds times
// the counters.
func TestPicksUnderGOMAXPROCSChanges(t *testing.T) {
	setProcs(t, 2)
	for _, tc := range []struct {
		name   string
		policy Policy
		w      []int // weights, and the shares they give
		shares []int
	}{
		{"round_robin", RoundRobin(), []int{1, 3, 2, 1}, []int{1, 1, 1, 1}},
		{"weighted_round_robin", WeightedRoundRobin(), []int{1, 3, 2, 1}, []int{1, 3, 2, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(2)
			as := addrs(len(tc.w))
			set := func(scale int) []discovery.Endpoint {
				out := make([]discovery.Endpoint, len(as))
				for i, a := range as {
					out[i] = discovery.Endpoint{ID: a, Addr: a, Weight: tc.w[i] * scale}
				}
				return out
			}
			b, fw := newTest(t, nil, WithPolicy(tc.policy), WithoutBreakers())
			fw.Set(set(1)...)
			waitFor(t, b, "the set", func(p *picker) bool { return len(p.ready) == len(as) })
			done := make(chan struct{})
			var bg sync.WaitGroup
			var flips atomic.Int32
			bg.Go(func() { flipProcs([]int{1, 4, 2, 8, 3}, 100, &flips) })
			const rebuilds = 40
			bg.Go(func() { // each State changes the weights, not the shares: a new picker
				for i := range rebuilds {
					time.Sleep(time.Millisecond)
					fw.Set(set(1 + (i+1)%2)...)
				}
			})
			go func() { bg.Wait(); close(done) }()
			deadline := time.Now().Add(5 * time.Second)
			const goroutines, picks = 8, 1_000_000
			var wg sync.WaitGroup
			var mu sync.Mutex
			got := map[string]int{}
			for range goroutines {
				wg.Go(func() {
					mine := map[string]int{}
					for i := 0; i < picks && busy(i, done, deadline); i++ {
						r, err := b.Pick(context.Background())
						if err != nil {
							t.Errorf("Pick: %v", err)
							return
						}
						mine[r.Endpoint.Addr]++
						r.Done(nil)
					}
					mu.Lock()
					for a, k := range mine {
						got[a] += k
					}
					mu.Unlock()
				})
			}
			wg.Wait()
			during := flips.Load()
			<-done
			sum := 0
			for _, s := range tc.shares {
				sum += s
			}
			total := 0
			for _, k := range got {
				total += k
			}
			t.Logf("%d picks over %d GOMAXPROCS changes: %v", total, during, got)
			// Up to 1+rebuilds pickers, up to 17 counters each (16 Ps
			// and one more), each off by up to a node's slots in the
			// schedule (2x the weights in half the States); a pick in
			// a thousand on top.
			for i, a := range as {
				within(t, "picks of "+a, got[a], total*tc.shares[i]/sum, (1+rebuilds)*17*2*tc.shares[i]/8+total/1000)
			}
		})
	}
}

// onHighPs runs each f in its own goroutine pinned to a P whose id is at
// least lo, each on a different P, all pinned at once, and reports
// whether it managed to (GOMAXPROCS must leave room for len(fs) such Ps).
// The fs may wait for each other, bounded: they run at once. An attempt
// that cannot pin them all is given up and made again, after setup;
// bounded attempts.
func onHighPs(t *testing.T, lo int, setup func(), fs ...func(deadline time.Time)) bool {
	t.Helper()
	for range 50 {
		setup()
		var claimed [256]atomic.Bool
		var roles, done atomic.Int32
		var wg sync.WaitGroup
		deadline := time.Now().Add(2 * time.Second)
		for range 64 {
			wg.Go(func() {
				pid := procPin()
				defer procUnpin()
				// Yield until on a P that is wanted and taken by no
				// other, or until every role is taken.
				for tries := 0; ; tries++ {
					if pid >= lo && pid < len(claimed) && claimed[pid].CompareAndSwap(false, true) {
						break
					}
					if tries == 1000 || roles.Load() >= int32(len(fs)) {
						return
					}
					procUnpin()
					runtime.Gosched()
					pid = procPin()
				}
				r := int(roles.Add(1)) - 1
				if r >= len(fs) {
					return
				}
				// Wait, pinned, for the others to be pinned too.
				for roles.Load() < int32(len(fs)) && time.Now().Before(deadline) {
				}
				if roles.Load() < int32(len(fs)) {
					return
				}
				fs[r](deadline)
				done.Add(1)
			})
		}
		wg.Wait()
		if int(done.Load()) == len(fs) {
			return true
		}
		if t.Failed() {
			return false
		}
	}
	return false
}

// TestCursorFirstPicksOnANewPAreSpread builds cursors at GOMAXPROCS 1 and
// takes the first pick of each from a P added since (GOMAXPROCS grew): like
// the first pick on any P, it lands on a random slot, not on the first
// node of every new snapshot, which a client picking less often than the
// snapshots change would otherwise never get past.
func TestCursorFirstPicksOnANewPAreSpread(t *testing.T) {
	setProcs(t, 1)
	const n, cursors = 4, 400
	cs := make([]*cursor, cursors)
	for i := range cs {
		cs[i] = newCursor(n)
	}
	runtime.GOMAXPROCS(4)
	var slots [n]int
	if !onHighPs(t, 1, func() { slots = [n]int{} }, func(time.Time) {
		for _, c := range cs {
			slots[c.next()]++
		}
	}) {
		t.Fatal("no goroutine ran on a P added since the cursors were built")
	}
	// Binomial(400, 1/4): sigma 8.7; 7 sigma.
	for s, k := range slots {
		within(t, fmt.Sprintf("first picks on slot %d", s), k, cursors/n, 60)
	}
}

// TestCursorNewPsCountOnTheirOwn builds a cursor at GOMAXPROCS 1 and picks
// from two Ps added since, pinned at once: each of them walks the slots
// on its own counter, as the Ps the cursor was built for do, rather than
// sharing one counter (one contended cache line, on every pick of a static
// set, for as long as no rebuild comes). Two picks on one P, with a pick
// on the other between them, are consecutive slots.
func TestCursorNewPsCountOnTheirOwn(t *testing.T) {
	setProcs(t, 1)
	const n = 5
	c := newCursor(n)
	runtime.GOMAXPROCS(4)
	var step atomic.Int32
	var first, second, other int
	ok := onHighPs(t, 1, func() { step.Store(0) },
		func(deadline time.Time) {
			first = c.next()
			step.Store(1)
			for step.Load() != 2 && time.Now().Before(deadline) {
			}
			second = c.next()
		},
		func(deadline time.Time) {
			for step.Load() != 1 && time.Now().Before(deadline) {
			}
			other = c.next()
			step.Store(2)
		})
	if !ok {
		t.Fatal("could not pin two goroutines to two Ps added since the cursor was built")
	}
	if step.Load() != 2 {
		t.Fatal("the two pinned goroutines did not take turns")
	}
	if second != (first+1)%n {
		t.Errorf("picks on one new P: %d then %d, with %d picked on another new P between them; want consecutive slots", first, second, other)
	}
}
