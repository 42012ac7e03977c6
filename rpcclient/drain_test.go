package rpcclient

import (
	"context"
	"errors"
	"net/rpc"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// An endpoint that leaves discovery is drained: no new calls, its
// in-flight call finishes, then its connection closes.
func TestRemovedEndpointIsDrained(t *testing.T) {
	a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
	// Round robin: the test needs calls on both nodes (P2C, the default,
	// may keep to the cheaper one).
	c, w := newTestClient(t, []string{a.Addr(), b.Addr()}, WithDrainGrace(50*time.Millisecond),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	// Warm both connections.
	for range 4 {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
	}
	// A slow call in flight on a.
	warm := a.Calls()
	slow := make(chan error, 1)
	go func() {
		for range 20 { // round robin reaches a within a few calls
			var r rpctest.EchoReply
			err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Sleep: 400 * time.Millisecond}, &r)
			if err != nil || r.Server == "a" {
				slow <- err
				return
			}
		}
		slow <- errors.New("20 round-robin calls never reached a")
	}()
	// a's handler has the slow call. Not waitPending: the client's
	// heartbeat ping on a's idle connection counts as pending too, and
	// removing a while only the ping was out left the slow call no node
	// but b.
	waitHandled(t, a, warm)
	if err := w.Update(discovery.Endpoint{ID: b.Addr(), Addr: b.Addr(), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	waitBalancer(t, c, func(s []balancer.NodeStatus) bool { return len(s) == 1 })
	for range 20 {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil || r.Server != "b" {
			t.Fatalf("after removal: %q, %v; want every call on b", r.Server, err)
		}
	}
	if err := <-slow; err != nil {
		t.Fatalf("the in-flight call on the drained node failed: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for endpointStatus(c, a.Addr()).Addr != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the drained endpoint is still open: %+v", endpointStatus(c, a.Addr()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FAULTS.md row 8: a flapping endpoint keeps its connection through the
// grace period: at most one new dial per flap.
func TestFlapKeepsConnection(t *testing.T) {
	a, b := rpctest.Start(t), rpctest.Start(t)
	both := []discovery.Endpoint{{ID: a.Addr(), Addr: a.Addr(), Weight: 1}, {ID: b.Addr(), Addr: b.Addr(), Weight: 1}}
	c, w := newTestClient(t, []string{a.Addr(), b.Addr()}, WithDrainGrace(time.Minute),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin()))) // calls on both nodes
	call := func() {
		for range 6 {
			var r rpctest.EchoReply
			if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The round-robin cursor is per P: call until a has been dialled.
	for i := 0; endpointStatus(c, a.Addr()).Dials == 0; i++ {
		if i == 10 {
			t.Fatal("60 round-robin calls never dialled a")
		}
		call()
	}
	for range 5 { // flap a out and back in
		w.Update(both[1])
		waitBalancer(t, c, func(s []balancer.NodeStatus) bool { return len(s) == 1 })
		call()
		w.Update(both...)
		waitBalancer(t, c, func(s []balancer.NodeStatus) bool { return len(s) == 2 })
		call()
	}
	if d := endpointStatus(c, a.Addr()).Dials; d != 1 {
		t.Fatalf("%d dials to a flapping endpoint over 5 flaps, want 1", d)
	}
	// The endpoint's own count restarts at 0 when a drained endpoint is
	// made anew, so it alone cannot see a connection closed and redialled
	// on every flap: the backend counts the connections it accepted.
	if n := len(a.Accepts()); n != 1 {
		t.Fatalf("the flapping backend accepted %d connections over 5 flaps, want 1 (the pool's connection kept through the grace period)", n)
	}
}

// FAULTS.md row 7: every node failing: retries are bounded by the budget
// and calls fail fast with the last error.
func TestRetryBudgetBoundsAStorm(t *testing.T) {
	a, b := rpctest.Start(t), rpctest.Start(t)
	a.Hang()
	b.Hang()
	defer a.Unhang()
	defer b.Unhang()
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()},
		WithAttemptTimeout(5*time.Millisecond), WithMaxAttempts(5), WithRetryBudget(0.2, 10), WithHeartbeat(0, 0),
		WithRetryBackoff(time.Millisecond, time.Millisecond),
		withoutNodeHealth())
	start := time.Now()
	calls, attempts, budgetErrs := 0, 0, 0
	for time.Since(start) < time.Second && calls < 2000 {
		var r rpctest.EchoReply
		err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("call against hung nodes: %v", err)
		}
		calls++
		attempts += e.Attempts
		if errors.Is(err, ErrRetryBudget) {
			budgetErrs++
		}
	}
	retries := attempts - calls
	secs := time.Since(start).Seconds()
	// 20 % of calls, plus the 10/s floor (with its burst of 10).
	limit := int(0.2*float64(calls) + 10*secs + 10)
	if retries > limit {
		t.Fatalf("%d retries for %d calls in %.1fs, budget allows %d", retries, calls, secs, limit)
	}
	if budgetErrs == 0 {
		t.Fatal("no call reported the retry budget exhausted")
	}
	t.Logf("%d calls, %d retries (budget %d), %d stopped by the budget", calls, retries, limit, budgetErrs)
}

// waitHandled waits until srv's handlers have had more than n calls: a call
// made since srv counted n is at its handler, whatever the client's
// heartbeat does.
func waitHandled(t *testing.T, srv *rpctest.Server, n int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); srv.Calls() <= n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no call reached %s's handler", srv.Addr())
		}
	}
}

