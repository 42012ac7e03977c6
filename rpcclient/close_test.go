package rpcclient

import (
	"context"
	"errors"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
	"github.com/dialtone-go/dialtone/internal/returns"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// A call waiting for a refreshed endpoint set after its dial failed and the
// pick that followed found nothing (the node quarantined, no panic mode)
// fails with ErrClosed when the client closes meanwhile, as Close promises
// the calls pending.
func TestCloseDuringRefreshAfterAFailedPickIsErrClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // dials are refused
	c, _ := newTestClient(t, []string{dead}, WithDialTimeout(10*time.Second),
		withoutNodeHealth(balancer.WithPanicThreshold(0)))
	errc := make(chan error, 1)
	go func() {
		var r int
		errc <- c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r, Idempotent())
	}()
	// The dial fails at once; the call then waits for discovery.
	time.Sleep(300 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v; want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call did not end at Close")
	}
}

// Close fails the calls pending on a healthy node with ErrClosed: this side's
// decision, not the node's failure. It must not count against the node's
// breaker (DESIGN: only transport errors and attempt timeouts count), and
// the user's breaker-event callback must not hear the node "open" because
// the client shut down.
func TestCloseDoesNotTripBreakersOfHealthyNodes(t *testing.T) {
	srv := rpctest.Start(t)
	var mu sync.Mutex
	var events []breaker.Event
	c, _ := newTestClient(t, []string{srv.Addr()}, WithBalancer(
		balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 5}),
		balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true}),
		balancer.WithBreakerEvents(func(e breaker.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		})))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "warm"}, &r); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			var r rpctest.EchoReply
			c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: 2 * time.Second}, &r, Idempotent())
		})
	}
	for c.Endpoints()[0].Pending < 20 {
		time.Sleep(time.Millisecond)
	}
	// What the breaker saw, read as the balancer does, right as Close
	// releases the calls.
	bal := c.Balancer()
	c.Close()
	wg.Wait()
	st := bal.Status()
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events {
		t.Errorf("breaker event during Close of a healthy node: %s %v -> %v", e.Addr, e.From, e.To)
	}
	for _, s := range st {
		if s.Breaker != breaker.Closed {
			t.Errorf("after Close, the healthy node's breaker is %v", s.Breaker)
		}
	}
}

// closeErrWatcher is a Static whose Close reports an error, as an etcd
// client's failing Close would.
type closeErrWatcher struct{ *discovery.Static }

var errWatcherClose = errors.New("watcher close failed")

func (w closeErrWatcher) Close() error {
	w.Static.Close()
	return errWatcherClose
}

// Close returns the error of closing the watcher a Dial made, on every
// call; it was dropped (Close always returned nil).
func TestCloseReturnsTheOwnedWatchersError(t *testing.T) {
	srv := rpctest.Start(t)
	discovery.Register("closeerr", func(ctx context.Context, tg discovery.Target) (discovery.Watcher, error) {
		s, err := discovery.NewStatic(discovery.Endpoint{ID: "a", Addr: srv.Addr()})
		return closeErrWatcher{s}, err
	})
	c, err := Dial(context.Background(), "closeerr:///svc")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := c.Close(); !errors.Is(err, errWatcherClose) {
			t.Fatalf("Close #%d = %v; want the watcher's error", i+1, err)
		}
	}
}

// A Client over a watcher that can never answer (closed before New, as a
// caller that got the ownership backwards does) must not leave its calls
// waiting for a first State that cannot come: a call with no deadline
// would hang for ever.
func TestCallOverAClosedWatcherFails(t *testing.T) {
	w, err := discovery.StaticAddrs(serveArith(t, &Arith{}))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	c, err := New(w)
	if err != nil {
		t.Logf("New over a closed watcher: %v", err)
		return
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		var r int
		done <- c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Call over a closed watcher: %v; want it to wrap discovery.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		c.Close() // releases the call
		<-done
		t.Fatalf("Call (no deadline) over a closed watcher still waiting after 3 s")
	}
}

