package balancer

import (
	"math/rand/v2"
	"runtime"
	"sync/atomic"
)

// RoundRobin returns a policy that sends requests to the healthy nodes in
// turn, ignoring weights. Its cursor has one shard per P, so concurrent
// pickers on different cores never share a cache line; over many picks every
// node gets the same share. A pick with Exclude (a retry's, a hedged
// backup's) takes a node at random among those not excluded and leaves the
// turn where it is, so that the nodes still start calls in turn.
func RoundRobin() Policy { return roundRobin{} }

type roundRobin struct{}

func (roundRobin) Name() string     { return "round_robin" }
func (roundRobin) stats() statsMode { return 0 }
func (roundRobin) build(ready []entry, _ []*node, _ *Balancer) selector {
	return newCursor(len(ready))
}

// cursor is a round-robin counter over n slots with one shard per P: each
// shard walks all the slots from its own starting point, so the picks of
// every shard, and of all of them together, are spread evenly.
//
// The runtime changes GOMAXPROCS while the program runs (since Go 1.25, when
// the container's CPU limit changes), and a cursor lives as long as its
// snapshot, which on a static set is as long as the process. A P added
// since the cursor was built gets its own shard too, in more, made by its
// first pick: sharing one counter instead cost every pick on those Ps a
// contended atomic add, for as long as no rebuild came, and started every
// snapshot's picks on them at the first slot.
type cursor struct {
	shards []paddedCounter                  // shards[i] belongs to P i
	more   atomic.Pointer[[]*paddedCounter] // (*more)[i] belongs to P len(shards)+i
	n      uint32
}

type paddedCounter struct {
	pCounter
	_ [60]byte
}

// The shards start at a random slot, spread evenly from there: a new
// snapshot (a discovery update, a health change) does not send the next
// picks back to the first nodes, which a client picking less often than
// snapshots change would otherwise never get past.
func newCursor(n int) *cursor {
	k := runtime.GOMAXPROCS(0)
	c := &cursor{shards: make([]paddedCounter, k), n: uint32(n)}
	off := rand.IntN(n)
	for i := range c.shards {
		c.shards[i].init(uint32((off + i*n/k) % n))
	}
	return c
}

// next returns the next slot, in [0, n). A shard is only ever counted by
// its own P, with the goroutine pinned to it (no other goroutine runs on
// the P until procUnpin), so it needs no atomic read-modify-write: see
// pCounter.
func (c *cursor) next() int {
	pid := procPin()
	if pid < len(c.shards) {
		v := c.shards[pid].next(c.n)
		procUnpin()
		return int(v)
	}
	return c.nextMore(pid)
}

// nextMore is next on P pid, added since the cursor was built, with the
// goroutine pinned to it; it unpins.
func (c *cursor) nextMore(pid int) int {
	for {
		if m := c.more.Load(); m != nil && pid-len(c.shards) < len(*m) {
			v := (*m)[pid-len(c.shards)].next(c.n)
			procUnpin()
			return int(v)
		}
		procUnpin() // not pinned while allocating and asking GOMAXPROCS
		c.grow(pid + 1)
		if pid = procPin(); pid < len(c.shards) { // GOMAXPROCS shrank since
			v := c.shards[pid].next(c.n)
			procUnpin()
			return int(v)
		}
	}
}

// grow gives every P below p, and below GOMAXPROCS now, a shard. The
// shards already in more are kept, each still counted by its own P; the
// new ones start at a random slot, spread evenly from there, as
// newCursor's do. It runs when GOMAXPROCS grows past the most the cursor
// has seen: rarely.
func (c *cursor) grow(p int) {
	want := max(p, runtime.GOMAXPROCS(0)) - len(c.shards)
	for {
		old := c.more.Load()
		var have []*paddedCounter
		if old != nil {
			have = *old
		}
		if len(have) >= want {
			return
		}
		m := make([]*paddedCounter, want)
		copy(m, have)
		added, n := want-len(have), int(c.n)
		off := rand.IntN(n)
		for i := range added {
			s := new(paddedCounter)
			s.init(uint32((off + i*n/added) % n))
			m[len(have)+i] = s
		}
		if c.more.CompareAndSwap(old, &m) {
			return
		}
	}
}

func (c *cursor) first(uint64, bool) (int, int64) { return c.next(), 0 }

// rotation is a round-robin selector (cursor, wrrSel): its first choice
// advances a rotation that every pick shares. Pick advances it for a
// request's first attempt only. A pick with Exclude (a retry's, a hedged
// backup's) takes anySlot instead, a slot of the rotation drawn at random,
// and leaves the rotation where it is. Were retries and backups to advance
// it, the node after a slow one in the rotation would rarely start a call:
// over 2 nodes, a call whose first attempt went to the slow node and whose
// backup took the other would send the next call's first attempt to the
// slow node again, and every call after it (TestRetryPicksLeaveTheRotation).
type rotation interface {
	// anySlot returns the index in ready of a slot drawn uniformly at
	// random: for the weighted rotation, a node drawn by weight.
	anySlot() int
}

func (c *cursor) anySlot() int { return int(uint64(cheaprand64()) % uint64(c.n)) }

// Random returns a policy that picks a healthy node uniformly at random,
// ignoring weights.
func Random() Policy { return random{} }

type random struct{}

func (random) Name() string     { return "random" }
func (random) stats() statsMode { return 0 }
func (random) build(ready []entry, _ []*node, _ *Balancer) selector {
	return randomSel(len(ready))
}

type randomSel int

func (r randomSel) first(uint64, bool) (int, int64) { return int(rand.Uint64N(uint64(r))), 0 }
