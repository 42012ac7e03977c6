package rpcclient

import (
	"context"
	"testing"
)

// liveLocked finds the pool's live connection whatever the turn counter
// and wherever the dead and retired connections lie: a pool of three with
// a connection retired (aged, draining its calls) and one dead (its reader
// has not yet taken it out) still hands out the third. When liveLocked
// dropped the dead one, the rest of its tries walked the shorter slice
// from the counter's next value and could miss the live connection; get
// then waited for a dial although the endpoint had a connection, and set
// the state Idle.
func TestLiveLockedFindsTheLiveConnection(t *testing.T) {
	c := &Client{life: context.Background()}
	mk := func(kind byte) *conn {
		cn := &conn{dead: make(chan struct{})}
		switch kind {
		case 'R':
			cn.retired.Store(true)
		case 'D':
			cn.err = errAged // no sign about the peer: lostLocked counts nothing
			close(cn.dead)
		}
		return cn
	}
	for _, layout := range []string{"RDL", "RLD", "DRL", "DLR", "LRD", "LDR", "RRDL", "RDRL", "DRRL", "RDDL"} {
		for start := range uint32(12) {
			e := &endpoint{addr: "x", c: c, state: Ready}
			var live *conn
			for i := range len(layout) {
				cn := mk(layout[i])
				if layout[i] == 'L' {
					live = cn
				}
				e.conns = append(e.conns, cn)
			}
			e.rr.Store(start)
			e.mu.Lock()
			got := e.liveLocked()
			st := e.state
			e.mu.Unlock()
			if got != live {
				t.Errorf("pool %s, turn counter at %d: liveLocked returned %p, not the live connection (state now %v)",
					layout, start, got, st)
			}
		}
	}
}
