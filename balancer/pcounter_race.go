//go:build race

package balancer

import "sync/atomic"

// pCounter is pcounter.go's per-P counter with atomic operations, so that
// the race detector, which cannot see a P's ownership, has nothing to
// report.
type pCounter struct{ v atomic.Uint32 }

func (c *pCounter) init(v uint32) { c.v.Store(v) }

func (c *pCounter) load() uint32 { return c.v.Load() }

func (c *pCounter) next(n uint32) uint32 {
	for {
		v := c.v.Load()
		w := v + 1
		if w >= n {
			w = 0
		}
		if c.v.CompareAndSwap(v, w) {
			return v
		}
	}
}
