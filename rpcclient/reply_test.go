package rpcclient

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// dyingMidReply is a net/rpc peer that reads one request, writes the reply
// header and half the reply body, and closes: a server killed while it
// sends a large reply.
func dyingMidReply(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			cn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer cn.Close()
				dec := gob.NewDecoder(cn)
				var req rpc.Request
				var args rpctest.EchoArgs
				if dec.Decode(&req) != nil || dec.Decode(&args) != nil {
					return
				}
				var buf bytes.Buffer
				enc := gob.NewEncoder(&buf)
				enc.Encode(rpc.Response{ServiceMethod: req.ServiceMethod, Seq: req.Seq})
				header := buf.Len()
				enc.Encode(rpctest.EchoReply{Payload: strings.Repeat("x", 100_000)})
				cn.Write(buf.Bytes()[:header+50_000])
			})
		}
	})
	return l.Addr().String()
}

// A reply cut short is a connection failure, not a codec error: an
// idempotent call goes on to a healthy node (FAULTS row 1).
func TestReplyCutShortIsRetried(t *testing.T) {
	good := rpctest.Start(t, rpctest.WithName("good"))
	c, _ := newTestClient(t, []string{dyingMidReply(t), good.Addr()}, WithHeartbeat(0, 0),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	for range 4 {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
			t.Fatalf("idempotent call with a healthy node available: %v", err)
		}
		if r.Server != "good" {
			t.Fatalf("reply from %q", r.Server)
		}
	}
	// Not idempotent: the request was sent, so the outcome is unknown, and
	// the error says the connection broke, not that the reply was garbage.
	var r rpctest.EchoReply
	for range 4 {
		err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r)
		if err == nil {
			continue // the healthy node answered
		}
		if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrConnClosed) || errors.Is(err, ErrCodec) {
			t.Fatalf("non-idempotent call on a reply cut short: %v", err)
		}
		return
	}
	t.Fatal("no non-idempotent call reached the dying node")
}

// A reply that is not a pointer (a caller's slip: sum instead of &sum)
// cannot receive anything. The call must fail with an error saying so,
// and must not take the connection, and the calls in flight beside it,
// down with it.
func TestNonPointerReplyHarmsNoOtherCall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func() any
	}{
		{"int", func() any { var sum int; return sum }},
		{"nil *int", func() any { var p *int; return p }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Arith{gate: make(chan struct{})}
			c, _ := newTestClient(t, []string{serveArith(t, &a)}, withoutNodeHealth())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			other := make(chan error, 1)
			go func() {
				var r int
				other <- c.Call(ctx, "Arith.Slow", Pair{7, 0}, &r) // not idempotent
			}()
			waitCalls(t, &a, 1)
			err := c.Call(ctx, "Arith.Add", Pair{2, 3}, tc.reply())
			t.Logf("Call with a %s reply: %v", tc.name, err)
			if !errors.Is(err, ErrCodec) {
				t.Fatalf("a %s reply: %v; want ErrCodec", tc.name, err)
			}
			if n := a.calls.Load(); n != 1 {
				t.Fatalf("server saw %d calls; want 1 (a call whose reply cannot be received is not sent)", n)
			}
			close(a.gate)
			if err := <-other; err != nil {
				t.Fatalf("the non-idempotent call beside the bad reply failed: %v", err)
			}
		})
	}
}
