package balancer

import "math"

// WeightedRoundRobin returns a policy that sends each healthy node a share of
// requests proportional to its effective weight (discovery weight, halved
// when Degraded, ramped during slow start). The order is smooth: a schedule
// is computed once per snapshot by earliest-deadline-first, so heavy nodes
// are interleaved with light ones rather than served in bursts, and Pick is a
// sharded counter into that schedule: O(1) in the number of nodes.
func WeightedRoundRobin() Policy { return wrr{} }

type wrr struct{}

func (wrr) Name() string     { return "weighted_round_robin" }
func (wrr) stats() statsMode { return 0 }

// maxSchedule bounds the schedule length; weights are scaled down to fit.
const maxSchedule = 1 << 16

func (wrr) build(ready []entry, _ *Balancer) selector {
	sched := edfSchedule(ready)
	return &wrrSel{sched: sched, cur: newCursor(len(sched))}
}

type wrrSel struct {
	sched []uint32
	cur   *cursor
}

func (s *wrrSel) first(string, bool) (int, bool) { return int(s.sched[s.cur.next()]), false }

// edfSchedule returns a sequence of indexes into ready in which each node
// appears in proportion to its weight, smoothly interleaved.
func edfSchedule(ready []entry) []uint32 {
	total := 0.0
	minW := math.Inf(1)
	for _, e := range ready {
		total += e.weight
		minW = min(minW, e.weight)
	}
	// Express weights as integer slot counts: the lightest node gets at
	// least one slot, and the whole schedule stays under maxSchedule.
	// Rounding up to one slot adds at most one slot per node.
	scale := 1 / minW
	if limit := float64(maxSchedule - len(ready)); total*scale > limit {
		scale = limit / total
	}
	slots := make([]int, len(ready))
	length := 0
	for i, e := range ready {
		slots[i] = max(1, int(math.Round(e.weight*scale)))
		length += slots[i]
	}
	h := make(edfHeap, len(ready))
	for i := range ready {
		h[i] = edfItem{deadline: 1 / float64(slots[i]), step: 1 / float64(slots[i]), idx: uint32(i)}
	}
	h.init()
	sched := make([]uint32, length)
	for k := range sched {
		it := &h[0]
		sched[k] = it.idx
		it.deadline += it.step
		h.down(0)
	}
	return sched
}

type edfItem struct {
	deadline, step float64
	idx            uint32
}

// edfHeap is a binary min-heap by deadline (ties by index), written out
// rather than through container/heap to keep schedule building cheap.
type edfHeap []edfItem

func (h edfHeap) less(i, j int) bool {
	if h[i].deadline != h[j].deadline {
		return h[i].deadline < h[j].deadline
	}
	return h[i].idx < h[j].idx
}

func (h edfHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h edfHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
