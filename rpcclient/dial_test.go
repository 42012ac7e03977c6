package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
	_ "github.com/dialtone-go/dialtone/discovery/etcd"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// Close releases calls that are dialing, or waiting for another call's
// dial, at once (FAULTS row 29), instead of after the dial timeout.
func TestCloseReleasesDialingCalls(t *testing.T) {
	hole := rpctest.Blackhole(t)
	c, _ := newTestClient(t, []string{hole}, WithDialTimeout(3*time.Second))
	errs := make(chan error, 2)
	for range 2 { // one dials, the other waits for that dial
		go func() {
			var r rpctest.EchoReply
			errs <- c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
		}()
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	c.Close()
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("a dialing call ended with %v, want ErrClosed", err)
			}
		case <-time.After(time.Second):
			t.Fatalf("a dialing call was still pending 1 s after Close (dial timeout 3 s)")
		}
	}
	t.Logf("Close and both dialing calls returned in %v", time.Since(start).Round(time.Millisecond))
}

// A call whose attempt times out while it waits for another call's dial
// sent nothing: a non-idempotent call must not be told its outcome is
// unknown, and the node's breaker must not count it.
func TestWaitingForAnotherDialSendsNothing(t *testing.T) {
	hole := rpctest.Blackhole(t)
	c, _ := newTestClient(t, []string{hole}, WithDialTimeout(2*time.Second))
	go func() {
		var r rpctest.EchoReply
		c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r)
	}()
	time.Sleep(100 * time.Millisecond) // that call is dialing
	var r rpctest.EchoReply
	err := c.Call(context.Background(), "Echo.Exec", &rpctest.ExecArgs{ID: "x"}, &r, AttemptTimeout(200*time.Millisecond))
	if err == nil {
		t.Fatal("a call to a blackholed node succeeded")
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("nothing was sent, but the call says its outcome is unknown: %v", err)
	}
	if got := nodeOutcome(err); !errors.Is(got, errNoOutcome) {
		t.Errorf("the node's breaker would count %v", got)
	}
}

// refusingAddr returns a loopback address nothing listens on.
func refusingAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Error.Tried lists every endpoint a call tried, including those tried
// before it waited for discovery and started over.
func TestErrorNamesEveryEndpointTried(t *testing.T) {
	a, b := refusingAddr(t), refusingAddr(t)
	c, _ := newTestClient(t, []string{a, b}, WithDialTimeout(200*time.Millisecond),
		WithConnectBackoff(50*time.Millisecond, 1.6, 100*time.Millisecond, 0.2))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Call with every node refusing: %v", err)
	}
	slices.Sort(ce.Tried)
	want := []string{a, b}
	slices.Sort(want)
	if !slices.Equal(slices.Compact(ce.Tried), want) || len(ce.Tried) != 2 {
		t.Fatalf("Error.Tried = %v, want each of %v once; error: %v", ce.Tried, want, err)
	}
	if ce.Attempts < 2 {
		t.Fatalf("Error.Attempts = %d, want at least one per node: %v", ce.Attempts, err)
	}
	t.Logf("%v", err)
}

// A dial that outlasts the deadline of the call that started it is not cut
// short: it runs to the dial timeout, its failure starts the reconnect
// backoff, and the node is out of picks meanwhile. Callers whose deadlines
// are shorter than the dial timeout (the defaults: no attempt timeout, a
// 3 s dial timeout) used to cut every dial short, and a dial cut short by
// its caller counted nothing: the blackholed node was dialled again by the
// next call picked onto it, and that call failed too.
func TestDialOutlivesItsCaller(t *testing.T) {
	hole := rpctest.Blackhole(t)
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{hole, srv.Addr()}, WithBalancer(balancer.WithPolicy(balancer.RoundRobin())),
		WithDialTimeout(600*time.Millisecond), WithConnectBackoff(500*time.Millisecond, 1.6, 10*time.Second, 0.2))
	var calls, failed int
	sawBackoff := false
	for start := time.Now(); time.Since(start) < 2500*time.Millisecond; calls++ {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		var r rpctest.EchoReply
		if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
			failed++
		}
		cancel()
		sawBackoff = sawBackoff || endpointStatus(c, hole).State == TransientFailure
		time.Sleep(5 * time.Millisecond)
	}
	dials := endpointStatus(c, hole).Dials
	t.Logf("%d calls with 150 ms deadlines in 2.5 s: %d failed, %d dials to the blackhole", calls, failed, dials)
	// Dials at about 0, 1.1 and 2.2 s (600 ms each, then 0.5 s and 0.8 s
	// of backoff); one failed call waits for each.
	if !sawBackoff {
		t.Error("the blackholed endpoint never entered reconnect backoff")
	}
	if dials < 2 || dials > 6 {
		t.Errorf("%d dials to the blackhole in 2.5 s, want 2-6 (the dial timeout, then the backoff)", dials)
	}
	if failed > int(dials) {
		t.Errorf("%d of %d calls failed, more than the %d dials to the blackhole: calls went on waiting for a hung dial", failed, calls, dials)
	}
}