// waitPending waits until addr has a request out. A heartbeat ping counts:
// a test that needs a call out on a node that also has an idle connection
// waits for its backend's Calls instead.
func waitPending(t *testing.T, c *Client, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for endpointStatus(c, addr).Pending == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no call pending on %s", addr)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitBalancer(t *testing.T, c *Client, ok func([]balancer.NodeStatus) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		ch := c.Balancer().Updated()
		if ok(c.Balancer().Status()) {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatal("balancer did not reach the expected state")
		}
	}
}

// A hung server without the heartbeat service is caught by the read
// timeout: its pending call is released.
func TestReadTimeoutWithoutHeartbeatService(t *testing.T) {
	s := rpctest.Start(t) // no heartbeat service
	// The ping timeout is long so that a slow answer to the first ping
	// on a loaded -race run does not close the connection; once that
	// answer has said there is no heartbeat service, no ping is sent.
	c, _ := newTestClient(t, []string{s.Addr()}, WithHeartbeat(50*time.Millisecond, time.Second), WithReadTimeout(200*time.Millisecond))
	var r rpctest.EchoReply
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
		t.Fatal(err)
	}
	// The first ping finds no heartbeat service: the server answers it
	// with an error, the connection's second message, and the heartbeat
	// goroutine stops pinging before it looks at its next tick. Wait for
	// that answer to be read; the hang would hold it back.
	cn := c.endpoint(s.Addr()).ready()
	if cn == nil {
		t.Fatal("no connection up after a call")
	}
	for deadline := time.Now().Add(5 * time.Second); cn.reads.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first ping was not answered within 5 s (%d messages read)", cn.reads.Load())
		}
	}
	s.Hang()
	defer s.Unhang()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r)
	if !errors.Is(err, ErrReadTimeout) {
		t.Fatalf("call to a hung server without heartbeats: %v, want ErrReadTimeout", err)
	}
}

// With the heartbeat off, the read timeout still guards the connection.
// It used to be checked by the heartbeat goroutine only, which the
// heartbeat being off did not start: the call waited out its own deadline.
func TestReadTimeoutWithTheHeartbeatOff(t *testing.T) {
	s := rpctest.Start(t)
	c, _ := newTestClient(t, []string{s.Addr()}, WithHeartbeat(0, 0), WithReadTimeout(200*time.Millisecond))
	var r rpctest.EchoReply
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
		t.Fatal(err)
	}
	s.Hang()
	defer s.Unhang()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r)
	if !errors.Is(err, ErrReadTimeout) {
		t.Fatalf("call to a hung server, heartbeat off, read timeout 200 ms: %v after %v, want ErrReadTimeout", err, time.Since(start))
	}
}

// The caller's own deadline is never reported as an attempt timeout and
// never counted against the node's breaker or ejection. It does not cut
// the dial short either: the callers wait for one dial, which goes on to
// its own timeout and says what it finds (the node is out of picks while
// it hangs; see TestDialOutlivesItsCaller).
func TestCallerDeadlineIsNotTheNodesFault(t *testing.T) {
	hole := rpctest.Blackhole(t)
	c, _ := newTestClient(t, []string{hole}, WithAttemptTimeout(300*time.Millisecond), WithDialTimeout(time.Second))
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%4+1)*time.Millisecond)
		var r rpctest.EchoReply
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrAttemptTimeout) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("call %d with a short deadline: %v; want the caller's DeadlineExceeded only", i, err)
		}
	}
	for _, s := range c.Balancer().Status() {
		if s.Breaker != 0 || s.Ejected {
			t.Fatalf("the caller's deadlines were held against the node: %+v", s)
		}
	}
	if st := endpointStatus(c, hole); st.State != Connecting || st.Dials != 1 {
		t.Fatalf("endpoint %+v: want one dial, still connecting (its timeout is 1 s)", st)
	}
}

