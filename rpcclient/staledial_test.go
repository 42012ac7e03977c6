package rpcclient

import (
	"context"
	"net"
	"net/rpc"
	"sync"
	"testing"
	"time"
)

// A dial that an endpoint started before discovery dropped it, and that
// fails after the address came back (a new endpoint serves it now), is
// the dropped endpoint's business: it does not quarantine the address,
// which is the new endpoint's node in the balancer. It did, for the old
// endpoint's backoff (up to 120 s after a series of failures), and asked
// discovery to refresh, while the new endpoint's connection was fine.
func TestDroppedEndpointsDialDoesNotQuarantineItsSuccessor(t *testing.T) {
	srv := rpc.NewServer()
	var a Arith
	if err := srv.Register(&a); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() { srv.ServeConn(nc) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(), WithHeartbeat(0, 0))

	// The old endpoint has a dial under way, as get starts one, when
	// discovery drops it (maintain: nothing pending).
	old := c.endpoint(addr)
	d := &dialAttempt{done: make(chan struct{}), until: time.Now().Add(c.opts.dialTimeout)}
	old.mu.Lock()
	old.dialing, old.state = d, Connecting
	c.wg.Add(1)
	old.mu.Unlock()
	c.drop([]*endpoint{old})

	// The address is back: a new endpoint connects and serves.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sum int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum); err != nil || sum != 3 {
		t.Fatalf("a call after the address came back: %d, %v", sum, err)
	}
	if c.endpoint(addr) == old {
		t.Fatal("the dropped endpoint serves the address again")
	}

	// The old dial now fails (the listener stops taking connections; the
	// new endpoint's connection lives on).
	l.Close()
	go old.run(d)
	<-d.done
	if quarantinedIn(c, addr) {
		t.Fatalf("the dropped endpoint's failed dial quarantined the address its successor serves (%+v)", endpointStatus(c, addr))
	}
	if err := c.Call(ctx, "Arith.Add", Pair{2, 2}, &sum); err != nil || sum != 4 {
		t.Fatalf("a call on the successor: %d, %v", sum, err)
	}
}
