package rpcclient

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// The first call to each node waits for its dial, which is not the node's
// latency: P2C must not take it for one. With a 20 ms dial (a TLS handshake
// across a region) against calls of tens of microseconds, the node whose
// first call's latency sample held its dial looked 20 times slower than
// the others (20 ms against the 1 ms seed), got no call until its probe 2 s
// on, and only about a sixth of that gap was forgotten per probe: P2C
// shunned it for half a minute.
func TestDialTimeIsNotTheNodesLatency(t *testing.T) {
	const n = 3
	var addrs []string
	for range n {
		addrs = append(addrs, rpctest.Start(t).Addr())
	}
	slowDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, "static:///"+strings.Join(addrs, ","), WithDialer(slowDial))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func() {
		t.Helper()
		var r rpctest.ExecReply
		if err := c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: "x"}, &r, Idempotent()); err != nil {
			t.Fatal(err)
		}
	}
	// Until every node has a connection: each one's first call dials.
	for i := 0; i < 200 && len(c.Endpoints()) < n; i++ {
		call()
	}
	if len(c.Endpoints()) < n {
		t.Fatalf("after 200 calls the client holds %d endpoints of %d", len(c.Endpoints()), n)
	}
	for _, st := range c.Balancer().Status() {
		t.Logf("after warm-up: %s latency %v", st.Endpoint.Addr, st.Latency)
		if st.Latency >= 10*time.Millisecond {
			t.Errorf("%s: latency estimate %v after its first calls: the 20 ms dial's", st.Endpoint.Addr, st.Latency)
		}
	}
}