// After a refresh whose new nodes fail to dial too, the next refresh waits
// for a set newer than theirs, not only newer than the first failure's.
func TestSecondRefreshWaitsForANewerSet(t *testing.T) {
	good := rpctest.Start(t)
	deadA, deadB := refusingAddr(t), refusingAddr(t)
	w := discoverytest.NewAddrs(deadA)
	var n atomic.Int32
	w.OnResolveNow(func() {
		switch n.Add(1) {
		case 1:
			go func() { time.Sleep(30 * time.Millisecond); w.SetAddrs(deadB) }()
		case 2:
			go func() { time.Sleep(30 * time.Millisecond); w.SetAddrs(good.Addr()) }()
		}
	})
	c, err := New(w)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); w.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, &r); err != nil {
		t.Fatalf("the call gave up before the set it had time to wait for (ResolveNow %d): %v", w.ResolveNowCalls(), err)
	}
}

// A caller whose attempt ends just as the dial it waits for connects must
// not quarantine the node after run lifted the quarantine: a single-node
// service would then fail calls for up to the dial timeout (review finding).
// The interleaving is forced: run's success path, then the waiter's
// deadline, then the dial's end.
func TestWaiterDoesNotQuarantineAConnectedNode(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()})
	warmEvery(t, c, 1) // the balancer knows the node
	for range 3 {
		e := &endpoint{addr: srv.Addr(), c: c}
		d := &dialAttempt{done: make(chan struct{}), until: time.Now().Add(3 * time.Second)}
		e.dialing, e.state = d, Connecting
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan error, 1)
		go func() { _, err := e.get(ctx); out <- err }()
		time.Sleep(5 * time.Millisecond) // the waiter is in its select
		cn, err := e.dial(c.life)
		if err != nil {
			t.Fatal(err)
		}
		e.mu.Lock()
		e.dialing = nil
		e.adoptLocked(cn)
		e.mu.Unlock()
		c.bal.Quarantine(e.addr, 0)
		cancel() // the waiter wakes on its deadline, the dial not yet marked done
		if err := <-out; err == nil {
			t.Fatal("the waiter whose ctx ended got a connection")
		}
		close(d.done)
		e.shutdown(ErrClosed) // the endpoint is the test's, not in the pool: Close would wait for it
		for _, st := range c.bal.Status() {
			if st.Quarantined {
				t.Fatalf("%s quarantined after its dial connected", st.Endpoint.Addr)
			}
		}
	}
}

// Shutdown is final: a dial that fails after a drain shut its endpoint down
// leaves it shut down, so that no caller holding the endpoint adopts a
// connection on it later, which Close would never close (review finding).
func TestShutdownStaysAfterAFailedDial(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()})
	e := &endpoint{addr: refusingAddr(t), c: c}
	d := &dialAttempt{done: make(chan struct{}), until: time.Now().Add(time.Second)}
	e.dialing, e.state = d, Connecting
	e.shutdown(ErrClosed) // the drain, while the dial runs
	c.wg.Add(1)
	e.run(d) // the dial is refused
	if d.err == nil {
		t.Fatal("a dial to a refusing address succeeded")
	}
	if st := e.status().State; st != Shutdown {
		t.Fatalf("state %v after a failed dial on a shut-down endpoint; want Shutdown", st)
	}
	if _, err := e.get(context.Background()); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("get on the shut-down endpoint: %v; want it refused as shut down", err)
	}
}

