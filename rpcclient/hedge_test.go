package rpcclient

import (
	"context"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// A slow node does not make an idempotent call slow: after the hedge delay
// the request goes to another node, and the first reply wins.
func TestHedgingBeatsASlowNode(t *testing.T) {
	slow := rpctest.Start(t, rpctest.WithName("slow"))
	fast := rpctest.Start(t, rpctest.WithName("fast"))
	px := rpctest.NewProxy(t, slow.Addr())
	c, _ := newTestClient(t, []string{px.Addr(), fast.Addr()}, WithHedging(20*time.Millisecond),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	// Warm both connections (hedges go only to nodes already connected).
	for range 4 {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
	}
	px.Latency(500 * time.Millisecond)
	var worst time.Duration
	servedBy := map[string]int{}
	for range 10 {
		var r rpctest.EchoReply
		t0 := time.Now()
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, &r, Idempotent()); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(t0))
		if r.Msg != "m" {
			t.Fatalf("reply %+v", r)
		}
		servedBy[r.Server]++
	}
	if servedBy["fast"] != 10 {
		t.Fatalf("replies by %v; every call should have been won by the fast node", servedBy)
	}
	if worst > 400*time.Millisecond {
		t.Fatalf("slowest hedged call %v; the backup after 20 ms should answer long before the slow node's 500 ms", worst)
	}
	// A call that is not idempotent is never hedged: it waits for the slow node.
	for range 2 {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
		servedBy[r.Server]++
	}
	if servedBy["slow"] == 0 {
		t.Fatalf("a non-idempotent call was hedged: %v", servedBy)
	}
	t.Logf("slowest hedged call %v against a 500 ms node", worst)
}
