package balancer

import (
	"context"
	"io"
	"net/rpc"
	"testing"
	"unsafe"
)

// A node's plain Done function is laid out inside the node (setDone), and
// behaves as the closure finishFunc makes: it ends the in-flight counts
// the policy keeps and records the outcome for outlier ejection.
func TestNodeDoneLivesInTheNode(t *testing.T) {
	if !doneInNode {
		t.Fatal("finishFunc's closure is not laid out as doneClosure with this compiler: every node's Done is " +
			"then allocated apart from it (correct, but a cache miss more per pick; see setDone)")
	}
	for _, tc := range []struct {
		name   string
		policy Policy
	}{
		{"round robin, no in-flight count", RoundRobin()},
		{"P2C, in-flight count", P2C()},
		{"Maglev, in-flight count on the node and the balancer", Maglev(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newTest(t, addrs(1), WithPolicy(tc.policy))
			n := newNode(b, "10.9.9.9:80", 0, 1e6)
			if p := *(*unsafe.Pointer)(unsafe.Pointer(&n.done)); p != unsafe.Pointer(&n.closure) {
				t.Fatalf("n.done points at %p, want the node's own closure words at %p", p, &n.closure)
			}
			mode := tc.policy.stats()
			start := func() {
				if mode&statInFlight != 0 {
					n.inflight.Add(1)
					if mode&statTotal != 0 {
						b.inflight.Add(1)
					}
				}
			}
			total := b.inflight.Load()
			for i, step := range []struct {
				err    error
				consec int32
			}{
				{io.ErrUnexpectedEOF, 1}, // a transport error: a failure
				{io.EOF, 2},
				{context.Canceled, 2},           // the caller's own: not the node's
				{rpc.ServerError("no such"), 0}, // an application error: the node answered
				{io.EOF, 1},
				{nil, 0},
			} {
				start()
				n.done(step.err)
				if got := n.consec.Load(); got != step.consec {
					t.Fatalf("after Done(%v), step %d: %d consecutive failures, want %d", step.err, i, got, step.consec)
				}
				if got := n.inflight.Load(); got != 0 {
					t.Fatalf("after Done(%v), step %d: node in flight %d, want 0", step.err, i, got)
				}
				if got := b.inflight.Load(); got != total {
					t.Fatalf("after Done(%v), step %d: balancer in flight %d, want %d", step.err, i, got, total)
				}
			}
		})
	}
}
