package rpcclient

import (
	"context"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// AttemptTimeout(0) and Hedge(0) override the client's attempt timeout and
// hedging for one call, as their docs say: 0 is "off" for both options.
func TestZeroCallOptionsOverrideTheClients(t *testing.T) {
	a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())),
		WithAttemptTimeout(50*time.Millisecond), WithHedging(20*time.Millisecond))
	warmEvery(t, c, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var r rpctest.ExecReply
	err := c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: "slow", Sleep: 150 * time.Millisecond}, &r,
		Idempotent(), AttemptTimeout(0), Hedge(0))
	if err != nil {
		t.Fatalf("a 150 ms call with AttemptTimeout(0): %v", err)
	}
	time.Sleep(200 * time.Millisecond) // a backup, if one went, has run by now
	n := 0
	for _, line := range append(a.Executions(), b.Executions()...) {
		if len(line) >= 4 && line[:4] == "slow" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the call ran %d times with Hedge(0); want 1 (no backup)", n)
	}
}
