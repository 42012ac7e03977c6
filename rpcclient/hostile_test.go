package rpcclient

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// FAULTS.md row 23: a backend answers with a huge gob message. The client
// caps the message size before it buffers the message, closes the
// connection and counts a failure against the node; the figure is the heap
// growth, bounded by the cap (plus 1 MiB of slack for the call itself, as
// row 22 allows). TestHugeReplyClosesConnection checks the error only: a
// cap checked after gob had read the whole message would pass it.
//
// The backend is a real net/rpc server in a child process, so that the 64
// MiB reply it builds and encodes is not counted in this process's heap.
// TotalAlloc only grows, so the bound holds for the peak too.
func TestHostileReplyHeapGrowthIsBoundedByTheCap(t *testing.T) {
	const msgCap = 1 << 20
	kid := rpctest.StartChild(t)
	c, _ := newTestClient(t, []string{kid.Addr()}, WithMaxMessageSize(msgCap), WithHeartbeat(0, 0),
		WithBalancer(balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "warm"}, &r); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{ReplyBytes: 64 << 20}, &r, Idempotent())
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > msgCap+1<<20 {
		t.Fatalf("%d KiB allocated for a 64 MiB reply with a %d KiB cap; want at most the cap + 1 MiB (err %v)",
			grew>>10, msgCap>>10, err)
	} else {
		t.Logf("%d KiB allocated for a 64 MiB reply with a %d KiB cap", grew>>10, msgCap>>10)
	}
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrMessageTooLarge) || e.Attempts != 1 {
		t.Fatalf("64 MiB reply with a 1 MiB cap: %v; want ErrMessageTooLarge after one attempt (not retried)", err)
	}
	// The connection is closed (its other calls would get ErrConnClosed,
	// with the cause as text only: see conn.go).
	deadline := time.Now().Add(5 * time.Second)
	for st := endpointStatus(c, kid.Addr()); !errors.Is(st.LastClose, ErrConnClosed); st = endpointStatus(c, kid.Addr()) {
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %+v: want its connection closed", st)
		}
		time.Sleep(time.Millisecond)
	}
	// And the node's breaker counted the failure (one opens it here).
	for _, s := range c.Balancer().Status() {
		if s.Endpoint.Addr == kid.Addr() && s.Breaker != breaker.Open {
			t.Fatalf("node %+v: want its breaker open after one oversized reply (a failure)", s)
		}
	}
}
