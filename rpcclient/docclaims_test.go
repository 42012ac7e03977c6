package rpcclient

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	_ "github.com/dialtone-go/dialtone/discovery/consul"
)

// TestOneNodeCallGivesUpAfterTwoRefreshWaits pins what Client.Call's doc
// says of a call whose only node fails to dial: it waits for discovery or
// the reconnect backoff at most twice, then fails with the dial error, long
// before its deadline. (The doc used to say it waits "as long as ctx
// allows" and State TransientFailure "as its deadline allows ... then
// dials": a node back 600 ms into a call with a 3 s deadline was never
// reached; the call failed after 200 ms.)
func TestOneNodeCallGivesUpAfterTwoRefreshWaits(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // refused until the server comes back

	srv := rpc.NewServer()
	var a Arith
	srv.Register(&a)
	RegisterHeartbeat(srv)
	back := make(chan net.Listener, 1)
	go func() {
		time.Sleep(600 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			back <- nil
			return
		}
		back <- l
		go srv.Accept(l)
	}()
	t.Cleanup(func() {
		if l := <-back; l != nil {
			l.Close()
		}
	})

	c, _ := newTestClient(t, []string{addr},
		WithConnectBackoff(100*time.Millisecond, 1, 100*time.Millisecond, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	var sum int
	err = c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum, Idempotent())
	took := time.Since(start)
	var e *Error
	var de *DialError
	if !errors.As(err, &e) || !errors.As(err, &de) || e.Attempts != 3 {
		t.Fatalf("Call = %v after %v; want the dial error after 3 attempts", err, took)
	}
	if took > 1500*time.Millisecond {
		t.Fatalf("Call failed after %v; want it to give up after two 100 ms backoff waits", took)
	}
	// The next call, once the node is back, is answered.
	time.Sleep(max(800*time.Millisecond-took, 0))
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum, Idempotent()); err != nil || sum != 3 {
		t.Fatalf("call after the node came back: %d, %v", sum, err)
	}
}

// TestMaxAttemptsOneStillGoesOnAfterAFailedDial pins WithMaxAttempts' doc:
// n bounds the attempts whose request may have left; with n = 1 a call that
// picks a node that refuses the dial still goes on to another one.
func TestMaxAttemptsOneStillGoesOnAfterAFailedDial(t *testing.T) {
	var a Arith
	live := serveArith(t, &a)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	// Round robin, so that the dead node is picked in turn.
	c, _ := newTestClient(t, []string{dead, live}, WithMaxAttempts(1),
		withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())),
		WithConnectBackoff(time.Millisecond, 1, time.Millisecond, 0))
	dialled := func() uint64 {
		for _, e := range c.Endpoints() {
			if e.Addr == dead {
				return e.Dials
			}
		}
		return 0
	}
	calls := 0
	for ; calls < 200 && dialled() < 3; calls++ {
		var sum int
		if err := c.Call(context.Background(), "Arith.Add", Pair{calls, 1}, &sum); err != nil {
			t.Fatalf("call %d: %v", calls, err)
		}
		time.Sleep(2 * time.Millisecond) // past the dead node's backoff and quarantine
	}
	if dialled() == 0 {
		t.Fatal("the dead node was never picked; the test proves nothing")
	}
	t.Logf("%d calls succeeded with WithMaxAttempts(1); %d of them dialled the dead node first", calls, dialled())
}

// TestFirstCallsFailOnAFirstDiscoveryError pins Dial's doc: the first calls
// wait for discovery's first answer, not for endpoints. A first answer that
// is an error (a registry not reachable yet) fails them at once, whatever
// their deadline. (The doc used to say they "wait for endpoints as their
// context allows".)
func TestFirstCallsFailOnAFirstDiscoveryError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agent := l.Addr().String()
	l.Close() // no Consul agent there
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := Dial(ctx, "consul://"+agent+"/greeter")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for c.Balancer().StateVersion() == 0 { // the watcher's first answer: its error
		select {
		case <-c.Balancer().Updated():
		case <-ctx.Done():
			t.Fatal("no answer from the watcher")
		}
	}
	start := time.Now()
	var r string
	err = c.Call(ctx, "Greeter.Hello", "x", &r)
	if !errors.Is(err, balancer.ErrNoEndpoints) || time.Since(start) > time.Second {
		t.Fatalf("Call = %v after %v; want ErrNoEndpoints at once", err, time.Since(start))
	}
}
