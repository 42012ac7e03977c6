package balancer

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
)

// Maglev returns a consistent-hash policy with bounded load. Requests that
// carry the same HashKey go to the same node while the set is stable, and a
// change of the set moves only about 1/n of the keys. A request is not sent
// to a node that would then hold more than ceil(loadFactor x the average
// in-flight load, this request included, weighted) (Google's "consistent hashing
// with bounded loads"): the next node under its limit in the table after
// the key's slot takes it, or, when the slots nearby hold only nodes at
// their limit (a table has long runs of one node, longer with few nodes or
// uneven weights), the first node under its limit in an order of the nodes
// fixed by the key. The average is weighted: a node's limit is
// ceil(loadFactor x its share of the total weight x the in-flight load), so
// that a node twice as heavy, which the table gives twice the keys, may
// hold twice the requests. So one hot key cannot sink a node, and a key spills
// over to the same node while the loads stay as they are. loadFactor <= 1
// or NaN means the default, 1.25; +Inf means no bound (plain consistent
// hashing).
// Weights set each node's share of the lookup table; picks without a
// HashKey take a random slot of it, so they follow the weights too
// (Degraded health and slow start included).
//
// The table is over every node discovery lists. A node out of rotation
// (breaker open, ejected, quarantined) keeps its slots, and a key whose
// slot it holds goes to the node of another slot the key draws (a rehash):
// the node's keys spread over the others by weight and come back with it,
// and no other key moves.
//
// The lookup table has 65537 entries (655373 when discovery lists more
// than 4096 nodes, healthy or not), so Pick is one hash and one table read
// whatever the number of nodes (a few more for a key whose node is out of
// rotation).
func Maglev(loadFactor float64) Policy {
	if !(loadFactor > 1) { // NaN too
		loadFactor = 1.25
	}
	return maglev{c: loadFactor}
}

type maglev struct{ c float64 }

func (maglev) Name() string     { return "maglev" }
func (maglev) stats() statsMode { return statInFlight | statTotal } // bounded load

func (m maglev) build(ready []entry, nodes []*node, b *Balancer) selector {
	// The table is over every node discovery lists, whether in rotation
	// or not, and a key whose slot holds a node out of rotation (breaker
	// open, ejected, quarantined) goes to another node (see home). So a
	// node going out moves its own keys only, and they come back with it;
	// and a health change, which rebuilds the picker, reuses the table (a
	// build takes 2 ms for 1,000 nodes and 25 ms for 10,000).
	// A node's share of the table follows its weight, Degraded health and
	// slow start included, which only a new table can change.
	//
	// The size follows the set discovery lists too: a new size remaps
	// nearly every key.
	now := mono()
	all := make([]entry, len(nodes))
	pos := make([]int32, len(nodes)) // in ready, or -1
	for i := range pos {
		pos[i] = -1
	}
	for j, e := range ready {
		all[e.idx], pos[e.idx] = e, int32(j) // as the picker weighs it
	}
	for i, n := range nodes {
		if pos[i] < 0 { // out of rotation: weighed as it would be in
			w, _ := b.weight(n, &b.eps[i], now)
			all[i] = entry{idx: uint32(i), weight: float32(w)}
		}
	}
	var table []uint32
	prevSel := b.picker.Load().sel
	if z, ok := prevSel.(*zoneSel); ok {
		prevSel = z.all
	}
	if prev, ok := prevSel.(*maglevSel); ok && slices.Equal(prev.nodes, nodes) && slices.Equal(prev.all, all) {
		table = prev.table
	} else {
		size := uint64(65537)
		if len(nodes) > 4096 {
			size = 655373
		}
		table = maglevTable(all, nodes, size)
	}
	return newMaglevSel(ready, nodes, all, pos, table, m.c, &b.inflight)
}

// newMaglevSel returns the selector over ready of a lookup table over all
// (every node, with the weight it was built with), where pos maps a node to
// its place in ready, bounded by c x total.
func newMaglevSel(ready []entry, nodes []*node, all []entry, pos []int32, table []uint32, c float64, total *atomic.Int64) *maglevSel {
	sum := 0.0
	var cum []float64 // only when some node is out of rotation
	if len(ready) < len(all) {
		cum = make([]float64, len(ready))
	}
	for j, e := range ready {
		sum += float64(e.weight)
		if cum != nil {
			cum[j] = sum
		}
	}
	return &maglevSel{ready: ready, nodes: nodes, all: all, pos: pos, table: table, dense: len(ready) == len(nodes), c: c, sumW: sum, cum: cum, total: total}
}

