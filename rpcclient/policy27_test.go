package rpcclient

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

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
