//go:build !race

package balancer

// pCounter is a counter owned by one P and counted only by a goroutine
// pinned to that P (procPin), the way sync.Pool keeps its per-P private
// item: no two goroutines can be between procPin and procUnpin on the same
// P at once, and the scheduler orders one goroutine's run on a P before the
// next one's. A plain increment is then enough, and saves the locked
// instruction of an atomic add on every round-robin pick. The race detector
// cannot see that ownership, so race builds use pcounter_race.go.
type pCounter struct{ v uint32 }

func (c *pCounter) init(v uint32) { c.v = v }

// load returns the count; tests call it once the counting goroutines are done.
func (c *pCounter) load() uint32 { return c.v }

// next returns the counter's value, in [0, n), and moves it on by one,
// wrapping at n: a compare, where taking an ever-growing count modulo n
// put two dependent multiplications in front of every round-robin pick.
// Only the owning P's pinned goroutine calls it.
func (c *pCounter) next(n uint32) uint32 {
	v := c.v
	w := v + 1
	if w >= n {
		w = 0
	}
	c.v = w
	return v
}
