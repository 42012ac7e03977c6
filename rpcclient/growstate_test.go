package rpcclient

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A call that waits for the pool's extra dial, the pool's last connection
// having died while it was under way, waits for a dial in progress: the
// endpoint reports Connecting, as State's doc says ("a dial is in
// progress; calls wait for it"), not Idle ("no connection and none being
// made"). It reported Idle for as long as the dial took, up to the dial
// timeout.
func TestWaitingForAnExtraDialIsConnecting(t *testing.T) {
	addr := refusingAddr(t)
	c, _ := newTestClient(t, []string{addr}, WithPoolSize(2), withoutNodeHealth())
	e := c.endpoint(addr)
	// An extra connection's dial under way, started beside a live
	// connection that has died since (connDead made the endpoint Idle).
	d := &dialAttempt{done: make(chan struct{}), grow: true}
	e.mu.Lock()
	e.dialing, e.state = d, Idle
	e.mu.Unlock()
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := e.get(ctx)
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // get waits for d
	st := endpointStatus(c, addr).State
	// The dial fails into the empty pool, as run ends it.
	e.mu.Lock()
	e.dialing, e.retryAt, e.state = nil, time.Now().Add(time.Minute), TransientFailure
	d.err = &DialError{Addr: addr, Err: errors.New("refused")}
	d.grow = false
	e.mu.Unlock()
	close(d.done)
	if err := <-got; err == nil {
		t.Fatal("get succeeded with a failed dial")
	}
	if st != Connecting {
		t.Fatalf("a call waiting for the extra dial in progress: the endpoint reports %v, want %v", st, Connecting)
	}
}
