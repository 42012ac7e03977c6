package balancer

import (
	"math"
	"slices"
)

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

func (wrr) build(ready []entry, _ []*node, _ *Balancer) selector {
	if len(ready) <= math.MaxUint16+1 { // the usual case: half the memory
		return newWRRSel(edfSchedule[uint16](ready))
	}
	return newWRRSel(edfSchedule[uint32](ready))
}

// readyIndex is the type of a schedule's slots: indexes into ready.
type readyIndex interface{ ~uint16 | ~uint32 }

type wrrSel[T readyIndex] struct {
	sched []T
	cur   *cursor
}

func newWRRSel[T readyIndex](sched []T) *wrrSel[T] {
	return &wrrSel[T]{sched: sched, cur: newCursor(len(sched))}
}

func (s *wrrSel[T]) first(uint64, bool) (int, int64) { return int(s.sched[s.cur.next()]), 0 }

// edfSchedule returns a sequence of indexes into ready in which each node
// appears in proportion to its weight, smoothly interleaved. T must hold
// len(ready)-1.
func edfSchedule[T readyIndex](ready []entry) []T {
	total := 0.0
	minW := math.Inf(1)
	for _, e := range ready {
		w := float64(e.weight)
		total += w
		minW = min(minW, w)
	}
	// Express weights as integer slot counts: the lightest node gets at
	// least one slot, and the whole schedule stays under maxSchedule.
	// Rounding up to one slot adds at most one slot per node.
	scale := 1 / minW
	if limit := float64(maxSchedule - len(ready)); total*scale > limit {
		scale = limit / total
	}
	slots := make([]uint32, len(ready))
	length := 0
	for i, e := range ready {
		slots[i] = uint32(max(1, math.Round(float64(e.weight)*scale)))
		length += int(slots[i])
	}
	return edfOrder[T](slots, length)
}

// edfOrder lists, for nodes with the given slot counts, the k-th slot of
// node i (k = 1..slots[i]) at its deadline k/slots[i], earliest first: the
// order an earliest-deadline-first scheduler produces. Nodes with the same
// slot count have the same deadlines, so it orders the deadlines of each
// distinct slot count once (a class: weights are mostly a few small
// integers, and 1,000 nodes of weights 1 to 10 make 55 deadlines for 5,500
// slots) and then copies each class's nodes, in node order, at each of its
// deadlines. Equal deadlines of different classes go in the order the
// classes first appear among the nodes. When every node has one slot, as
// with equal weights, the order is the nodes' own.
func edfOrder[T readyIndex](slots []uint32, length int) []T {
	sched := make([]T, length)
	if length == len(slots) {
		for i := range sched {
			sched[i] = T(i)
		}
		return sched
	}
	// Classes are numbered by first appearance. The slot count to class
	// lookup is a table for the usual small counts, a map beyond.
	var classSlots []int  // slot count of each class
	var small [256]uint32 // slot count -> class + 1
	var large map[uint32]uint32
	classOf := func(s uint32) uint32 {
		if s < uint32(len(small)) {
			return small[s] - 1
		}
		return large[s] - 1
	}
	// members[start[c]:start[c+1]] are class c's nodes, in node order;
	// start[c+1] counts them first.
	start := make([]uint32, 1, 16)
	for _, s := range slots {
		var c uint32
		if s < uint32(len(small)) {
			c = small[s]
		} else {
			c = large[s]
		}
		if c == 0 {
			classSlots = append(classSlots, int(s))
			start = append(start, 0)
			c = uint32(len(classSlots))
			if s < uint32(len(small)) {
				small[s] = c
			} else {
				if large == nil {
					large = map[uint32]uint32{}
				}
				large[s] = c
			}
		}
		start[c]++
	}
	for c := range classSlots {
		start[c+1] += start[c]
	}
	members := make([]T, len(slots))
	fill := slices.Clone(start[:len(classSlots)])
	for i, s := range slots {
		c := classOf(s)
		members[fill[c]] = T(i)
		fill[c]++
	}
	deadlines := 0
	for _, s := range classSlots {
		deadlines += s
	}
	at := 0
	for _, c := range edfBuckets(classSlots, deadlines) {
		at += copy(sched[at:], members[start[c]:start[c+1]])
	}
	return sched
}

// edfBuckets is edfOrder for nodes that each have their own slot count (a
// class, for edfOrder), ties going to the lower index: the k-th slot of node
// i at deadline k/slots[i], earliest first, in O(length + nodes) without a
// heap. Deadlines lie in (0, 1], so a counting sort into length buckets by
// deadline leaves about one slot per bucket; each bucket is then ordered
// exactly, comparing k1/s1 with k2/s2 as k1*s2 against k2*s1. The counting
// sort is stable, so slots with equal deadlines (every node's last slot has
// deadline 1) are already in node order, and the insertion sort passes over
// them in one step each.
//
// Node i's k-th slot goes to bucket floor(k*length/slots[i]), which grows
// by the same quotient and remainder at every k: one 32-bit division per
// node, not a 64-bit one per slot (those cost more than the rest of a
// slot's work put together).
func edfBuckets(slots []int, length int) []uint32 {
	sched := make([]uint32, length)
	n := uint32(length)
	// Pass 1: each slot's bucket, in node-major order, into sched (free
	// until the end), and the buckets' sizes into end[b+1].
	end := make([]uint32, length+1)
	at := 0
	for _, s := range slots {
		s := uint32(s)
		q, r := n/s, n%s
		b, rem := uint32(0), uint32(0)
		for range s {
			b, rem = b+q, rem+r
			if rem >= s {
				b, rem = b+1, rem-s
			}
			b := min(b, n-1)
			sched[at] = b
			end[b+1]++
			at++
		}
	}
	// Prefix sums make end[b+1] the end of bucket b; placing the slots
	// back to front leaves it at the bucket's start.
	for b := 1; b <= length; b++ {
		end[b] += end[b-1]
	}
	type slot struct{ node, k uint32 }
	order := make([]slot, length)
	for i := len(slots) - 1; i >= 0; i-- {
		for k := slots[i]; k >= 1; k-- {
			at--
			b := sched[at]
			end[b+1]--
			order[end[b+1]] = slot{uint32(i), uint32(k)}
		}
	}
	earlier := func(x, y slot) bool {
		l, r := uint64(x.k)*uint64(slots[y.node]), uint64(y.k)*uint64(slots[x.node])
		return l < r || (l == r && x.node < y.node)
	}
	for b := range length {
		hi := n
		if b+1 < length {
			hi = end[b+2]
		}
		seg := order[end[b+1]:hi]
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