// over returns a selector of s's table over local, a part of s's ready:
// the nodes not in it are out of rotation for it (see newZoneSel).
func (s *maglevSel) over(local []entry) *maglevSel {
	pos := make([]int32, len(s.nodes))
	for i := range pos {
		pos[i] = -1
	}
	for j, e := range local {
		pos[e.idx] = int32(j)
	}
	return newMaglevSel(local, s.nodes, s.all, pos, s.table, s.c, s.total)
}

type maglevSel struct {
	ready []entry
	nodes []*node
	all   []entry  // every node, with the weight the table was built with
	pos   []int32  // a node's place in ready, -1 when out of rotation
	table []uint32 // node indexes (into nodes)
	dense bool     // every node is in rotation, ready[k] is nodes[k] (see picker.dense)
	c     float64
	sumW  float64       // the ready nodes' weights, summed
	cum   []float64     // cum[j]: the weights of ready[:j+1], summed; nil when every node is in rotation
	total *atomic.Int64 // in-flight requests over all nodes
}

// at returns the place in ready of the node in table slot t, -1 when it is
// out of rotation.
func (s *maglevSel) at(t uint64) int {
	if s.dense { // the usual case, without a dependent load
		return int(s.table[t])
	}
	return int(s.pos[s.table[t]])
}

func (s *maglevSel) first(h uint64, hasKey bool) (int, int64) {
	m := uint64(len(s.table))
	if !hasKey {
		if j := s.at(rand.Uint64N(m)); j >= 0 {
			return j, 0
		}
		// A slot of a node out of rotation: a node in rotation drawn by
		// weight (not the next slot's node: see home). The nodes in
		// rotation hold slots in proportion to their weights, so a pick
		// lands on each in proportion to its weight either way.
		return s.byWeight(rand.Float64()), 0
	}
	idx := s.at(h % m)
	if idx < 0 {
		idx = s.home(h)
	}
	limit := s.limit()
	if s.under(idx, limit) {
		return idx, 0 // the usual case
	}
	if j := s.walk(h, func(j int) bool { return j != idx && s.under(j, limit) }); j >= 0 {
		return j, 0
	}
	return idx, 0 // every node at its limit: picks running beside this one raised the counts
}

// rehashes bounds the slots home draws for a key whose own slot holds a
// node out of rotation: with half the table's slots out of rotation, all 16
// hold one once in 65,536 keys.
const rehashes = 16

// home returns the place in ready of the node for a key whose own slot
// holds a node out of rotation: the node of the first slot in rotation
// that the key's rehashes draw, or, when they draw none (nearly every node
// is out), a node in rotation the key draws by weight. A node in rotation
// holds slots in proportion to its weight, so the keys of the nodes out
// spread over the others in proportion to theirs, and come back with them.
// (The next slot's node did not: Maglev's table is far from random slot by
// slot, and with the three heaviest of ten nodes out, one took 0.73x its
// weighted share of the keys and another 1.19x.)
func (s *maglevSel) home(h uint64) int {
	m := uint64(len(s.table))
	for r := uint64(1); r <= rehashes; r++ {
		if j := s.at(mix64(h+r*0x9e3779b97f4a7c15) % m); j >= 0 { // splitmix64's r-th draw from h
			return j
		}
	}
	return s.byWeight(float64(h>>11) / (1 << 53))
}

// byWeight returns the place in ready of the node in rotation at u in [0,
// 1) of the weights in rotation; only when some node is out (cum is set).
func (s *maglevSel) byWeight(u float64) int {
	j, _ := slices.BinarySearch(s.cum, u*s.sumW)
	return min(j, len(s.cum)-1)
}

// limit is the bounded load to share out: c x the in-flight load, this
// request included; ready[j] may hold at most ceil(limit x its weight / the
// weights' sum) (see under). The limits add up to more than the load, so
// some node is always under its own. +Inf (c is) means no bound.
func (s *maglevSel) limit() float64 {
	return s.c * float64(s.total.Load()+1)
}

