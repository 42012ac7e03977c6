package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// FAULTS.md row 24: an endpoint whose address moves to other machines (a DNS
// name whose A record changes, a virtual IP whose backends change; here a
// proxy retargeted) keeps its connection to the old machine for as long as
// that lives. With a maximum connection age, traffic follows within it, and
// no call fails on the way: the replacement is dialled in the background and
// the old connection finishes its calls before it closes.
func TestMaxConnectionAgeFollowsAnAddressThatMoved(t *testing.T) {
	oldSrv, newSrv := rpctest.Start(t, rpctest.WithName("old")), rpctest.Start(t, rpctest.WithName("new"))
	px := rpctest.NewProxy(t, oldSrv.Addr())
	const age = 300 * time.Millisecond
	c, _ := newTestClient(t, []string{px.Addr()}, WithMaxConnectionAge(age))
	call := func() string {
		t.Helper()
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatalf("a call while the address moved failed: %v", err)
		}
		return r.Server
	}
	if s := call(); s != "old" {
		t.Fatalf("first call served by %q, want old", s)
	}
	px.Retarget(newSrv.Addr())
	moved := time.Now()
	deadline := moved.Add(10 * time.Second)
	for call() != "new" {
		if time.Now().After(deadline) {
			t.Fatalf("calls still went to the old machine 10 s after the move (maximum age %v)", age)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(moved)
	t.Logf("traffic moved %v after the address did (maximum age %v +-10 %%)", took.Round(time.Millisecond), age)
	// The row's figure: traffic moves within the maximum age (the old
	// connection, made before the move, is at most 1.1 x age old when it
	// is retired), plus a replacement dial and room for a busy box.
	if bound := age*11/10 + 250*time.Millisecond; took > bound {
		t.Fatalf("traffic moved %v after the address did; FAULTS row 24 wants it within the maximum age (%v +-10 %%; bound %v)", took, age, bound)
	}
	for range 20 {
		if s := call(); s != "new" {
			t.Fatalf("a call after the move served by %q: the old connection still takes calls", s)
		}
	}
	st := endpointStatus(c, px.Addr())
	if !errors.Is(st.LastClose, errAged) {
		t.Fatalf("the old connection's close: %v, want errAged", st.LastClose)
	}
}

// A connection past its age finishes the calls it has in flight: the
// replacement takes the new calls, and the old one closes once the slow
// call has its reply.
func TestAgedConnectionFinishesItsCalls(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, WithMaxConnectionAge(100*time.Millisecond), withoutNodeHealth())
	warmEvery(t, c, 1)
	old := c.endpoint(srv.Addr()).ready()
	slow := make(chan error, 1)
	go func() {
		var r rpctest.EchoReply // not idempotent: a cut would say outcome unknown
		slow <- c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Sleep: 2 * time.Second}, &r)
	}()
	waitPending(t, c, srv.Addr())
	time.Sleep(150 * time.Millisecond) // past the age (100 ms + 10 % at most)
	var r rpctest.EchoReply
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if cn := c.endpoint(srv.Addr()).ready(); cn != nil && cn != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no replacement for the aged connection within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !old.retired.Load() || !old.alive() {
		t.Fatalf("the aged connection with a call in flight: retired %v, alive %v; want retired and alive", old.retired.Load(), old.alive())
	}
	if err := <-slow; err != nil {
		t.Fatalf("the call in flight on the aged connection failed: %v", err)
	}
	select {
	case <-old.dead:
	case <-time.After(5 * time.Second):
		t.Fatal("the aged connection was still open 5 s after its last call ended")
	}
	if err := old.failure(); !errors.Is(err, errAged) {
		t.Fatalf("the aged connection closed with %v, want errAged", err)
	}
}

