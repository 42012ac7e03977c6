package rpcclient

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/discovery/etcd"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// zoneBackend is one net/rpc server registered with its zone.
type zoneBackend struct {
	id, zone string
	srv      *rpctest.Server
	dereg    func() error // the registration's Close
}

// zoneRegistry is a real registry for testLocalZone: its target, and how a
// backend registers in it with its zone (register returns the
// deregistration, which t.Cleanup also calls).
type zoneRegistry struct {
	target   string
	register func(t *testing.T, z *zoneBackend) func() error
}

// WithLocalZone end to end, through a real etcd and real net/rpc backends
// on loopback: the zone goes from each backend's Registrar through etcd's
// JSON value and the "etcd" target's watcher to the balancer.
func TestLocalZoneThroughEtcd(t *testing.T) {
	es := etcdtest.Start(t)
	cli := es.Client(t)
	const prefix = "zonetest/echo"
	testLocalZone(t, zoneRegistry{
		target: "etcd://" + strings.Join(es.Hosts(), ",") + "/" + prefix,
		register: func(t *testing.T, z *zoneBackend) func() error {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, err := etcd.NewRegistrar(ctx, cli, prefix, discovery.Endpoint{ID: z.id, Addr: z.srv.Addr(), Zone: z.zone})
			if err != nil {
				t.Fatalf("register %s: %v", z.id, err)
			}
			t.Cleanup(func() { r.Close() })
			return r.Close
		},
	})
}

// WithLocalZone end to end, through a real Consul agent: the zone goes
// from each backend's Registration.Meta["zone"] through the agent's
// catalog and the "consul" target's watcher to the balancer.
func TestLocalZoneThroughConsul(t *testing.T) {
	agent := consultest.Start(t)
	testLocalZone(t, zoneRegistry{
		target: "consul://" + agent.Addr() + "/zoneecho",
		register: func(t *testing.T, z *zoneBackend) func() error {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, err := consul.NewRegistrar(ctx, consul.Registration{
				Name: "zoneecho", ID: z.id, Addr: z.srv.Addr(),
				Meta:  map[string]string{"zone": z.zone},
				Check: consul.Check{TTL: 10 * time.Second},
			}, consul.WithAddress(agent.Addr()))
			if err != nil {
				t.Fatalf("register %s: %v", z.id, err)
			}
			t.Cleanup(func() { r.Close() })
			return r.Close
		},
	})
}

