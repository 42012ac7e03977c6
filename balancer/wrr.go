package balancer

import (
	"math"
)

// WeightedRoundRobin returns a policy that sends each healthy node a share of
// requests proportional to its effective weight (discovery weight, halved
// when Degraded, ramped during slow start). The order is smooth: a schedule
// is computed once per snapshot by earliest-deadline-first, so heavy nodes
// are interleaved with light ones rather than served in bursts, and Pick is a
// sharded counter into that schedule: O(1) in the number of nodes. A pick
// with Exclude (a retry's, a hedged backup's) draws a node at random by
// weight among those not excluded and leaves the schedule's turn where it
// is, as RoundRobin does.
func WeightedRoundRobin() Policy { return wrr{} }

type wrr struct{}

func (wrr) Name() string     { return "weighted_round_robin" }
func (wrr) stats() statsMode { return 0 }

// maxSchedule bounds the schedule length of a set of up to
// maxSchedule/minSlotsPerNode nodes; weights are scaled down to fit.
const maxSchedule = 1 << 16

// minSlotsPerNode is how many slots per node a larger set's schedule may
// take: every node keeps at least one slot, so a schedule of about one
// slot per node gave every node the same share, and a Degraded node or one
// starting its slow start (at 10 %) took a healthy node's full share.
const minSlotsPerNode = 16

// scheduleCap is the longest schedule for n nodes.
func scheduleCap(n int) int { return max(maxSchedule, minSlotsPerNode*n) }

func (wrr) build(ready []entry, _ []*node, b *Balancer) selector {
	if len(ready) <= math.MaxUint16+1 { // the usual case: half the memory
		return newWRRSel(edfSchedule[uint16](ready, &b.edf))
	}
	return newWRRSel(edfSchedule[uint32](ready, &b.edf))
}

// readyIndex is the type of a schedule's slots: indexes into ready.
type readyIndex interface{ uint16 | uint32 }

type wrrSel[T readyIndex] struct {
	sched []T
	cur   *cursor
}

func newWRRSel[T readyIndex](sched []T) *wrrSel[T] {
	return &wrrSel[T]{sched: sched, cur: newCursor(len(sched))}
}

func (s *wrrSel[T]) first(uint64, bool) (int, int64) { return int(s.sched[s.cur.next()]), 0 }

func (s *wrrSel[T]) anySlot() int { return int(s.sched[s.cur.anySlot()]) }

// edfScratch is the working memory of edfSchedule. A Balancer keeps one in
// its field edf, used only by the goroutine holding the Balancer's mu (the
// one that builds pickers), so that an update of a large weighted set
// allocates little beyond the schedule it publishes. Nothing in it is read
// after the call that wrote it returns.
type edfScratch struct {
	slots      []uint32  // per node: its slot count
	classSlots []int     // per class: the slot count of its nodes
	size       []uint32  // per class: its number of nodes
	start      []uint32  // class c's nodes are members[start[c]:start[c+1]]
	fill       []uint32  // per class: members placed so far
	members16  []uint16  // the members of an edfOrder[uint16]
	members32  []uint32  // the members of an edfOrder[uint32]
	bucket     []uint32  // edfBuckets: each slot's bucket, then the order it returns
	end        []uint32  // edfBuckets: bucket boundaries
	order      []edfSlot // edfBuckets: slots sorted by deadline
}

// members returns s's buffer of n members of type T.
func members[T readyIndex](s *edfScratch, n int) []T {
	switch any(T(0)).(type) {
	case uint16:
		return any(grow(&s.members16, n)).([]T)
	default:
		return any(grow(&s.members32, n)).([]T)
	}
}

// edfSlot is node's k-th slot, whose deadline is k/slots[node].
type edfSlot struct{ node, k uint32 }

// grow returns (*buf)[:n], reallocating *buf when it is too short. The
// elements are not cleared.
func grow[E any](buf *[]E, n int) []E {
	if cap(*buf) < n {
		*buf = make([]E, n, n+n/4)
	}
	return (*buf)[:n]
}

// edfSchedule returns a sequence of indexes into ready in which each node
// appears in proportion to its weight, smoothly interleaved. T must hold
// len(ready)-1. s may be nil, for a call that keeps no scratch.
func edfSchedule[T readyIndex](ready []entry, s *edfScratch) []T {
	if s == nil {
		s = new(edfScratch)
	}
	if sched, ok := edfWhole[T](ready, s); ok {
		return sched
	}
	return edfGeneral[T](ready, s)
}