// A connection retired by age keeps its heartbeat: its gob stream is fine,
// and the peer may hang under the calls it still has in flight. It used to
// stop pinging, as a connection whose stream broke must, and a call without
// a deadline on it was guarded only by the read timeout (here off).
func TestAgedConnectionKeepsItsHeartbeat(t *testing.T) {
	srv := rpctest.Start(t, rpctest.WithHeartbeat())
	c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth(),
		WithHeartbeat(100*time.Millisecond, 300*time.Millisecond), WithReadTimeout(0),
		WithMaxConnectionAge(200*time.Millisecond))
	warmEvery(t, c, 1)
	old := c.endpoint(srv.Addr()).ready()
	warm := srv.Calls()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	slow := make(chan error, 1)
	go func() {
		var r rpctest.EchoReply
		slow <- c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: 20 * time.Second}, &r)
	}()
	waitHandled(t, srv, warm)          // not waitPending: the 100 ms heartbeat's ping counts as pending
	time.Sleep(300 * time.Millisecond) // past the age
	deadline := time.Now().Add(5 * time.Second)
	for !old.retired.Load() { // a call triggers the replacement, which retires old
		if time.Now().After(deadline) {
			t.Fatal("the aged connection was not retired within 5 s of calls")
		}
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv.Hang()
	defer srv.Unhang()
	if err := <-slow; !errors.Is(err, ErrHeartbeat) {
		t.Fatalf("the call on the aged connection to a hung peer: %v, want ErrHeartbeat", err)
	}
}

// Hedged calls, which take connections without dialling, replace an aged
// connection too. They used to leave it serving for ever.
func TestHedgedCallsReplaceAnAgedConnection(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth(),
		WithHedging(50*time.Millisecond), WithMaxConnectionAge(100*time.Millisecond))
	warmEvery(t, c, 1)
	old := c.endpoint(srv.Addr()).ready()
	deadline := time.Now().Add(5 * time.Second)
	for !old.retired.Load() { // not ready(), which may itself start the replacement
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s (50 times the maximum age) of hedged calls the first connection still serves; %d dials",
				c.endpoint(srv.Addr()).dials.Load())
		}
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// callFor makes Echo calls on c, 5 ms apart, for d; a failed one fails t.
func callFor(t *testing.T, c *Client, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
	}
}

// liveConns counts e's connections that take calls, and all it holds.
func liveConns(e *endpoint) (live, all int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.upCountLocked(), len(e.conns)
}

// A pool whose connections aged together, each with a long call in flight,
// stays full: each replacement retires one aged connection. One replacement
// used to retire them all, and the pool served on one connection until the
// long calls ended.
func TestAgedPoolStaysFull(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth(), WithPoolSize(2),
		WithMaxConnectionAge(200*time.Millisecond))
	e := c.endpoint(srv.Addr())
	for i := 0; ; i++ {
		if l, _ := liveConns(e); l == 2 {
			break
		}
		if i == 200 {
			t.Fatal("the pool of 2 did not fill in 200 calls")
		}
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	slow := make(chan error, 2)
	for range 2 {
		go func() {
			var r rpctest.EchoReply
			slow <- c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Sleep: 4 * time.Second}, &r)
		}()
	}
	time.Sleep(300 * time.Millisecond) // both past their age
	callFor(t, c, 2*time.Second)
	if live, all := liveConns(e); live < 2 {
		t.Fatalf("the pool of 2 serves on %d connection(s) (%d held) while the aged ones drain", live, all)
	}
	for range 2 {
		if err := <-slow; err != nil {
			t.Fatalf("a long call on an aged connection: %v", err)
		}
	}
}

// A pool still filling whose only connection aged with a long call on it
// fills up: the aged connection, draining, does not count against the
// pool's size. It used to, and the pool served on one connection until the
// long call ended.
func TestFillingPoolDoesNotCountADrainingConnection(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth(), WithPoolSize(2),
		WithMaxConnectionAge(200*time.Millisecond))
	e := c.endpoint(srv.Addr())
	slow := make(chan error, 1)
	go func() {
		var r rpctest.EchoReply
		slow <- c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Sleep: 4 * time.Second}, &r)
	}()
	waitPending(t, c, srv.Addr())
	time.Sleep(300 * time.Millisecond) // past the age
	callFor(t, c, 1500*time.Millisecond)
	if live, all := liveConns(e); live < 2 {
		t.Errorf("the pool of 2 serves on %d connection(s) (%d held, %d dials) while the aged one drains", live, all, e.dials.Load())
	}
	if err := <-slow; err != nil {
		t.Fatalf("the long call on the aged connection: %v", err)
	}
}

