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