// maxWholeWeight is the heaviest weight edfWhole takes.
const maxWholeWeight = 255

// edfWhole is edfSchedule for the usual weights: whole numbers from 1 to
// maxWholeWeight, as discovery gives them, with no node Degraded or in slow
// start. Such a node's slot count is its weight over the weights' greatest
// common divisor, so the nodes of one weight are one class of edfOrder:
// one pass finds the classes by weight, and the slot counts and the
// divisor are computed per class, not per node. The schedule is the one
// edfGeneral builds, in half the passes over the nodes. It reports false,
// having built nothing, when a weight is not such a number or the schedule
// would not fit scheduleCap; edfSchedule then takes the general way.
func edfWhole[T readyIndex](ready []entry, s *edfScratch) ([]T, bool) {
	var count [maxWholeWeight + 1]uint32 // weight -> its nodes; classes are numbered by first appearance
	classes := s.classSlots[:0]
	total := 0
	for _, e := range ready {
		// Weights are positive (at least minWeight), so the
		// conversion is exact for every weight that is a whole number
		// in range, and the comparison turns the others away.
		w := uint32(e.weight)
		if w-1 >= maxWholeWeight || float32(w) != e.weight {
			return nil, false
		}
		if count[w] == 0 {
			classes = append(classes, int(w))
		}
		count[w]++
		total += int(w)
	}
	s.classSlots, s.size = classes, grow(&s.size, len(classes))
	g := uint64(0)
	for c, w := range classes {
		s.size[c] = count[w]
		g = gcd(g, uint64(w))
	}
	length := total / int(g)
	if length > scheduleCap(len(ready))-len(ready) {
		return nil, false
	}
	s.classStarts()
	for c, w := range classes {
		count[w] = s.start[c] // from here, the weight's next place in members
		classes[c] = w / int(g)
	}
	members := members[T](s, len(ready))
	for i, e := range ready {
		w := uint32(e.weight)
		members[count[w]] = T(i)
		count[w]++
	}
	return edfEmit(length, members, s), true
}

// edfGeneral is edfSchedule for any weights.
func edfGeneral[T readyIndex](ready []entry, s *edfScratch) []T {
	total := 0.0
	minW := math.Inf(1)
	whole := true  // every weight is a whole number
	g := uint64(0) // their greatest common divisor (while it is not 1)
	for _, e := range ready {
		w := float64(e.weight)
		total += w
		minW = min(minW, w)
		if whole {
			if w != math.Floor(w) || w >= 1<<53 {
				whole = false
			} else if g != 1 {
				g = gcd(g, uint64(w))
			}
		}
	}
	// Express weights as integer slot counts, the whole schedule under
	// scheduleCap. Whole weights divided by their greatest common divisor
	// are exact, and the cheapest exact counts. Fractional weights
	// (Degraded health and slow start make them) take the least multiple
	// of the lightest weight (up to maxExactMultiple times) that makes
	// every count whole, or else fineSlots slots for the lightest node,
	// which bounds every node's rounding error by 1/(2 fineSlots): one
	// slot for the lightest, as once for all weights, rounded 1.5 against
	// 1 to 2 slots against 1, 0.7 against 1 to 1 against 1 (a node 70 %
	// into its slow start took a full share), and even 3 against 2 to 2
	// against 1. Rounding up to one slot adds at most one slot per node.
	scale := 1 / minW
	if whole {
		scale = 1 / float64(g)
	}
	limit := float64(scheduleCap(len(ready)) - len(ready))
	switch {
	case total*scale > limit:
		scale = limit / total
	case whole:
	case !wholeSlots(ready, scale):
		k := 2.0
		for ; k <= maxExactMultiple && total*scale*k <= limit; k++ {
			if wholeSlots(ready, scale*k) {
				break
			}
		}
		if k <= maxExactMultiple && total*scale*k <= limit {
			scale *= k
		} else {
			scale = min(scale*fineSlots, limit/total)
		}
	}
	slots := grow(&s.slots, len(ready))
	length := 0
	for i, e := range ready {
		// Weights are positive: Floor(x+0.5) rounds to nearest, half
		// up, in one instruction where math.Round takes a dozen.
		n := math.Floor(float64(e.weight)*scale + 0.5)
		if !(n >= 1) {
			n = 1
		}
		slots[i] = uint32(n)
		length += int(slots[i])
	}
	return edfOrder[T](slots, length, s)
}