// A peer that accepts connections and closes them at once never proves a
// connection, so its endpoint stays in reconnect backoff: it is not
// redialled on every call (review finding: 128 dials in 2 s with the
// breakers off, because a bare TCP connect ended the backoff). A connection
// that did prove itself ends the backoff when it dies: the next call
// redials at once.
func TestAcceptThenCloseStaysInBackoff(t *testing.T) {
	f := newLimitedServer(t)
	f.closing.Store(true)
	addr := f.addr
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(),
		WithConnectBackoff(200*time.Millisecond, 2, 10*time.Second, 0))

	var calls int
	var sawLost bool
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond && calls < 10000; calls++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		var r int
		err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r, Idempotent())
		cancel()
		if err == nil {
			t.Fatal("a call succeeded on a peer that closes every connection")
		}
		sawLost = sawLost || strings.Contains(err.Error(), "before any reply")
	}
	dials := endpointStatus(c, addr).Dials
	t.Logf("%d calls in 1.5 s: %d dials to a peer that accepts and closes", calls, dials)
	// Dials at about 0, 0.2, 0.6 and 1.4 s.
	if dials < 2 || dials > 5 {
		t.Errorf("%d dials in 1.5 s, want 2-5: connections that never answered must not end the backoff", dials)
	}
	if !sawLost {
		t.Error("no call error said the connection was lost before any reply")
	}

	// The peer recovers: a call gets through after the backoff, and its
	// reply proves the connection.
	f.closing.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		var r int
		err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r, Idempotent())
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no call succeeded within 10 s of the peer serving again: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The proven connection dies: the backoff it ended does not come back.
	e := c.endpoint(addr)
	before := endpointStatus(c, addr).Dials
	f.cut()
	for endpointStatus(c, addr).State == Ready && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	e.mu.Lock()
	failures := e.failures
	e.mu.Unlock()
	if failures != 0 {
		t.Errorf("%d dial failures counted after a connection that answered died; want 0", failures)
	}
	var r int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r, Idempotent()); err != nil {
		t.Fatalf("the call after a proven connection died: %v; want a redial at once", err)
	}
	if got := endpointStatus(c, addr).Dials; got != before+1 {
		t.Errorf("%d dials for the call after the connection died, want 1", got-before)
	}
}

// quarantinedIn reports whether the balancer has addr in quarantine.
func quarantinedIn(c *Client, addr string) bool {
	for _, n := range c.Balancer().Status() {
		if n.Endpoint.Addr == addr {
			return n.Quarantined
		}
	}
	return false
}

// A caller's own write deadline that kills a fresh connection says nothing
// about the peer: the endpoint is not put in backoff or quarantined
// (review finding on the unproven-connection rule: a large request with a
// tight deadline made a healthy server unusable for the backoff).
func TestOwnWriteDeadlineDoesNotBackOff(t *testing.T) {
	srv := rpctest.Start(t)
	addr := srv.Addr()
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(), WithMaxAttempts(1))
	big := &rpctest.EchoArgs{Msg: strings.Repeat("x", 64<<20)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", big, &r); err == nil {
		t.Fatal("a 64 MiB request within 30 ms succeeded; the test needs its write to time out")
	}
	cancel()
	if quarantinedIn(c, addr) || endpointStatus(c, addr).State == TransientFailure {
		t.Errorf("after the caller's write deadline: state %v, quarantined %v; want neither backoff nor quarantine",
			endpointStatus(c, addr).State, quarantinedIn(c, addr))
	}
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
		t.Errorf("the next call to the healthy server: %v", err)
	}
}

