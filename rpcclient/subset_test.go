package rpcclient

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// With balancer.WithSubset(2) over 6 real servers on loopback, the client
// connects to 2 of them only. When one of the two stops, the next in rank
// stands in and no idempotent call fails; when the stopped one is back, it
// takes its place again and the stand-in's endpoint is drained.
func TestSubsetConnectsToItsNodesOnly(t *testing.T) {
	var srvs []*rpctest.Server
	var addrs []string
	for range 6 {
		s := rpctest.Start(t)
		srvs = append(srvs, s)
		addrs = append(addrs, s.Addr())
	}
	c, _ := newTestClient(t, addrs, WithDrainGrace(50*time.Millisecond),
		WithConnectBackoff(50*time.Millisecond, 1.6, 200*time.Millisecond, 0.2),
		WithBalancer(balancer.WithSubset(2), balancer.WithPolicy(balancer.RoundRobin()),
			balancer.WithBreakers(breaker.Config{OpenTimeout: 100 * time.Millisecond, MaxOpenTimeout: 200 * time.Millisecond})))
	call := func(n int) {
		t.Helper()
		for range n {
			var r rpctest.EchoReply
			if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
				t.Fatal(err)
			}
		}
	}
	serving := func() (out []*rpctest.Server) {
		for _, s := range srvs {
			if s.Calls() > 0 {
				out = append(out, s)
			}
		}
		return out
	}
	endpoints := func() (out []string) {
		for _, e := range c.Endpoints() {
			out = append(out, e.Addr)
		}
		slices.Sort(out)
		return out
	}

	call(200)
	members := serving()
	// Round robin: about 100 each (its turn is kept per P, and the
	// calling goroutine may change P).
	if len(members) != 2 || members[0].Calls() < 90 || members[1].Calls() < 90 {
		t.Fatalf("200 calls over a subset of 2: served by %d servers (%v)", len(members), calls(srvs))
	}
	if got, want := endpoints(), sortedAddrs(members); !slices.Equal(got, want) {
		t.Fatalf("the client holds endpoints %v; want the subset's %v only", got, want)
	}

	// One member stops: the next in rank stands in, and retries carry
	// the calls that met the stopped one.
	dead := members[0]
	dead.Stop()
	call(200)
	if s := c.Stats(); s.Failed != 0 {
		t.Fatalf("stats %+v; no call may fail", s)
	}
	now := serving()
	if len(now) != 3 {
		t.Fatalf("with %s stopped: served by %v; want one stand-in", dead.Addr(), calls(srvs))
	}
	var standIn *rpctest.Server
	for _, s := range now {
		if s != members[0] && s != members[1] {
			standIn = s
		}
	}
	if !c.Balancer().InSubset(dead.Addr()) {
		t.Fatalf("%s, out of rotation, is no longer InSubset: its connections would be drained", dead.Addr())
	}

	// The stopped one comes back on its port: once its quarantine and
	// breaker let it in again it takes its place back, and the stand-in,
	// out of the subset, is drained.
	dead.Restart(t, true)
	want := sortedAddrs(members)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(endpoints(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the client holds endpoints %v; want the subset's %v again", endpoints(), want)
		}
		call(1)
		time.Sleep(10 * time.Millisecond)
	}
	if c.Balancer().InSubset(standIn.Addr()) {
		t.Fatalf("the stand-in %s is still InSubset", standIn.Addr())
	}
	before := standIn.Calls()
	call(100)
	if got := standIn.Calls() - before; got != 0 {
		t.Fatalf("the stand-in served %d calls after it left the subset", got)
	}
	if s := c.Stats(); s.Failed != 0 {
		t.Fatalf("stats %+v; no call may fail", s)
	}
}

func sortedAddrs(ss []*rpctest.Server) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Addr())
	}
	slices.Sort(out)
	return out
}

func calls(ss []*rpctest.Server) map[string]int64 {
	out := map[string]int64{}
	for _, s := range ss {
		out[s.Addr()] = s.Calls()
	}
	return out
}
