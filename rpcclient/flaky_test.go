package rpcclient

import (
	"context"
	"net/rpc"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
)

// Flaky answers at once, except that when flaky is set every other call
// hangs for a second: a node with 50 % failures (attempt timeouts).
type Flaky struct {
	flaky  bool
	n      atomic.Int64
	served *atomic.Int64 // requests served by every Flaky of a test
	stop   chan struct{}
}

func (f *Flaky) Echo(args string, reply *string) error {
	f.served.Add(1)
	if f.flaky && f.n.Add(1)%2 == 0 {
		select {
		case <-time.After(time.Second):
		case <-f.stop:
		}
	}
	*reply = args
	return nil
}

func serveFlaky(t *testing.T, flaky bool, served *atomic.Int64) string {
	f := &Flaky{flaky: flaky, served: served, stop: make(chan struct{})}
	return serveRPC(t, func(s *rpc.Server) error { return s.Register(f) }, func() { close(f.stop) })
}

// FAULTS.md row 6: one node fails half its requests. The breaker and
// outlier ejection take it out; idempotent calls succeed; retries stay few.
func TestHalfFailingNode(t *testing.T) {
	var served atomic.Int64
	addrs := []string{serveFlaky(t, true, &served), serveFlaky(t, false, &served), serveFlaky(t, false, &served)}
	// Round robin keeps sending the node its share, so the test sees the
	// breaker and ejection take it out; P2C (the default) would mostly steer
	// around it by cost before either fires.
	c, _ := newTestClient(t, addrs, WithAttemptTimeout(100*time.Millisecond), WithHeartbeat(0, 0),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	var calls, failed atomic.Int64
	runLoad(8, 100000, 2*time.Second, func(ctx context.Context, w, i int) error {
		var r string
		err := c.Call(ctx, "Flaky.Echo", "x", &r, Idempotent())
		calls.Add(1)
		if err != nil {
			failed.Add(1)
			return err
		}
		return nil
	})
	n, f := calls.Load(), failed.Load()
	perCall := float64(served.Load()) / float64(n)
	success := 1 - float64(f)/float64(n)
	if success < 0.999 {
		t.Fatalf("success %.4f over %d calls (%d failed), want >= 99.9 %%", success, n, f)
	}
	var ejectedOrOpen bool
	for _, s := range c.Balancer().Status() {
		if s.Endpoint.Addr == addrs[0] && (s.Ejected || s.Breaker != 0) {
			ejectedOrOpen = true
		}
	}
	if !ejectedOrOpen {
		t.Fatal("the half-failing node is neither ejected nor behind an open breaker")
	}
	if perCall > 1.2 {
		t.Fatalf("%.2f attempts per call, want <= 1.2", perCall)
	}
	t.Logf("%d calls, success %.4f, %.3f attempts per call; the failing node is out", n, success, perCall)
}