// A server restart drops a pool's proven connection and a young one that
// had no reply yet: the endpoint is not put in backoff, whichever death
// is counted first (review finding).
func TestRestartWithAYoungPoolConnectionDoesNotBackOff(t *testing.T) {
	for i := range 5 {
		f := newLimitedServer(t)
		addr := f.addr
		c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(), WithPoolSize(2))
		var r int
		for range 2 { // the second call starts the extra dial
			if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r); err != nil {
				t.Fatal(err)
			}
		}
		e := c.endpoint(addr)
		deadline := time.Now().Add(5 * time.Second)
		for {
			e.mu.Lock()
			n := len(e.conns)
			e.mu.Unlock()
			if n == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the pool's extra connection never joined")
			}
			time.Sleep(time.Millisecond)
		}
		f.cut()
		for endpointStatus(c, addr).State == Ready && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // both deaths counted
		e.mu.Lock()
		failures, st := e.failures, e.state
		e.mu.Unlock()
		if failures != 0 || st == TransientFailure || quarantinedIn(c, addr) {
			t.Fatalf("round %d: after a restart: state %v, %d failures, quarantined %v; want no backoff", i, st, failures, quarantinedIn(c, addr))
		}
		if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r); err != nil {
			t.Fatalf("round %d: the call after the restart: %v", i, err)
		}
	}
}

// A peer that accepts and never answers has its connections closed by the
// heartbeat after more than provenAfter: they are still unproven, so the
// endpoint backs off and is quarantined (review finding: their age alone
// counted as proof, so each call redialled at once).
func TestHeartbeatDeathIsNotProvenByAge(t *testing.T) {
	addr := sink(t)
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(), WithMaxAttempts(1),
		WithHeartbeat(700*time.Millisecond, 500*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r)
	if !errors.Is(err, ErrHeartbeat) {
		t.Fatalf("a call to a peer that never answers: %v; want ErrHeartbeat", err)
	}
	e := c.endpoint(addr)
	e.mu.Lock()
	failures, st := e.failures, e.state
	e.mu.Unlock()
	if failures != 1 || st != TransientFailure || !quarantinedIn(c, addr) {
		t.Errorf("after the heartbeat closed a connection that never had a reply: %d failures, state %v, quarantined %v; want 1, transient-failure, true",
			failures, st, quarantinedIn(c, addr))
	}
}

// An extra connection's dial that fails after the pool's last connection
// died is a failed dial like any other: it starts the reconnect backoff, so
// the callers that waited for it get a BackoffError instead of redialling
// the address at once. It used to back off only the pool's extra dials,
// and the next call dialled again straight away.
func TestExtraDialFailingIntoAnEmptyPoolBacksOff(t *testing.T) {
	addr := refusingAddr(t)
	c, _ := newTestClient(t, []string{addr}, WithPoolSize(2), withoutNodeHealth())
	e := c.endpoint(addr)
	// An extra connection's dial under way, as get starts one beside a
	// live connection; that connection has died since (the pool is
	// empty). It is refused.
	d := &dialAttempt{done: make(chan struct{}), grow: true}
	e.mu.Lock()
	e.dialing = d
	e.mu.Unlock()
	c.wg.Add(1)
	e.run(d)
	if d.err == nil {
		t.Fatal("a dial to a refusing address succeeded")
	}
	e.mu.Lock()
	retryAt := e.retryAt
	e.mu.Unlock()
	if !retryAt.After(time.Now()) {
		t.Fatalf("a failed dial into an empty pool left no reconnect backoff (retryAt %v)", retryAt)
	}
	dials := e.dials.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.get(ctx)
	var be *BackoffError
	if !errors.As(err, &be) {
		t.Fatalf("the next get: %v, want a BackoffError", err)
	}
	if n := e.dials.Load() - dials; n != 0 {
		t.Fatalf("the next get dialled %d more times during the backoff", n)
	}
}

