package balancer

import (
	"math"
	"testing"
	"time"
)

// A slow-start window near math.MaxInt64 ("new nodes stay at their
// starting share") must not wrap the end of the window negative: the run
// goroutine then rebuilt the picker every millisecond for as long as the
// node ramped, that is for ever.
func TestHugeSlowStartWindowDoesNotSpin(t *testing.T) {
	as := addrs(2)
	b, w := newTest(t, as[:1], WithSlowStart(math.MaxInt64, 0.5))
	w.SetAddrs(as...)
	waitFor(t, b, "the second node", func(p *picker) bool { return len(p.ready) == 2 })
	time.Sleep(50 * time.Millisecond)
	b.mu.Lock()
	at := b.wakeAt
	b.mu.Unlock()
	if at < mono()-int64(20*time.Millisecond) {
		t.Fatalf("the run goroutine's next wake-up (%d) is before now (%d): it rebuilds every millisecond", at, mono())
	}
}