// A retry whose backoff wait is cut short (the caller gave up) sends
// nothing, so its budget token is given back: the next call that needs a
// retry still has it (review finding: the token was lost, so a client whose
// callers give up during backoffs drained its budget without a retry).
func TestRetryBudgetRefundsAnUnusedToken(t *testing.T) {
	srv := rpctest.Start(t)
	// One token in all: no deposits, a reserve of 1 refilled every 1000 s.
	// A retry waits 1 s, without jitter.
	c, _ := newTestClient(t, []string{srv.Addr()}, WithRetryBudget(0, 0.001), WithMaxAttempts(3),
		WithAttemptTimeout(20*time.Millisecond), WithRetryBackoff(time.Second, time.Second),
		func(o *options) { o.retryBackoff.Full = false }, withoutNodeHealth())
	slow := &rpctest.EchoArgs{Sleep: 300 * time.Millisecond} // every attempt times out
	var r rpctest.EchoReply

	// The first attempt times out, the retry takes the token and waits;
	// the caller gives up during the wait.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for c.budget.reserve.Tokens() >= 1 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	err := c.Call(ctx, "Echo.Echo", slow, &r, Idempotent())
	cancel()
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrRetryBudget) {
		t.Fatalf("first call: %v; want it cancelled during the retry's wait", err)
	}

	// The token is back: this call's first retry gets it, its second
	// finds the budget empty.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Call(ctx, "Echo.Echo", slow, &r, Idempotent())
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrRetryBudget) {
		t.Fatalf("second call: %v; want the budget spent after one retry", err)
	}
	if e.Attempts != 2 {
		t.Errorf("second call made %d attempts, want 2: the refunded token buys one retry", e.Attempts)
	}
}

// replyArriving starts a call for a 3 MiB reply through a proxy that passes
// replies at about 1 MiB/s, and returns once its body is arriving on the
// endpoint's connection (64 KiB read): the reader has taken the call out of
// the pending table and is reading its body. The call's error comes on the
// channel.
func replyArriving(t *testing.T, c *Client, addr string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		var r rpctest.EchoReply // Echo is not idempotent
		done <- c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{ReplyBytes: 3 << 20}, &r)
	}()
	cn := c.endpoint(addr).ready()
	deadline := time.Now().Add(5 * time.Second)
	for cn.codec.in.n.Load() < 64<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("the reply did not start arriving within 5 s (%d bytes read)", cn.codec.in.n.Load())
		}
		time.Sleep(time.Millisecond)
	}
	return done
}

// A call whose reply is arriving when its endpoint leaves discovery is in
// flight: the drain waits for it. It used to count only the pending table,
// which the reader takes a call out of when its reply's header arrives, so
// the drain closed the connection under the body ("drained (while reading a
// reply)"; the server had run the call: outcome unknown).
func TestDrainWaitsForAReplyArriving(t *testing.T) {
	for _, hb := range []bool{false, true} {
		t.Run(map[bool]string{false: "noheartbeat", true: "heartbeat"}[hb], func(t *testing.T) {
			srv, b := rpctest.Start(t), rpctest.Start(t)
			addr := throttled(t, srv.Addr(), 0, 1<<20)
			opts := []Option{WithDrainGrace(50 * time.Millisecond), WithMaxMessageSize(32 << 20), withoutNodeHealth()}
			if !hb {
				opts = append(opts, WithHeartbeat(0, 0))
			}
			c, w := newTestClient(t, []string{addr}, opts...)
			warmEvery(t, c, 1)
			done := replyArriving(t, c, addr)
			if err := w.Update(discovery.Endpoint{ID: b.Addr(), Addr: b.Addr(), Weight: 1}); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("the call whose reply was arriving on the drained endpoint failed: %v", err)
			}
		})
	}
}

