package rpcclient

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// A drained endpoint's connection closes only once its calls in flight
// have their replies. maintain counts them before it drops the endpoint;
// a call that picked the address on an older set, or after it came back
// in the meantime, may enter a request between the count and the close.
// drop closed the connection under it: the request had been written, and
// the call failed with ErrConnClosed ("drained"), its outcome unknown. Now
// such a request gets its reply, a request started after the drop is
// refused with nothing sent, and the connection then closes.
func TestDropLetsACallThatEnteredFinish(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, WithDrainGrace(time.Hour), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e := c.endpoint(srv.Addr())
	cn, err := e.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The call that entered after maintain's count.
	var r rpctest.EchoReply
	pc, _, err := cn.start(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: 300 * time.Millisecond}, &r, waitAsCtxAllows)
	if err != nil {
		t.Fatal(err)
	}
	c.drop([]*endpoint{e})
	var r2 rpctest.EchoReply
	if _, _, err := cn.start(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r2, waitAsCtxAllows); err == nil || !isNotSent(err) {
		t.Fatalf("a request on the drained connection: %v, want it refused with nothing sent", err)
	}
	<-pc.done
	if err := cn.finish(pc); err != nil {
		t.Fatalf("the call in flight when its endpoint was dropped: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for cn.alive() {
		if time.Now().After(deadline) {
			t.Fatal("the drained connection is still open after its last reply")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cn.failure(); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("the drained connection closed with %v", err)
	}
}

// Close closes a drained endpoint's connection that still has a call in
// flight, as it closes every other: it fails the call with ErrClosed and
// returns without waiting for the reply.
func TestCloseEndsADrainingConnection(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, WithDrainGrace(time.Hour), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e := c.endpoint(srv.Addr())
	cn, err := e.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var r rpctest.EchoReply
	pc, _, err := cn.start(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: 10 * time.Second}, &r, waitAsCtxAllows)
	if err != nil {
		t.Fatal(err)
	}
	c.drop([]*endpoint{e})
	begin := time.Now()
	c.Close()
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("Close took %v with a draining connection's call in flight", d)
	}
	<-pc.done
	if err := cn.finish(pc); !errors.Is(err, ErrClosed) {
		t.Fatalf("the draining call after Close: %v, want ErrClosed", err)
	}
}
