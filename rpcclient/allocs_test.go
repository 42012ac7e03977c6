package rpcclient

import (
	"context"
	"testing"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// TestCallAllocatesNoMoreThanNetRPC: a successful Call, with the default
// P2C and breakers, allocates no more than the same call through a bare
// *rpc.Client on the same server (both counts include the server's gob
// decoding, which is the same for both). The success path's own
// bookkeeping (pick, Done, the outcome, the list of tried endpoints) is
// garbage-free; errors.As targets are only made for an error.
func TestCallAllocatesNoMoreThanNetRPC(t *testing.T) {
	srv, bare := echoServer(t)
	c, _ := newTestClient(t, []string{srv.Addr()})
	args := &rpctest.EchoArgs{Msg: "hello"}
	ctx := context.Background()
	var r rpctest.EchoReply
	netrpc := testing.AllocsPerRun(500, func() {
		if err := bare.Call("Echo.Echo", args, &r); err != nil {
			t.Fatal(err)
		}
	})
	ours := testing.AllocsPerRun(500, func() {
		if err := c.Call(ctx, "Echo.Echo", args, &r, Idempotent()); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations per call: dialtone %.1f, net/rpc %.1f", ours, netrpc)
	if ours > netrpc {
		t.Fatalf("a Call allocates %.1f times, a bare net/rpc call %.1f", ours, netrpc)
	}
}