// maxExactMultiple and fineSlots are how edfSchedule expresses fractional
// weights: see there.
const (
	maxExactMultiple = 8
	fineSlots        = 200
)

// gcd returns the greatest common divisor of a and b; gcd(0, b) is b.
func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// wholeSlots reports whether every weight in ready, times scale, is within
// a rounding error of a whole slot count.
func wholeSlots(ready []entry, scale float64) bool {
	for _, e := range ready {
		x := float64(e.weight) * scale
		if math.Abs(x-math.Floor(x+0.5)) > 1e-4*x {
			return false
		}
	}
	return true
}

// edfOrder lists, for nodes with the given slot counts, the k-th slot of
// node i (k = 1..slots[i]) at its deadline k/slots[i], earliest first: the
// order an earliest-deadline-first scheduler produces. Nodes with the same
// slot count have the same deadlines, so it orders the deadlines of each
// distinct slot count once (a class: weights are mostly a few small
// integers, and 1,000 nodes of weights 1 to 10 make 55 deadlines for 5,500
// slots) and then copies each class's nodes, in node order, at each of its
// deadlines. Equal deadlines of different classes go in the
// order the classes first appear among the nodes. When every node has one
// slot, as with equal weights, the order is the nodes' own. s may be nil.
func edfOrder[T readyIndex](slots []uint32, length int, s *edfScratch) []T {
	if length == len(slots) {
		sched := make([]T, length)
		for i := range sched {
			sched[i] = T(i)
		}
		return sched
	}
	if s == nil {
		s = new(edfScratch)
	}
	// Classes are numbered by first appearance. The slot count to class
	// lookup is a table for the usual small counts, a map beyond.
	var small [256]uint32 // slot count -> class + 1
	var large map[uint32]uint32
	lookup := func(n uint32) uint32 { // class + 1; 0 for none yet
		if n < uint32(len(small)) {
			return small[n]
		}
		return large[n]
	}
	s.classSlots, s.size = s.classSlots[:0], s.size[:0]
	for _, n := range slots {
		c := lookup(n)
		if c == 0 {
			s.classSlots = append(s.classSlots, int(n))
			s.size = append(s.size, 0)
			c = uint32(len(s.classSlots))
			if n < uint32(len(small)) {
				small[n] = c
			} else {
				if large == nil {
					large = map[uint32]uint32{}
				}
				large[n] = c
			}
		}
		s.size[c-1]++
	}
	members := members[T](s, len(slots))
	fill := s.classStarts()
	for i, n := range slots {
		c := lookup(n) - 1
		members[fill[c]] = T(i)
		fill[c]++
	}
	return edfEmit(length, members, s)
}

// classStarts sets s.start from s.size: class c's members go to
// members[start[c]:start[c+1]]. It returns s.fill, a copy of the starts
// for the caller to place the members by.
func (s *edfScratch) classStarts() []uint32 {
	classes := len(s.size)
	start := grow(&s.start, classes+1)
	start[0] = 0
	for c, k := range s.size {
		start[c+1] = start[c] + k
	}
	fill := grow(&s.fill, classes)
	copy(fill, start)
	s.start, s.fill = start, fill // grow leaves the fields' lengths as they were
	return fill
}

// edfEmit returns the schedule of length slots: the members of each
// class (s.classSlots, s.start), in node order, at each of the class's
// deadlines, earliest first.
func edfEmit[T readyIndex](length int, members []T, s *edfScratch) []T {
	deadlines := 0
	for _, k := range s.classSlots {
		deadlines += k
	}
	sched := make([]T, length)
	at := 0
	for _, c := range edfBuckets(s.classSlots, deadlines, s) {
		at += copy(sched[at:], members[s.start[c]:s.start[c+1]])
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
//
// The result lives in s (a new one when s is nil) until its next use.
func edfBuckets(slots []int, length int, s *edfScratch) []uint32 {
	if s == nil {
		s = new(edfScratch)
	}
	sched := grow(&s.bucket, length)
	n := uint32(length)
	// Pass 1: each slot's bucket, in node-major order, into sched (free
	// until the end), and the buckets' sizes into end[b+1].
	end := grow(&s.end, length+1)
	clear(end)
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
	order := grow(&s.order, length)
	for i := len(slots) - 1; i >= 0; i-- {
		for k := slots[i]; k >= 1; k-- {
			at--
			b := sched[at]
			end[b+1]--
			order[end[b+1]] = edfSlot{uint32(i), uint32(k)}
		}
	}
	earlier := func(x, y edfSlot) bool {
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
