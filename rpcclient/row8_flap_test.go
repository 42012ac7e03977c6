package rpcclient

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/rpctest"
	"github.com/hashicorp/consul/api"
)

// FAULTS.md row 8 end to end, with real parts: a real agent whose TTL
// health check for one of two real backends flaps passing <-> critical
// (every 400 ms here, not 2 s, to keep the test short), a consul Watcher
// behind a counting pass-through, and a Client under load. The figure:
// "registry requests per watcher bounded; at most one new dial per flap".
// TestFlapKeepsConnection proves the dials with a static watcher; the
// registry side is proven here: the watcher follows every flap (the
// balancer sees the node leave and come back) with a bounded number of
// requests, the flapping backend accepts one connection over all the
// flaps (the drain grace keeps it), and no call fails.
func TestConsulFlapBoundedRequestsOneDial(t *testing.T) {
	agent := consultest.Start(t)
	cfg := api.DefaultConfig()
	cfg.Address = agent.Addr()
	ac, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
	for id, s := range map[string]*rpctest.Server{"echo-a": a, "echo-b": b} {
		host, port, _ := net.SplitHostPort(s.Addr())
		p, _ := strconv.Atoi(port)
		if err := ac.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "echo", Address: host, Port: p,
			Check: &api.AgentServiceCheck{TTL: "1m"}}); err != nil {
			t.Fatal(err)
		}
		if err := ac.Agent().UpdateTTL("service:"+id, "", api.HealthPassing); err != nil {
			t.Fatal(err)
		}
	}
	var requests atomic.Int64
	target, _ := url.Parse("http://" + agent.Addr())
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	w, err := consul.New("echo", consul.WithAddress(strings.TrimPrefix(front.URL, "http://")), consul.WithWaitTime(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := New(w, WithDrainGrace(time.Minute), WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var r rpctest.EchoReply
		if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; endpointStatus(c, a.Addr()).Dials == 0 || len(c.Balancer().Status()) != 2; i++ {
		if i == 2000 {
			t.Fatalf("2000 calls never reached both nodes (status %+v)", c.Balancer().Status())
		}
		call()
	}
	before := requests.Load()
	const flaps = 5
	var left, back int
	for range flaps {
		for _, status := range []string{api.HealthCritical, api.HealthPassing} {
			if err := ac.Agent().UpdateTTL("service:echo-a", "", status); err != nil {
				t.Fatal(err)
			}
			want := map[string]int{api.HealthCritical: 1, api.HealthPassing: 2}[status]
			seen := false
			for end := time.Now().Add(400 * time.Millisecond); time.Now().Before(end); {
				call()
				if len(c.Balancer().Status()) == want {
					seen = true
				}
				time.Sleep(2 * time.Millisecond)
			}
			if seen && want == 1 {
				left++
			}
			if seen && want == 2 {
				back++
			}
		}
	}
	made := requests.Load() - before
	t.Logf("%d flaps: the node left %d times and came back %d times; %d registry requests; backend a accepted %d connections",
		flaps, left, back, made, len(a.Accepts()))
	if left != flaps || back != flaps {
		t.Fatalf("the watcher followed %d of %d departures and %d of %d returns", left, flaps, back, flaps)
	}
	// Each of the 2 x flaps changes ends a blocking query, which the watcher
	// sends again: about 2 requests a change (20 measured), and as many
	// again for slack. A watcher that re-queries without blocking makes
	// its rate limit's worth (20/s: 80 in the 4 s).
	if limit := int64(4 * 2 * flaps); made > limit {
		t.Errorf("%d registry requests for %d health changes, want at most %d", made, 2*flaps, limit)
	}
	if n := len(a.Accepts()); n != 1 {
		t.Errorf("the flapping backend accepted %d connections over %d flaps, want 1 (kept through the drain grace)", n, flaps)
	}
}