// A request refused by a connection that was retired by age after get
// handed it out (the replacement joined the pool in between) goes once more
// on the endpoint's connections: nothing of it had left. It used to count as
// a failed attempt on a node that is fine; with one node, the call then
// waited for a fresh endpoint set.
func TestRequestRefusedByAnAgedConnectionGoesAgain(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth(), WithMaxConnectionAge(time.Hour))
	warmEvery(t, c, 1)
	e := c.endpoint(srv.Addr())
	old := e.ready()
	// What run does when a replacement joins: retire the aged one, which,
	// with nothing in flight, closes.
	old.markAged()
	old.closeIfRetired()
	var r rpctest.EchoReply
	err := old.do(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: "again"}, &r)
	if !isNotSent(err) || !errors.Is(err, errAged) {
		t.Fatalf("a request on a connection retired by age: %v, want a not-sent refusal wrapping errAged", err)
	}
	if err := redoIfAged(context.Background(), e, err, "Echo.Echo", &rpctest.EchoArgs{Msg: "again"}, &r); err != nil || r.Msg != "again" {
		t.Fatalf("the request, once more on the endpoint: %q, %v", r.Msg, err)
	}
	// Other failures are left as they are.
	other := fmt.Errorf("rpcclient: write: %w", ErrConnClosed)
	if got := redoIfAged(context.Background(), e, other, "Echo.Echo", &rpctest.EchoArgs{}, &r); got != other {
		t.Fatalf("another error came back as %v", got)
	}
}

// The reconnect backoff of a pool's extra dials (a replacement for an aged
// connection is one) ends once a connection it dialled proves itself, as
// adoptLocked says of the endpoint's backoff. Here the replacement dials
// for an aged connection fail six times (an address that moved and came
// back later), then one succeeds and its connection serves; the next time
// it ages, one refused dial backs off for the base, not for the seventh
// step of a series that ended. On the old code the series never ended (a
// connection retired by age closes without a word to the backoff, and a
// successful dial resets nothing): growAt 6.4 s away, and it only grows,
// to the 120 s cap, over the client's life.
func TestGrowBackoffEndsOnceAReplacementServes(t *testing.T) {
	srv := newLimitedServer(t)
	addr := srv.addr
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(), WithHeartbeat(0, 0),
		WithMaxConnectionAge(time.Hour), WithConnectBackoff(100*time.Millisecond, 2, time.Minute, 0))
	add := func() {
		t.Helper()
		var sum int
		if err := c.Call(context.Background(), "Arith.Add", Pair{A: 1, B: 2}, &sum); err != nil || sum != 3 {
			t.Fatalf("Add: %d, %v", sum, err)
		}
	}
	add()
	e := c.endpoint(addr)
	age := func() *conn { // what time does: the pool's connection is past its age
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.conns) != 1 {
			t.Fatalf("%d connections, want 1", len(e.conns))
		}
		e.conns[0].expires = time.Now().Add(-time.Second)
		return e.conns[0]
	}
	replace := func() error { // the replacement dial get starts for an aged connection
		d := &dialAttempt{done: make(chan struct{}), grow: true}
		e.mu.Lock()
		e.dialing = d
		e.mu.Unlock()
		c.wg.Add(1)
		e.run(d)
		return d.err
	}
	old := age()
	srv.refuse()
	for i := range 6 {
		if replace() == nil {
			t.Fatalf("replacement dial %d to a refusing address succeeded", i)
		}
	}
	srv.listen(addr)
	if err := replace(); err != nil {
		t.Fatalf("replacement dial once the server listens: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for old.alive() {
		if time.Now().After(deadline) {
			t.Fatal("the aged connection was not closed once replaced")
		}
		time.Sleep(time.Millisecond)
	}
	for range 10 {
		add() // on the replacement: it serves
	}
	age()
	srv.refuse()
	if replace() == nil {
		t.Fatal("a replacement dial to a refusing address succeeded")
	}
	e.mu.Lock()
	wait := time.Until(e.growAt)
	n := e.growFailures
	e.mu.Unlock()
	if wait > 150*time.Millisecond {
		t.Fatalf("one failed replacement dial after a replacement that served backs off %v (failure %d of a series), want the base, 100ms",
			wait.Round(time.Millisecond), n)
	}
}

// A maximum connection age near math.MaxInt64 ("for ever") must not wrap
// the jittered age negative: every connection was then born past its age,
// and replaced by a new dial as soon as the one before it joined the pool.
func TestHugeMaxConnectionAgeKeepsTheConnection(t *testing.T) {
	addr := serveArith(t, &Arith{})
	for range 10 { // the jitter is random: about half the ages wrapped
		testHugeAge(t, addr)
	}
}