// Close returns after every goroutine the Client started has exited (its
// doc): here a dial under way to an address that never answers, and the
// client's maintenance goroutine.
func TestCloseReturnsAfterItsGoroutinesExit(t *testing.T) {
	addr := rpctest.Blackhole(t)
	for i := range 10 {
		w, _ := newTestClient(t, []string{addr}, WithDialTimeout(10*time.Second), WithHeartbeat(0, 0), withoutNodeHealth())
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		var r rpctest.EchoReply
		w.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r) // starts a dial that outlives it
		cancel()
		w.Close()
		if fn := busyIn(runtime.Stack, "rpcclient.(*endpoint).run", "rpcclient.(*Client).maintain"); fn != "" {
			t.Fatalf("client %d: %s still running after Close returned", i, fn)
		}
	}
}

// busyIn returns the first of fns that some goroutine, in the dump stack
// writes, is still running anything under, or "". A goroutine whose last
// act is its deferred wg.Done can be seen by the waiter it woke before it
// exits: it counts as done when it has no frame above fn's, or only the
// WaitGroup's (see finishing).
func busyIn(stack func([]byte, bool) int, fns ...string) string {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:stack(buf, true)]), "\n\n") {
		lines := strings.Split(g, "\n")
		for _, fn := range fns {
			at := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "github.com/dialtone-go/dialtone/"+fn+"(") })
			if at < 0 {
				continue
			}
			if finishing(lines[1:at]) {
				continue
			}
			return fn
		}
	}
	return ""
}

// finishing reports whether the frames above a goroutine's fn (with their
// file lines) are only those of its last wg.Done: WaitGroup methods and the
// sync and runtime functions they call.
func finishing(above []string) bool {
	wg := len(above) == 0
	for _, l := range above {
		if strings.HasPrefix(l, "\t") {
			continue
		}
		if !strings.HasPrefix(l, "sync.") && !strings.HasPrefix(l, "internal/sync.") && !strings.HasPrefix(l, "runtime.") {
			return false
		}
		wg = wg || strings.HasPrefix(l, "sync.(*WaitGroup).")
	}
	return wg
}

// Close, called from two goroutines at once, returns with calls in every
// stage: waiting for a reply from a server that holds it, waiting for a dial
// to an address that never answers, and waiting for discovery's first
// answer (a second client, over a watcher that never answers). Each call
// then fails with ErrClosed, and both Closes return the same result.
func TestConcurrentClosesWithCallsInEveryStage(t *testing.T) {
	a := Arith{gate: make(chan struct{})}
	slow := serveArith(t, &a)
	hole := rpctest.Blackhole(t)
	c, _ := newTestClient(t, []string{slow, hole}, WithDialTimeout(time.Minute), WithHeartbeat(0, 0),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin()), balancer.WithoutBreakers()))
	silent := discoverytest.New()
	defer silent.Close()
	c2, err := New(silent)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 20)
	for i := range 16 {
		cl := c
		if i%4 == 3 {
			cl = c2
		}
		go func() {
			var r int
			errc <- cl.Call(context.Background(), "Arith.Slow", Pair{1, 0}, &r)
		}()
	}
	waitCalls(t, &a, 1)
	time.Sleep(100 * time.Millisecond) // the other calls dial the blackhole, or wait for discovery
	bounded := func(what string, fn func()) { t.Helper(); returns.Within(t, 3*time.Second, what, fn) }
	var errs [4]error
	bounded("concurrent Closes", func() {
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				if i%2 == 0 {
					errs[i] = c.Close()
				} else {
					errs[i] = c2.Close()
				}
			})
		}
		wg.Wait()
	})
	for i := range 16 {
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("call %d after Close: %v; want ErrClosed", i, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("only %d of 16 calls returned 3 s after Close", i)
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("Close %d: %v", i, err)
		}
	}
	close(a.gate)
}
