package rpcclient

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// startKids starts n real child backends (SIGKILLable) and a discoverytest
// watcher that lists them.
func startKids(t *testing.T, n int, prefix string) ([]*rpctest.Child, []string, *discoverytest.Watcher) {
	var kids []*rpctest.Child
	var addrs []string
	for i := range n {
		k := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName(fmt.Sprintf("%s%d", prefix, i)))
		kids = append(kids, k)
		addrs = append(addrs, k.Addr())
	}
	return kids, addrs, discoverytest.NewAddrs(addrs...)
}

// FAULTS.md row 1, the half TestKillOneOfThreeUnderLoad does not look at:
// "The dead address is quarantined and discovery refreshed." One of three
// real child backends is SIGKILLed under load. Round robin, with breakers
// and ejection off, keeps picking the dead node, so its redials fail; the
// balancer must then hold it in quarantine (picks skip it instead of
// spending an attempt and a retry token on its backoff every third call),
// and discovery must be asked to refresh.
func TestKilledBackendIsQuarantined(t *testing.T) {
	kids, addrs, w := startKids(t, 3, "q")
	c, err := New(w, WithAttemptTimeout(500*time.Millisecond),
		withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); w.Close() })
	dead := addrs[0]

	var quarantined atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { // the poller: was the dead address ever in quarantine
		for ctx.Err() == nil && !quarantined.Load() {
			if quarantinedIn(c, dead) {
				quarantined.Store(true)
			}
			time.Sleep(time.Millisecond)
		}
	})
	go func() { time.Sleep(300 * time.Millisecond); kids[0].Kill() }()
	out := runLoad(8, 5000, 1500*time.Millisecond, func(ctx context.Context, _, _ int) error {
		var r rpctest.EchoReply
		return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "hi"}, &r, Idempotent())
	})
	cancel()
	wg.Wait()
	if n, first := failures(out); n != 0 {
		t.Fatalf("%d of %d idempotent calls failed across the kill; first: %v", n, len(out), first)
	}
	if !quarantined.Load() {
		t.Errorf("the SIGKILLed address %s was never quarantined in the balancer during %d calls (status %+v)",
			dead, len(out), endpointStatus(c, dead))
	}
	if n := w.ResolveNowCalls(); n == 0 {
		t.Errorf("discovery was never asked to refresh (ResolveNow) after the kill")
	}
	t.Logf("%d calls, 0 failures; quarantined %v; %d ResolveNow calls", len(out), quarantined.Load(), w.ResolveNowCalls())
}
