package balancer

import (
	"math"
	"testing"
	"time"
)

// Quarantine keeps addr out of picks for d, however long: a d near
// math.MaxInt64 ("until I lift it") wrapped mono() + d negative, and the
// node was not quarantined at all.
func TestHugeQuarantineQuarantines(t *testing.T) {
	as := addrs(2)
	b, _ := newTest(t, as, WithPanicThreshold(0))
	if !b.Quarantine(as[0], math.MaxInt64) {
		t.Fatal("Quarantine: not a current node")
	}
	time.Sleep(20 * time.Millisecond) // the run goroutine rebuilds
	waitFor(t, b, "the quarantine", func(p *picker) bool { return len(p.ready) == 1 })
}
