package rpcclient

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// An endpoint whose pool's last connection died while the pool's extra
// (growth) dial was under way has a dial in progress, which the next call
// waits for (see get): its status is Connecting ("a dial is in progress;
// calls wait for it"), not Idle ("no connection and none being made; the
// next call dials"). connDead left it Idle, and the status showed Idle for
// as long as the dial took (up to the dial timeout) unless a call came.
func TestPoolGrowthDialAfterTheLastConnectionDiedIsConnecting(t *testing.T) {
	var a Arith
	addr := serveArith(t, &a)
	c, _ := newTestClient(t, []string{addr}, WithPoolSize(2), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sum int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum); err != nil {
		t.Fatal(err)
	}
	e := c.endpoint(addr)
	// Let the pool's own growth dial end, then stand in for one under way.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.Lock()
		n, busy := len(e.conns), e.dialing != nil
		e.mu.Unlock()
		if n == 2 && !busy {
			break
		}
		if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum); err != nil { // grows the pool
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool of %d, dialing %v", n, busy)
		}
		time.Sleep(time.Millisecond)
	}
	d := &dialAttempt{done: make(chan struct{}), grow: true}
	e.mu.Lock()
	e.dialing = d
	conns := append([]*conn(nil), e.conns...)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.dialing = nil
		e.mu.Unlock()
		close(d.done)
	}()
	if st := endpointStatus(c, addr).State; st != Ready {
		t.Fatalf("with connections up and a growth dial: %v, want Ready", st)
	}
	for _, cn := range conns { // the peer goes away: both die
		cn.close(fmt.Errorf("%w: test: peer reset", ErrConnClosed))
	}
	if st := endpointStatus(c, addr).State; st != Connecting {
		t.Fatalf("no connection left, the growth dial under way: the endpoint reports %v, want %v", st, Connecting)
	}
	// And after a connection lost before any reply put it in backoff while
	// the growth dial runs: calls still wait for that dial (get looks at
	// e.dialing first), so it is Connecting too, not TransientFailure.
	e.mu.Lock()
	e.state, e.retryAt = TransientFailure, time.Now().Add(time.Minute)
	e.mu.Unlock()
	if st := endpointStatus(c, addr).State; st != Connecting {
		t.Fatalf("backoff with the growth dial under way: the endpoint reports %v, want %v", st, Connecting)
	}
}