// The reconnect backoff's series of failed dials ends once a connection
// serves, however that connection later ends. Here six dials fail (an
// outage), then the node serves, and its connection is closed on this side
// (a caller's write deadline cut a request short): one more refused dial
// then backs off for the base, as the first failure of a new series, not
// as the seventh of one that ended. On the old code only the death of a
// connection that had proved itself, of the peer's doing, ended the
// series: this one backed off 640 ms, and with the default policy a node
// that had been down once was quarantined for up to 120 s for a single
// refused dial.
func TestBackoffSeriesEndsOnceAConnectionServes(t *testing.T) {
	srv := newLimitedServer(t)
	addr := srv.addr
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(), WithHeartbeat(0, 0),
		WithConnectBackoff(10*time.Millisecond, 2, time.Minute, 0))
	e := c.endpoint(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// dial gets a connection, waiting out the backoff of earlier failures.
	dial := func() (*conn, error) {
		for {
			cn, err := e.get(ctx)
			var be *BackoffError
			if !errors.As(err, &be) {
				return cn, err
			}
			time.Sleep(time.Millisecond)
		}
	}
	srv.refuse()
	for i := range 6 {
		if _, err := dial(); err == nil {
			t.Fatalf("dial %d to a refusing address succeeded", i)
		}
	}
	srv.listen(addr)
	cn, err := dial()
	if err != nil {
		t.Fatalf("dial once the server listens: %v", err)
	}
	var sum int
	if err := cn.do(ctx, "Arith.Add", Pair{A: 1, B: 2}, &sum); err != nil || sum != 3 {
		t.Fatalf("Add: %d, %v", sum, err)
	}
	srv.refuse()
	cn.close(&localCloseError{fmt.Errorf("%w: a write deadline", ErrConnClosed)})
	if _, err := e.get(ctx); err == nil {
		t.Fatal("a dial to a refusing address succeeded")
	}
	e.mu.Lock()
	wait := time.Until(e.retryAt)
	n := e.failures
	e.mu.Unlock()
	if wait > 50*time.Millisecond {
		t.Fatalf("one refused dial after the node served backs off %v (failure %d of a series), want the base, 10ms",
			wait.Round(time.Millisecond), n)
	}
}

// A dial that times out on its own dial timeout, well inside the attempt
// timeout, is a failed dial, not an attempt that ran out of its time.
func TestDialTimeoutIsNoAttemptTimeout(t *testing.T) {
	bh := rpctest.Blackhole(t)
	c, _ := newTestClient(t, []string{bh}, WithDialTimeout(100*time.Millisecond), WithAttemptTimeout(5*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &rpctest.EchoReply{})
	t.Logf("after %v: %v", time.Since(start), err)
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("want a DialError: %v", err)
	}
	if errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("a dial that timed out after 100ms is reported as an attempt timeout (5s): %v", err)
	}
}

// With an empty retry budget, neither a retry nor a hedged backup goes out.
func TestEmptyBudgetNoRetryNoBackup(t *testing.T) {
	for _, hedge := range []time.Duration{0, 20 * time.Millisecond} {
		a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
		px := rpctest.NewProxy(t, a.Addr())
		c, _ := newTestClient(t, []string{px.Addr(), b.Addr()}, WithRetryBudget(0, 0), WithAttemptTimeout(200*time.Millisecond),
			WithHeartbeat(0, 0), WithHedging(hedge), withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
		warmEvery(t, c, 2)
		px.BlackholeResponses()
		base := b.Calls()
		var hit bool
		for i := 0; i < 6 && !hit; i++ {
			var r rpctest.EchoReply
			err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
			if err == nil {
				base = b.Calls()
				continue
			}
			hit = true
			var e *Error
			if !errors.As(err, &e) || e.Attempts != 1 || !errors.Is(err, ErrRetryBudget) && hedge == 0 {
				t.Fatalf("hedge %v: %v (%+v)", hedge, err, e)
			}
			if b.Calls() != base {
				t.Fatalf("hedge %v: b got %d calls with an empty budget: %v", hedge, b.Calls()-base, err)
			}
			t.Logf("hedge %v: %v", hedge, err)
		}
		if !hit {
			t.Fatal("no call went to a")
		}
	}
}

// A refresh whose set still holds only nodes this call tried (a dead node
// dropped first, its replacement registered a moment later: two registry
// updates) is followed by refusals of the remaining node, in reconnect
// backoff; the second refresh must then wait for a set newer than the one
// those refusals came on, not return at once because the refusals carry
// the version of the old dial failure.
func TestRefreshAfterBackoffRefusalWaitsForANewerSet(t *testing.T) {
	good := rpctest.Start(t)
	deadA, deadC := refusingAddr(t), refusingAddr(t)
	w := discoverytest.NewAddrs(deadA, deadC)
	var n atomic.Int32
	w.OnResolveNow(func() {
		if n.Add(1) == 1 {
			go func() {
				time.Sleep(20 * time.Millisecond)
				w.SetAddrs(deadA) // C's deregistration
				time.Sleep(200 * time.Millisecond)
				w.SetAddrs(deadA, good.Addr()) // the replacement registers
			}()
		}
	})
	c, err := New(w)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); w.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, &r); err != nil {
		t.Fatalf("after %v, with %v of its deadline left: %v", time.Since(start).Round(time.Millisecond), time.Until(start.Add(3*time.Second)).Round(time.Millisecond), err)
	}
}

