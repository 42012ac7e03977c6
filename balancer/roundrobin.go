package balancer

import (
	"math/rand/v2"
	"runtime"
	"sync/atomic"
)

// RoundRobin returns a policy that sends requests to the healthy nodes in
// turn, ignoring weights. Its cursor is sharded (one per P, chosen at random
// per pick), so concurrent pickers on different cores rarely share a cache
// line; over many picks every node gets the same share.
func RoundRobin() Policy { return roundRobin{} }

type roundRobin struct{}

func (roundRobin) Name() string  { return "round_robin" }
func (roundRobin) latency() bool { return false }
func (roundRobin) build(ready []entry, _ *Balancer) selector {
	return newCursor(len(ready))
}

// cursor is a sharded round-robin counter over n slots.
type cursor struct {
	shards []paddedCounter
	mask   uint32
	n      uint64
}

type paddedCounter struct {
	v atomic.Uint64
	_ [56]byte
}

func newCursor(n int) *cursor {
	k := 1
	for k < 2*runtime.GOMAXPROCS(0) {
		k <<= 1
	}
	c := &cursor{shards: make([]paddedCounter, k), mask: uint32(k - 1), n: uint64(n)}
	// Start the shards spread over the slots so they do not march in step.
	for i := range c.shards {
		c.shards[i].v.Store(uint64(i) * uint64(n) / uint64(k))
	}
	return c
}

func (c *cursor) next() uint64 {
	if c.mask == 0 {
		return (c.shards[0].v.Add(1) - 1) % c.n
	}
	s := &c.shards[rand.Uint32()&c.mask]
	return (s.v.Add(1) - 1) % c.n
}

func (c *cursor) first(*pickOptions) int { return int(c.next()) }

// Random returns a policy that picks a healthy node uniformly at random,
// ignoring weights.
func Random() Policy { return random{} }

type random struct{}

func (random) Name() string  { return "random" }
func (random) latency() bool { return false }
func (random) build(ready []entry, _ *Balancer) selector {
	return randomSel(len(ready))
}

type randomSel int

func (r randomSel) first(*pickOptions) int { return int(rand.Uint64N(uint64(r))) }