// A reply whose body keeps arriving, slowly, is not a silent peer: the
// read timeout counts bytes, not only messages. It used to cut such a
// reply ("sent nothing for 500ms with calls pending") once the reader
// counted the call whose body it was reading as in flight.
func TestReadTimeoutSparesAReplyArriving(t *testing.T) {
	var a Arith
	addr := throttled(t, serveArith(t, &a), 0, 1<<20) // replies at about 1 MiB/s
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(), WithMaxMessageSize(32<<20),
		WithHeartbeat(0, 0), WithReadTimeout(500*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var s string
	if err := c.Call(ctx, "Arith.Big", Pair{A: 3 << 20}, &s); err != nil {
		t.Fatalf("a 3 MiB reply at 1 MiB/s with a 500 ms read timeout: %v", err)
	}
}

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

// A drained endpoint's connection closes only once its calls in flight
// have their replies. maintain counts them before it drops the endpoint;
// a call that picked the address on an older set, or after it came back
// in the meantime, may enter a request between the count and the close.
// drop closed the connection under it: the request had been written, and
// the call failed with ErrConnClosed ("drained"), its outcome unknown. Now
// such a request gets its reply, a request started after the drop is
// refused with nothing sent, and the connection then closes.
func TestDropLetsACallThatEnteredFinish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, cn, pc := dropWithACallInFlight(t, ctx, 300*time.Millisecond)
	var r2 rpctest.EchoReply
	if _, _, err := cn.start(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r2, waitAsCtxAllows); err == nil || !isNotSent(err) {
		t.Fatalf("a request on the drained connection: %v, want it refused with nothing sent", err)
	}
	<-pc.done
	if err := cn.finish(pc); err != nil {
		t.Fatalf("the call in flight when its endpoint was dropped: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for cn.alive() {
		if time.Now().After(deadline) {
			t.Fatal("the drained connection is still open after its last reply")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cn.failure(); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("the drained connection closed with %v", err)
	}
}

// Close closes a drained endpoint's connection that still has a call in
// flight, as it closes every other: it fails the call with ErrClosed and
// returns without waiting for the reply.
func TestCloseEndsADrainingConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, cn, pc := dropWithACallInFlight(t, ctx, 10*time.Second)
	begin := time.Now()
	c.Close()
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("Close took %v with a draining connection's call in flight", d)
	}
	<-pc.done
	if err := cn.finish(pc); !errors.Is(err, ErrClosed) {
		t.Fatalf("the draining call after Close: %v, want ErrClosed", err)
	}
}

// dropWithACallInFlight starts a client on one server, enters a request
// that the server answers after sleep on its connection, as a call that
// entered after maintain's count, and then drops the endpoint. It returns
// the client, the connection and the request.
func dropWithACallInFlight(t *testing.T, ctx context.Context, sleep time.Duration) (*Client, *conn, *pendingCall) {
	t.Helper()
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, WithDrainGrace(time.Hour), withoutNodeHealth())
	e := c.endpoint(srv.Addr())
	cn, err := e.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var r rpctest.EchoReply
	pc, _, err := cn.start(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: sleep}, &r, waitAsCtxAllows)
	if err != nil {
		t.Fatal(err)
	}
	c.drop([]*endpoint{e})
	return c, cn, pc
}

// A dial that an endpoint started before discovery dropped it, and that
// fails after the address came back (a new endpoint serves it now), is
// the dropped endpoint's business: it does not quarantine the address,
// which is the new endpoint's node in the balancer. It did, for the old
// endpoint's backoff (up to 120 s after a series of failures), and asked
// discovery to refresh, while the new endpoint's connection was fine.
func TestDroppedEndpointsDialDoesNotQuarantineItsSuccessor(t *testing.T) {
	var a Arith
	l := serveRPCOn(t, func(s *rpc.Server) error { return s.Register(&a) }, func() {})
	addr := l.Addr().String()
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

// The read timeout guards a connection with calls pending only: an idle
// one, silent for many read timeouts with the heartbeat off, stays up and
// serves the next call without a redial (the heartbeat's doc; mutation
// review: a check that ignored the calls pending closed every idle
// connection after the read timeout, and no test failed).
func TestReadTimeoutSparesAnIdleConnection(t *testing.T) {
	srv := rpctest.Start(t)
	const readTimeout = 100 * time.Millisecond
	c, _ := newTestClient(t, []string{srv.Addr()}, WithHeartbeat(0, 0), WithReadTimeout(readTimeout), WithMaxAttempts(1))
	var r rpctest.EchoReply
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * readTimeout)
	if st := endpointStatus(c, srv.Addr()); st.State != Ready || st.Dials != 1 || st.LastClose != nil {
		t.Fatalf("after %v idle with a read timeout of %v: %+v, want Ready after 1 dial, no connection closed",
			6*readTimeout, readTimeout, st)
	}
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
		t.Fatal(err)
	}
	if st := endpointStatus(c, srv.Addr()); st.Dials != 1 {
		t.Fatalf("the call after the idle spell redialled: %+v", st)
	}
}
