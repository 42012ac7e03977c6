package rpcclient

import (
	"context"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// An endpoint that left discovery and is draining reports Shutdown, as
// State's doc says ("the endpoint left discovery (draining) ... no new
// calls"), and Ready again once the address comes back within the grace
// period, its connection kept. It reported Ready throughout: a status
// display showed a node discovery had removed as taking calls.
func TestDrainingEndpointReportsShutdown(t *testing.T) {
	a, b := rpctest.Start(t), rpctest.Start(t)
	c, w := newTestClient(t, []string{a.Addr(), b.Addr()}, WithDrainGrace(time.Minute), withoutNodeHealth())
	e := c.endpoint(a.Addr())
	if _, err := e.get(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := endpointStatus(c, a.Addr()).State; st != Ready {
		t.Fatalf("a connected endpoint reports %v", st)
	}
	w.Update(discovery.Endpoint{ID: b.Addr(), Addr: b.Addr(), Weight: 1})
	waitBalancer(t, c, func(s []balancer.NodeStatus) bool { return len(s) == 1 })
	deadline := time.Now().Add(3 * time.Second)
	for endpointStatus(c, a.Addr()).State != Shutdown {
		if time.Now().After(deadline) {
			t.Fatalf("an endpoint discovery removed, draining, reports %v, want %v", endpointStatus(c, a.Addr()).State, Shutdown)
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.Update(discovery.Endpoint{ID: a.Addr(), Addr: a.Addr(), Weight: 1}, discovery.Endpoint{ID: b.Addr(), Addr: b.Addr(), Weight: 1})
	waitBalancer(t, c, func(s []balancer.NodeStatus) bool { return len(s) == 2 })
	deadline = time.Now().Add(3 * time.Second)
	for endpointStatus(c, a.Addr()).State != Ready {
		if time.Now().After(deadline) {
			t.Fatalf("an endpoint back within the grace period reports %v, want %v", endpointStatus(c, a.Addr()).State, Ready)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := endpointStatus(c, a.Addr()).Dials; d != 1 {
		t.Fatalf("%d dials, want the one connection kept", d)
	}
}
