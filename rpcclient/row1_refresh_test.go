package rpcclient

import (
	"context"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// FAULTS.md row 1 with the default balancer: a SIGKILL drops a proven
// connection. Discovery must be asked to refresh for that loss itself
// (grpc-go re-resolves when a ready connection is lost), not only once
// some later call redials the address and fails: the breaker and outlier
// ejection that the in-flight failures trip, or P2C's cost, may keep the
// dead node unpicked for the whole ejection time (30 s by default), and
// with no redial there is no refresh. Here no call follows the kill.
func TestKilledBackendRefreshesDiscoveryWithoutARedial(t *testing.T) {
	kids, addrs, w := startKids(t, 3, "r")
	c, err := New(w, WithAttemptTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); w.Close() })
	for _, a := range addrs { // a proven connection to every node
		for i := 0; endpointStatus(c, a).State != Ready; i++ {
			if i == 5000 {
				t.Fatalf("5000 calls never connected to %s", a)
			}
			var r rpctest.EchoReply
			if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := w.ResolveNowCalls()
	kids[0].Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.WaitResolveNow(ctx, before+1); err != nil {
		t.Fatalf("2 s after %s was SIGKILLed and its connection lost (status %+v), discovery was not asked to refresh (%d ResolveNow calls)",
			addrs[0], endpointStatus(c, addrs[0]), w.ResolveNowCalls()-before)
	}
}
