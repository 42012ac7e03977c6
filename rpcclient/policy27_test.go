package rpcclient

import (
	"context"
	"errors"
	"testing"
	"time"

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