// testLocalZone: with 3 nodes in zone a and 3 in zone b, a client in zone
// a (WithLocalZone("a"), the default P2C policy) sends every call to zone
// a; when 2 of zone a's nodes stop and deregister, no call fails, and a
// share of them spills over to zone b: 1.4 x 1/3 = 47 % stay on the
// survivor, and P2C takes the rest over all 4 nodes by their latency
// estimates. The zone's size remembers the 2 nodes the registry no longer
// lists, else the survivor would keep every call. When they come back and
// register again, the calls return to zone a only.
func testLocalZone(t *testing.T, reg zoneRegistry) {
	start := time.Now()
	var a, b []*zoneBackend
	for _, zone := range []string{"a", "b"} {
		for i := range 3 {
			id := fmt.Sprintf("%s%d", zone, i)
			z := &zoneBackend{id: id, zone: zone, srv: rpctest.Start(t, rpctest.WithName(id))}
			z.dereg = reg.register(t, z)
			if zone == "a" {
				a = append(a, z)
			} else {
				b = append(b, z)
			}
		}
	}
	all := append(append([]*zoneBackend(nil), a...), b...)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, reg.target,
		WithBalancer(balancer.WithLocalZone("a")),
		WithConnectBackoff(20*time.Millisecond, 1.6, 200*time.Millisecond, 0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var failures int
	echo := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var r rpctest.EchoReply
		if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
			failures++
			t.Errorf("call failed: %v", err)
		}
	}
	// served runs n calls and returns how many each backend served.
	served := func(n int) map[string]int64 {
		before := make(map[string]int64, len(all))
		for _, z := range all {
			before[z.id] = z.srv.Calls()
		}
		for range n {
			echo()
		}
		out := make(map[string]int64, len(all))
		for _, z := range all {
			out[z.id] = z.srv.Calls() - before[z.id]
		}
		return out
	}
	sum := func(m map[string]int64, zs []*zoneBackend) (n int64) {
		for _, z := range zs {
			n += m[z.id]
		}
		return n
	}
	// waitFor calls until cond holds, at most 5 s.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s; balancer status: %+v", what, c.Balancer().Status())
			}
			echo()
			time.Sleep(5 * time.Millisecond)
		}
	}
	// listed returns the balancer's nodes by zone, and how many are Ready.
	listed := func() (zones map[string]int, ready map[string]int) {
		zones, ready = map[string]int{}, map[string]int{}
		for _, st := range c.Balancer().Status() {
			zones[st.Endpoint.Zone]++
			if st.Ready {
				ready[st.Endpoint.Zone]++
			}
		}
		return zones, ready
	}

	// 1. Every call goes to zone a, over its 3 nodes.
	const n = 600
	got := served(n)
	if zones, _ := listed(); zones["a"] != 3 || zones["b"] != 3 {
		t.Fatalf("the balancer lists %v nodes by zone, want 3 in a and 3 in b: the zone did not come through etcd", zones)
	}
	if sb := sum(got, b); sb != 0 || sum(got, a) != n {
		t.Fatalf("all in zone a: zone a served %d, zone b %d of %d calls (%v)", sum(got, a), sb, n, got)
	}
	for _, z := range a {
		if got[z.id] == 0 {
			t.Errorf("all in zone a: %s served no call (%v)", z.id, got)
		}
	}
	t.Logf("all in zone a: %v", got)

	// 2. Two of zone a's nodes stop and leave etcd: calls spill over.
	for _, z := range a[1:] {
		z.srv.Stop()
	}
	for range 20 { // retried onto the others while the client learns
		echo()
	}
	for _, z := range a[1:] {
		if err := z.dereg(); err != nil {
			t.Fatalf("deregister %s: %v", z.id, err)
		}
	}
	waitFor("etcd drops the stopped nodes", func() bool {
		zones, _ := listed()
		return zones["a"] == 1 && zones["b"] == 3
	})
	got = served(n)
	survivor, sb := got[a[0].id], sum(got, b)
	if survivor+sb != n {
		t.Fatalf("spill: %d calls reached the stopped nodes or none (%v)", n-survivor-sb, got)
	}
	// The survivor's share is 47 % (the local draw, Binomial(600, 0.467):
	// standard deviation 2 %) plus what P2C gives it of the rest, over
	// all 4 nodes: from none (its latency estimate is the highest: a slow
	// first sample, the dial's, lasts seconds in a peak EWMA) to half
	// (the lowest), so 47 to 73 %; zone b serves the other 27 to 53 %,
	// and none of its nodes more than half the rest, 27 %.
	if survivor < n*35/100 || survivor > n*85/100 {
		t.Errorf("spill: the survivor served %d of %d calls, want 47 to 73 %% (%v)", survivor, n, got)
	}
	if sb < n*15/100 {
		t.Errorf("spill: zone b served %d of %d calls, want 27 to 53 %% (%v)", sb, n, got)
	}
	for _, z := range b {
		if got[z.id] >= survivor {
			t.Errorf("spill: %s served %d calls, more than the survivor's %d (%v)", z.id, got[z.id], survivor, got)
		}
	}
	t.Logf("2 of zone a's 3 down: %v", got)

	// 3. They come back (on the same ports when free) and register again:
	// calls return to zone a only.
	for _, z := range a[1:] {
		if err := z.srv.TryRestart(true); err != nil {
			t.Logf("%s: %v; on a new port", z.id, err)
			z.srv.Restart(t, false)
		}
		z.dereg = reg.register(t, z)
	}
	waitFor("back to zone a only", func() bool {
		zones, ready := listed()
		return zones["a"] == 3 && ready["a"] == 3 && ready["b"] == 0
	})
	got = served(n)
	if sb := sum(got, b); sb != 0 || sum(got, a) != n {
		t.Fatalf("back in zone a: zone a served %d, zone b %d of %d calls (%v)", sum(got, a), sb, n, got)
	}
	// (Not every zone a node need serve: P2C may keep one with a failure
	// on record aside until it probes it, 2 s later.)
	t.Logf("back in zone a: %v", got)
	if failures != 0 {
		t.Fatalf("%d calls failed", failures)
	}
	t.Logf("took %v", time.Since(start))
}