// TestDialNamesTheServiceOfAPrefixWithATrailingSlash: etcd watches
// services/orders/ as it watches services/orders (the same keys), and
// Dial names the service "orders" in both cases, as dialtone's CLI does.
// With the slash it named it "" and its errors said "an unnamed service
// (balancer.WithService names it)", advice a Dial caller cannot follow.
func TestDialNamesTheServiceOfAPrefixWithATrailingSlash(t *testing.T) {
	for _, target := range []string{
		"etcd://127.0.0.1:1/services/orders",
		"etcd://127.0.0.1:1/services/orders/",
		"etcd://127.0.0.1:1/services/orders//",
		"etcd://127.0.0.1:1/orders/",
	} {
		c, err := Dial(context.Background(), target)
		if err != nil {
			t.Fatalf("Dial(%q): %v", target, err)
		}
		if c.service != "orders" {
			t.Errorf("Dial(%q) names the service %q, want \"orders\"", target, c.service)
		}
		c.Close()
	}
}

// Connections use TCP keepalive with the period WithKeepAlive sets, 30 s
// by default (the package doc, DESIGN.md), and none when it is negative:
// the socket says so (Linux: TCP_KEEPIDLE). The option's value alone was
// checked (TestDocumentedDefaults); a dialer that dropped it, Go's 15 s,
// passed every test (mutation review).
func TestConnectionsUseTheKeepAlive(t *testing.T) {
	srv := rpctest.Start(t)
	for _, tc := range []struct {
		name string
		opts []Option
		on   bool
		idle time.Duration
	}{
		{"default", nil, true, 30 * time.Second},
		{"WithKeepAlive(7s)", []Option{WithKeepAlive(7 * time.Second)}, true, 7 * time.Second},
		{"WithKeepAlive(-1)", []Option{WithKeepAlive(-1)}, false, 0},
	} {
		c, _ := newTestClient(t, []string{srv.Addr()}, tc.opts...)
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
		e := c.endpoint(srv.Addr())
		e.mu.Lock()
		nc := e.conns[0].nc
		e.mu.Unlock()
		sc, err := nc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var on, idle int
		var serr error
		if err := sc.Control(func(fd uintptr) {
			if on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); serr == nil {
				idle, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
			}
		}); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		if (on != 0) != tc.on || tc.on && time.Duration(idle)*time.Second != tc.idle {
			t.Errorf("%s: SO_KEEPALIVE %d, TCP_KEEPIDLE %d s; want keepalive %v, period %v", tc.name, on, idle, tc.on, tc.idle)
		}
		c.Close()
	}
}

// A call whose deadline ends while discovery has not answered yet must say
// so: the message named only "discovery failed: discovery has not answered
// yet", sending the user to debug a registry that had not failed, when the
// caller's deadline was what ended the call.
func TestDeadlineWaitingForDiscoveryIsNamed(t *testing.T) {
	silent := discoverytest.New()
	defer silent.Close()
	c, err := New(silent, WithBalancer(balancer.WithService("greeter")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var r int
	err = c.Call(ctx, "Arith.Add", Pair{1, 2}, &r)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want it to wrap context.DeadlineExceeded", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, context.DeadlineExceeded.Error()) {
		t.Errorf("message %q does not name the deadline", msg)
	}
	if strings.Contains(msg, "discovery failed") {
		t.Errorf("message %q says discovery failed; it has not answered yet", msg)
	}
}
