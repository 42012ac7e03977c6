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

func (s *wrrSel) first(uint64, bool) (int, int64) { return int(s.sched[s.cur.next()]), 0 }

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
	return edfOrder(slots, length)
}

// edfOrder lists, for nodes with the given slot counts, the k-th slot of
// node i (k = 1..slots[i]) at its deadline k/slots[i], earliest first and
// ties by node index: the order an earliest-deadline-first heap produces,
// built without the heap in O(length + nodes). Deadlines lie in (0, 1], so
// a counting sort into length buckets by deadline leaves about one slot per
// bucket; each bucket is then ordered exactly, comparing k1/s1 with k2/s2 as
// k1*s2 against k2*s1.
func edfOrder(slots []int, length int) []uint32 {
	type slot struct{ node, k uint32 }
	bucketOf := func(node, k int) int {
		return min(length-1, k*length/slots[node])
	}
	start := make([]int32, length+1)
	for i, s := range slots {
		for k := 1; k <= s; k++ {
			start[bucketOf(i, k)+1]++
		}
	}
	for b := 1; b <= length; b++ {
		start[b] += start[b-1]
	}
	fill := make([]int32, length)
	copy(fill, start[:length])
	order := make([]slot, length)
	for i, s := range slots {
		for k := 1; k <= s; k++ {
			b := bucketOf(i, k)
			order[fill[b]] = slot{uint32(i), uint32(k)}
			fill[b]++
		}
	}
	earlier := func(x, y slot) bool {
		l, r := uint64(x.k)*uint64(slots[y.node]), uint64(y.k)*uint64(slots[x.node])
		return l < r || (l == r && x.node < y.node)
	}
	sched := make([]uint32, length)
	for b := range length {
		seg := order[start[b]:start[b+1]]
		for i := 1; i < len(seg); i++ { // insertion sort: buckets hold a few slots
			for j := i; j > 0 && earlier(seg[j], seg[j-1]); j-- {
				seg[j], seg[j-1] = seg[j-1], seg[j]
			}
		}
	}
	for i, sl := range order {
		sched[i] = sl.node
	}
	return sched
}