// walk offers ok the key's candidates in the order the key prefers them
// and returns the first it accepts, -1 for none: the key's node, then the
// table's next slots, Maglev's own successors of the key, each node in
// rotation once per run of its slots (a node out of rotation is passed
// over), then every node in rotation, from an offset the key picks (the
// high half of its hash; the slot came from the whole of it), so that the
// keys of one node at its limit spread over the others, each to the same
// one every time the loads are the same. A node may be offered twice.
func (s *maglevSel) walk(h uint64, ok func(j int) bool) int {
	n := len(s.ready)
	m := uint64(len(s.table))
	prev := -1
	for k := uint64(0); k < min(m, 4*uint64(len(s.nodes))); k++ {
		j := s.at((h + k) % m)
		if j >= 0 && j != prev && ok(j) {
			return j
		}
		prev = j
	}
	off := int((h >> 32) * uint64(n) >> 32)
	for k := range n {
		j := off + k
		if j >= n {
			j -= n
		}
		if ok(j) {
			return j
		}
	}
	return -1
}

// redraw is picker.redraw for a keyed pick whose first choice was
// excluded or refused by its breaker: the first of the key's candidates
// (see walk) that is neither and is under the bound, admitted; nil when
// there is none, and pick scans on.
//
// When no such node is under its limit and the pick excludes some, the
// bound is shared out over the weight of the nodes left: a node's limit is
// its share of the total weight, the excluded nodes' included, so with a
// heavy node excluded (a retry of one of its keys) the others could
// together hold only c x their share of the load, and past that every
// retry went to the excluded node's successor in the State.
func (s *maglevSel) redraw(p *picker, po *pickOptions) *Result {
	limit := s.limit()
	h := hashString(po.hashKey)
	try := func(limit float64) *Result {
		var res *Result
		s.walk(h, func(j int) bool {
			k := p.at(j)
			if po.exclude != nil && po.excluded(p.nodes[k].addr) || !s.under(j, limit) {
				return false
			}
			res = p.admit(k, 0)
			return res != nil
		})
		return res
	}
	if res := try(limit); res != nil || po.exclude == nil {
		return res
	}
	ex := 0.0 // the weight of the excluded ready nodes
	for _, e := range s.ready {
		if po.excluded(p.nodes[e.idx].addr) {
			ex += float64(e.weight)
		}
	}
	if !(ex > 0 && ex < s.sumW) {
		return nil
	}
	return try(limit * s.sumW / (s.sumW - ex))
}

// under reports whether ready[j] holds fewer requests than its share of
// limit (see limit): with equal weights, limit / n.
func (s *maglevSel) under(j int, limit float64) bool {
	e := s.ready[j]
	return float64(s.nodes[e.idx].inflight.Load()) < math.Ceil(limit*float64(e.weight)/s.sumW)
}

// maglevTable fills a lookup table of the given prime size with node
// indexes: each node walks its own permutation of the slots (offset, skip
// from two hashes of its address) and claims free slots in turn; a node with
// twice the weight claims twice per round.
func maglevTable(ready []entry, nodes []*node, size uint64) []uint32 {
	n := len(ready)
	// Node i fills the first empty slot of its permutation offset,
	// offset+skip, offset+2 skip, ... (mod size); pos is where its next
	// probe lands. Stepping pos by skip and wrapping once, since skip is
	// below size, visits the slots (offset + j skip) % size in the same
	// order without a division per probe (a 64-bit division was most of
	// a build's time: 655,373 slots filled in some 50 ms for 10,000 nodes).
	pos := make([]uint64, n)
	skip := make([]uint64, n)
	credit := make([]float64, n)
	share := make([]float64, n) // weight / the largest weight
	maxW := 0.0
	for i, e := range ready {
		h := hashString(nodes[e.idx].addr)
		pos[i] = h % size
		skip[i] = (h>>32)%(size-1) + 1
		maxW = max(maxW, float64(e.weight))
	}
	for i, e := range ready {
		share[i] = float64(e.weight) / maxW
	}
	const empty = math.MaxUint32
	table := make([]uint32, size)
	for i := range table {
		table[i] = empty
	}
	filled := uint64(0)
	for filled < size {
		for i := range ready {
			credit[i] += share[i]
			for credit[i] >= 1 && filled < size {
				credit[i]--
				p, k := pos[i], skip[i]
				for table[p] != empty {
					if p += k; p >= size {
						p -= size
					}
				}
				table[p] = uint32(i)
				filled++
				if p += k; p >= size {
					p -= size
				}
				pos[i] = p
			}
		}
	}
	return table
}

// hashString is FNV-1a with a final avalanche (splitmix64), stable across
// processes so that every client maps a key to the same node.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is splitmix64's finalizer: every bit of z moves about half the
// bits of the result.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
