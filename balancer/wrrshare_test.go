package balancer

import (
	"fmt"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

// The weighted round-robin schedule gives each node its weight's share
// for the fractional weights that Degraded health and slow start make, not
// only for integer ones: expressed in slots of the lightest node, a weight
// of 1.5 against 1 was rounded to 2 slots against 1, and 0.7 against 1 to
// 1 slot against 1, so a node 70 % into its slow start (or a Degraded
// weight-3 node beside a healthy weight-2 one) took a full share. The
// schedule is deterministic, so the bound is exact: within 1 % of each
// share, relative.
func TestWeightedScheduleFractionalShares(t *testing.T) {
	for _, ws := range [][]float32{
		{1, 1.5},       // weight 3 Degraded beside weight 1
		{2, 1.5},       // weight 3 Degraded beside weight 2
		{1, 1.49},      //
		{1, 0.7},       // 70 % into slow start
		{1, 1, 1, 0.7}, //
		{1, 0.55},      //
		{10, 10, 3.7},  //
		{1, 0.1},       // slow start's first step: exact already
		{1, 2, 5},      // integers: exact already
		{2, 3},         // integers the lightest does not divide: once 1 slot against 2
		{4, 6, 10},     //
		{100, 300},     // their greatest common divisor: 1 and 3 slots
	} {
		t.Run(fmt.Sprint(ws), func(t *testing.T) {
			ready := make([]entry, len(ws))
			total := 0.0
			for i, w := range ws {
				ready[i] = entry{idx: uint32(i), weight: w}
				total += float64(w)
			}
			sched := edfSchedule[uint16](ready, nil)
			got := make([]int, len(ws))
			for _, s := range sched {
				got[s]++
			}
			for i, w := range ws {
				share, want := float64(got[i])/float64(len(sched)), float64(w)/total
				if math.Abs(share-want) > 0.01*want {
					t.Errorf("weight %v: %d of %d slots, a share of %.4f; want %.4f (weights %v)", w, got[i], len(sched), share, want, ws)
				}
			}
		})
	}
}

// The same through Pick: a Degraded weight-3 node (1.5 at the default
// factor) beside a healthy weight-2 one gets 3/7 of the picks, not half.
// The cursor is exact per shard, so the slack is one schedule per shard.
func TestWeightedRoundRobinDegradedShare(t *testing.T) {
	as := addrs(2)
	b, w := newTest(t, as, WithPolicy(WeightedRoundRobin()), WithoutBreakers())
	w.Set(discovery.Endpoint{ID: as[0], Addr: as[0], Weight: 2},
		discovery.Endpoint{ID: as[1], Addr: as[1], Weight: 3, Health: discovery.Degraded})
	waitFor(t, b, "the degraded node", func(p *picker) bool {
		return len(p.ready) == 2 && p.ready[1].weight == 1.5
	})
	sel := b.picker.Load().sel.(*wrrSel[uint16])
	const picks = 70_000
	got := count(t, b, picks, nil)
	within(t, "picks of the Degraded weight-3 node", got[as[1]], picks*3/7, len(sel.sched)*len(sel.cur.shards)+picks/100)
}

// Through the ramp, in a bubble: a node added beside three others gets
// weight x t/window of a share at every step of its slow start, as
// WithSlowStart documents, and not a full one from two thirds of the
// window on. The share is measured against the weight in the picker (the
// ramp steps every twentieth of the window), over 20 schedules per shard:
// the slack is the schedule's rounding (1 %) and, per shard, a window of an
// EDF schedule being off its share by at most a slot or two.
func TestWeightedRoundRobinSlowStartSharesFollowTheRamp(t *testing.T) {
	bubble(t, func(t *testing.T) {
		as := addrs(4)
		w := discoverytest.NewAddrs(as[:3]...)
		defer w.Close()
		const window = 20 * time.Second
		b := New(w, WithPolicy(WeightedRoundRobin()), WithoutBreakers(), WithSlowStart(window, 0.1))
		defer b.Close()
		synctest.Wait()
		w.SetAddrs(as...)
		synctest.Wait()
		for _, at := range []float64{0.3, 0.5, 0.7, 0.9} {
			time.Sleep(time.Duration(at*float64(window)) - time.Since(b.addedAt(as[3])))
			synctest.Wait()
			p := b.picker.Load()
			var r float64
			for _, e := range p.ready {
				if p.nodes[e.idx].addr == as[3] {
					r = float64(e.weight)
				}
			}
			if math.Abs(r-at) > 0.051 {
				t.Fatalf("at %.0f %% of the window the new node's weight is %v", 100*at, r)
			}
			sel := p.sel.(*wrrSel[uint16])
			picks := 20 * len(sel.sched) * len(sel.cur.shards)
			got := count(t, b, picks, nil)
			want := r / (3 + r)
			if share := float64(got[as[3]]) / float64(picks); math.Abs(share-want) > 0.01*want+2*float64(len(sel.cur.shards))/float64(picks) {
				t.Errorf("at %.0f %% of the window (weight %.2f) the new node got %.3f of the picks, want %.3f", 100*at, r, share, want)
			}
		}
	})
}

// addedAt returns when the node at addr joined, as a time in the bubble.
func (b *Balancer) addedAt(addr string) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return epoch.Add(time.Duration(b.nodes[addr].added))
}
