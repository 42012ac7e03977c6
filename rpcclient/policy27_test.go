package rpcclient

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// A dial that times out on its own dial timeout, well inside the attempt
// timeout, is a failed dial, not an attempt that ran out of its time.
func TestP27DialTimeoutIsNoAttemptTimeout(t *testing.T) {
	bh := rpctest.Blackhole(t)
	c, _ := newTestClient(t, []string{bh}, WithDialTimeout(100*time.Millisecond), WithAttemptTimeout(5*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &rpctest.EchoReply{})
	t.Logf("after %v: %v", time.Since(start), err)
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("want a DialError: %v", err)
	}
	if errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("a dial that timed out after 100ms is reported as an attempt timeout (5s): %v", err)
	}
}

// With an empty retry budget, neither a retry nor a hedged backup goes out.
func TestP27EmptyBudgetNoRetryNoBackup(t *testing.T) {
	for _, hedge := range []time.Duration{0, 20 * time.Millisecond} {
		a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
		px := rpctest.NewProxy(t, a.Addr())
		c, _ := newTestClient(t, []string{px.Addr(), b.Addr()}, WithRetryBudget(0, 0), WithAttemptTimeout(200*time.Millisecond),
			WithHeartbeat(0, 0), WithHedging(hedge), withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
		warmEvery(t, c, 2)
		px.BlackholeResponses()
		base := b.Calls()
		var hit bool
		for i := 0; i < 6 && !hit; i++ {
			var r rpctest.EchoReply
			err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
			if err == nil {
				base = b.Calls()
				continue
			}
			hit = true
			var e *Error
			if !errors.As(err, &e) || e.Attempts != 1 || !errors.Is(err, ErrRetryBudget) && hedge == 0 {
				t.Fatalf("hedge %v: %v (%+v)", hedge, err, e)
			}
			if b.Calls() != base {
				t.Fatalf("hedge %v: b got %d calls with an empty budget: %v", hedge, b.Calls()-base, err)
			}
			t.Logf("hedge %v: %v", hedge, err)
		}
		if !hit {
			t.Fatal("no call went to a")
		}
	}
}

// A refresh whose set still holds only nodes this call tried (a dead node
// dropped first, its replacement registered a moment later: two registry
// updates) is followed by refusals of the remaining node, in reconnect
// backoff; the second refresh must then wait for a set newer than the one
// those refusals came on, not return at once because the refusals carry
// the version of the old dial failure.
func TestP27RefreshAfterBackoffRefusalWaitsForANewerSet(t *testing.T) {
	good := rpctest.Start(t)
	deadA, deadC := refusingAddr(t), refusingAddr(t)
	w := discoverytest.NewAddrs(deadA, deadC)
	var n atomic.Int32
	w.OnResolveNow(func() {
		if n.Add(1) == 1 {
			go func() {
				time.Sleep(20 * time.Millisecond)
				w.SetAddrs(deadA) // C's deregistration
				time.Sleep(200 * time.Millisecond)
				w.SetAddrs(deadA, good.Addr()) // the replacement registers
			}()
		}
	})
	c, err := New(w)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); w.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, &r); err != nil {
		t.Fatalf("after %v, with %v of its deadline left: %v", time.Since(start).Round(time.Millisecond), time.Until(start.Add(3*time.Second)).Round(time.Millisecond), err)
	}
}