func testHugeAge(t *testing.T, addr string) {
	c, w := newTestClient(t, []string{addr}, WithMaxConnectionAge(math.MaxInt64))
	defer func() { c.Close(); w.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 20 {
		var r int
		if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for _, st := range c.Endpoints() {
		if st.Dials != 1 {
			t.Fatalf("%s: %d dials for 20 calls with a maximum connection age of %v; want 1", st.Addr, st.Dials, time.Duration(math.MaxInt64))
		}
	}
}

var spinSink atomic.Int64

var errTestEnd = errors.New("test over")

// A connection retired by age closes only once nothing is in flight on it:
// a request that its write puts on the wire is either refused (nothing
// sent, and the call goes again on the replacement) or kept until its
// reply. start checked retired before it took the connection's lock to
// enter the request in the pending table, and closeIfRetired counted the
// table under that lock: a request that passed the check just before run
// retired the connection, and entered the table just after the count
// found it empty, was written and then failed with errAged when the
// connection closed under it. The caller got a connection error for a
// request the server may run (ErrOutcomeUnknown for a call that is not
// idempotent), on a node that did nothing wrong.
func TestAgedConnectionClosesWithNothingInFlight(t *testing.T) {
	o := defaultOptions()
	o.heartbeat, o.readTimeout = 0, 0
	var cwg sync.WaitGroup
	lost, sent, refused := 0, 0, 0
	rounds := 0
	for i, end := 0, time.Now().Add(4*time.Second); lost == 0 && i < 100000 && time.Now().Before(end); i++ {
		rounds++
		spin := i % 400 // sweeps the retirement across the request's start
		a, b := net.Pipe()
		go io.Copy(io.Discard, b)
		cn := newConn("pipe", a, &o, nil, nil, &cwg)
		var go_, ready atomic.Bool
		done := make(chan struct{})
		go func() { // the replacement joins the pool: run retires cn
			defer close(done)
			ready.Store(true)
			for !go_.Load() {
			}
			for range spin {
				spinSink.Add(1)
			}
			cn.markAged()
			cn.closeIfRetired()
		}()
		for !ready.Load() {
		}
		go_.Store(true)
		pc, _, err := cn.start(context.Background(), "Echo.Echo", 1, new(int), waitAsCtxAllows)
		<-done
		cn.close(errTestEnd) // the request, if still pending, gets this
		if err != nil {
			refused++
		}
		if err == nil {
			sent++
			<-pc.done
			if errors.Is(pc.err, errAged) {
				lost++
			}
		}
		b.Close()
	}
	cwg.Wait()
	t.Logf("sent %d, refused %d, lost %d", sent, refused, lost)
	if lost > 0 {
		t.Fatalf("%d of %d requests written on a connection being retired were then failed by its retirement (errAged), with the request sent", lost, rounds)
	}
}

// WithMaxConnectionAge documents its age as d "give or take 10 %", jittered
// so that a client's connections do not all turn over at once. Each new
// connection's age (expires - born) must lie in [0.9d, 1.1d] and spread over
// that whole range: 500 connections, split into 10 bins of 2 % each, must
// leave no bin empty. For uniform jitter, the chance that some bin stays
// empty is at most 10 x 0.9^500 (about 1e-22): the test does not flake. It
// fails if the jitter is removed (every age is d), narrowed, made one-sided,
// or widened past 10 %.
func TestMaxConnectionAgeJitterSpansTenPercent(t *testing.T) {
	const d = time.Hour // no connection reaches it during the test
	o := defaultOptions()
	o.heartbeat, o.readTimeout = 0, 0
	o.maxConnAge = d
	var cwg sync.WaitGroup
	const n, bins = 500, 10
	var hits [bins]int
	lo, hi := math.Inf(1), math.Inf(-1)
	for range n {
		a, b := net.Pipe()
		cn := newConn("pipe", a, &o, nil, nil, &cwg)
		r := float64(cn.expires.Sub(cn.born)) / float64(d)
		cn.close(errTestEnd)
		b.Close()
		lo, hi = min(lo, r), max(hi, r)
		if r < 0.9-1e-9 || r > 1.1+1e-9 {
			t.Fatalf("a connection's age is %.4f x WithMaxConnectionAge; want within [0.9, 1.1] (give or take 10 %%)", r)
		}
		hits[min(int((r-0.9)/0.2*bins), bins-1)]++
	}
	cwg.Wait()
	for i, h := range hits {
		if h == 0 {
			t.Fatalf("no connection age in [%.2f, %.2f) x d over %d connections (ages from %.4f to %.4f, per 2 %% bin %v); want the jitter to spread over the whole +-10 %%",
				0.9+0.2*float64(i)/bins, 0.9+0.2*float64(i+1)/bins, n, lo, hi, hits)
		}
	}
}
