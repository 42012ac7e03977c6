package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// limitedServer serves Arith on loopback and lets a test refuse new
// connections (close the listener; accepted connections keep serving),
// accept them again on the same port, and cut the accepted ones. While
// closing is set, it closes each connection it accepts at once (a crashing
// server behind a live socket).
type limitedServer struct {
	t       *testing.T
	srv     *rpc.Server
	addr    string
	closing atomic.Bool
	mu      sync.Mutex
	l       net.Listener
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newLimitedServer(t *testing.T) *limitedServer {
	s := &limitedServer{t: t, srv: rpc.NewServer()}
	if err := s.srv.Register(&Arith{}); err != nil {
		t.Fatal(err)
	}
	s.listen("127.0.0.1:0")
	t.Cleanup(func() {
		s.refuse()
		s.cut()
		s.wg.Wait()
	})
	return s
}

// listen accepts connections on addr until refuse.
func (s *limitedServer) listen(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.l, s.addr = l, l.Addr().String()
	s.mu.Unlock()
	s.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if s.closing.Load() {
				c.Close()
				continue
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() { s.srv.ServeConn(c) })
		}
	})
}

// refuse closes the listener: dials are refused, accepted connections serve on.
func (s *limitedServer) refuse() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.l != nil {
		s.l.Close()
		s.l = nil
	}
}

// cut closes every accepted connection.
func (s *limitedServer) cut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// With a pool of several connections, a failed dial for an extra one does
// not fail the call or mark the node down: the call goes on the connection
// that works, and further extra dials wait for the reconnect backoff.
func TestPoolGrowthFailureKeepsWorkingConnection(t *testing.T) {
	srv := newLimitedServer(t)
	addr := srv.addr
	c, _ := newTestClient(t, []string{addr}, WithPoolSize(3), WithHeartbeat(0, 0),
		WithConnectBackoff(time.Minute, 1.6, time.Minute, 0))
	add := func(i int) error {
		var sum int
		if err := c.Call(context.Background(), "Arith.Add", Pair{A: i, B: 1}, &sum); err != nil {
			return err
		}
		if sum != i+1 {
			t.Fatalf("Add(%d, 1) = %d", i, sum)
		}
		return nil
	}
	if err := add(0); err != nil {
		t.Fatal(err)
	}
	srv.refuse() // the server takes no more connections
	start := time.Now()
	for i := range 50 {
		if err := add(i); err != nil {
			t.Fatalf("call %d with one working connection: %v", i, err)
		}
	}
	took := time.Since(start)
	// The extra dial runs in the background: wait for it, then check that
	// the backoff holds the next one.
	waitDials(t, c, addr, 2)
	time.Sleep(50 * time.Millisecond)
	for i := range 10 {
		if err := add(i); err != nil {
			t.Fatal(err)
		}
	}
	if st := endpointStatus(c, addr); st.State != Ready || st.Dials != 2 {
		t.Fatalf("endpoint %+v: want Ready after 2 dials (the first, one refused extra dial, then the backoff)", st)
	}
	for _, n := range c.Balancer().Status() {
		if n.Endpoint.Addr == addr && (n.Quarantined || !n.Ready) {
			t.Fatalf("the node is out of rotation after a failed extra dial: %+v", n)
		}
	}
	// The extra dials' backoff (a minute) does not hold back a redial
	// once the last connection is gone.
	srv.listen(addr)
	srv.cut()
	deadline := time.Now().Add(5 * time.Second)
	for endpointStatus(c, addr).State == Ready {
		if time.Now().After(deadline) {
			t.Fatal("the client never saw its connection cut")
		}
		time.Sleep(time.Millisecond)
	}
	if err := add(1); err != nil {
		t.Fatalf("call after the connection was cut and the server listens again: %v", err)
	}
	if st := endpointStatus(c, addr); st.State != Ready || st.Dials != 3 {
		t.Fatalf("endpoint %+v after the redial: want Ready after 3 dials", st)
	}
	t.Logf("50 calls in %v on 1 working connection of 3", took)
}

// waitDials waits up to 5 s until the endpoint has made n dials.
func waitDials(t *testing.T, c *Client, addr string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for endpointStatus(c, addr).Dials < n {
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %+v: want %d dials", endpointStatus(c, addr), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A call does not wait for a dial that grows the pool: here the extra dial
// hangs (its SYNs are dropped) for the whole dial timeout, and calls go on
// the working connection meanwhile.
func TestPoolGrowthDoesNotBlockCalls(t *testing.T) {
	// A listener with backlog 0 whose one connection is served, and whose
	// accept queue is then filled, so that further handshakes never
	// complete.
	ln := rpctest.ListenBacklog0(t)
	addr := ln.Addr().String()
	srv := rpc.NewServer()
	if err := srv.Register(&Arith{}); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last in, first out: the client closes (ending
	// ServeConn), then the listener (ending an Accept still blocked), then
	// the server goroutine is waited for.
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { ln.Close() })
	wg.Go(func() {
		if c, err := ln.Accept(); err == nil {
			srv.ServeConn(c)
		}
	})

	const dialTimeout = 3 * time.Second
	c, _ := newTestClient(t, []string{addr}, WithPoolSize(2), WithHeartbeat(0, 0), WithDialTimeout(dialTimeout))
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{A: 1, B: 1}, &sum); err != nil {
		t.Fatal(err)
	}
	rpctest.FillAcceptQueue(t, addr)
	start := time.Now()
	for i := range 20 {
		if err := c.Call(context.Background(), "Arith.Add", Pair{A: i, B: 1}, &sum); err != nil || sum != i+1 {
			t.Fatalf("call %d: %d, %v", i, sum, err)
		}
	}
	took := time.Since(start)
	waitDials(t, c, addr, 2)
	if took > dialTimeout/3 {
		t.Fatalf("20 calls took %v while an extra dial hung; they should not wait for it (dial timeout %v)", took, dialTimeout)
	}
	t.Logf("20 calls in %v while the extra dial hung", took)
}

// A connection that died but is still in its endpoint (its reader has not
// yet taken it out, as happens on a busy box when many connections die at
// once) is skipped, not handed to call after call. Each such call used to
// fail at once and count against the node: in TestReconnectStorm, 1 client
// in 1000 tripped its breaker that way and stayed out for the open period.
func TestDeadConnectionIsSkipped(t *testing.T) {
	addr := serveArith(t, &Arith{})
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0))
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{A: 1, B: 1}, &sum); err != nil {
		t.Fatal(err)
	}
	e := c.endpoint(addr)
	e.mu.Lock()
	cn := e.conns[0]
	e.mu.Unlock()
	// The connection dies, and its reader is late to report it: mark it
	// dead the way fail does, without the endpoint's part.
	cn.mu.Lock()
	cn.err = errors.New("test: connection died")
	close(cn.dead)
	cn.mu.Unlock()
	cn.nc.Close() // the reader now ends; its fail is a no-op
	for i := range 10 {
		if err := c.Call(context.Background(), "Arith.Add", Pair{A: i, B: 1}, &sum, Idempotent()); err != nil || sum != i+1 {
			t.Fatalf("call %d after the connection died: %d, %v", i, sum, err)
		}
	}
	if st := endpointStatus(c, addr); st.Dials != 2 || st.State != Ready {
		t.Fatalf("endpoint %+v: want one redial, Ready", st)
	}
	if st := c.Balancer().Status()[0]; st.Breaker != breaker.Closed || st.Ejected {
		t.Fatalf("node %+v after its idle connection died: want its breaker closed and not ejected", st)
	}
}

// A backend that was down long enough for several failed dials is back in
// use within one reconnect backoff of its return: failed dials quarantine
// the node and back off, but do not open its breaker, which would keep it
// out for the open period (30 s by default) after it is back.
func TestRestartedBackendIsBackWithinTheBackoff(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, WithHeartbeat(0, 0),
		WithConnectBackoff(100*time.Millisecond, 1.6, 500*time.Millisecond, 0.2))
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		var r rpctest.EchoReply
		return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	}
	if err := call(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	down := time.Now()
	failures := 0
	for time.Since(down) < 2*time.Second {
		if call() != nil {
			failures++
		}
		time.Sleep(20 * time.Millisecond)
	}
	dials := endpointStatus(c, srv.Addr()).Dials
	// With the connection's death, 4 failed dials make the 5 consecutive
	// failures that open a breaker with the default settings.
	if failures == 0 || dials < 1+4 {
		t.Fatalf("%d failed calls and %d dials in 2 s of downtime; the test needs at least 4 failed dials", failures, dials)
	}
	srv.Restart(t, true)
	up := time.Now()
	var err error
	for time.Since(up) < 5*time.Second {
		if err = call(); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	back := time.Since(up)
	if err != nil || back > 1500*time.Millisecond {
		t.Fatalf("back %v after the restart (last error %v), want within the 0.6 s maximum backoff plus slack; node %+v",
			back, err, c.Balancer().Status())
	}
	t.Logf("%d dials while down; back %v after the restart", dials, back)
}

// A call that waits for the pool's extra dial, the pool's last connection
// having died while it was under way, waits for a dial in progress: the
// endpoint reports Connecting, as State's doc says ("a dial is in
// progress; calls wait for it"), not Idle ("no connection and none being
// made"). It reported Idle for as long as the dial took, up to the dial
// timeout.
func TestWaitingForAnExtraDialIsConnecting(t *testing.T) {
	addr := refusingAddr(t)
	c, _ := newTestClient(t, []string{addr}, WithPoolSize(2), withoutNodeHealth())
	e := c.endpoint(addr)
	// An extra connection's dial under way, started beside a live
	// connection that has died since (connDead made the endpoint Idle).
	d := &dialAttempt{done: make(chan struct{}), grow: true}
	e.mu.Lock()
	e.dialing, e.state = d, Idle
	e.mu.Unlock()
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := e.get(ctx)
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // get waits for d
	st := endpointStatus(c, addr).State
	// The dial fails into the empty pool, as run ends it.
	e.mu.Lock()
	e.dialing, e.retryAt, e.state = nil, time.Now().Add(time.Minute), TransientFailure
	d.err = &DialError{Addr: addr, Err: errors.New("refused")}
	d.grow = false
	e.mu.Unlock()
	close(d.done)
	if err := <-got; err == nil {
		t.Fatal("get succeeded with a failed dial")
	}
	if st != Connecting {
		t.Fatalf("a call waiting for the extra dial in progress: the endpoint reports %v, want %v", st, Connecting)
	}
}

// liveLocked finds the pool's live connection whatever the turn counter
// and wherever the dead and retired connections lie: a pool of three with
// a connection retired (aged, draining its calls) and one dead (its reader
// has not yet taken it out) still hands out the third. When liveLocked
// dropped the dead one, the rest of its tries walked the shorter slice
// from the counter's next value and could miss the live connection; get
// then waited for a dial although the endpoint had a connection, and set
// the state Idle.
func TestLiveLockedFindsTheLiveConnection(t *testing.T) {
	c := &Client{life: context.Background()}
	mk := func(kind byte) *conn {
		cn := &conn{dead: make(chan struct{})}
		switch kind {
		case 'R':
			cn.retired.Store(true)
		case 'D':
			cn.err = errAged // no sign about the peer: lostLocked counts nothing
			close(cn.dead)
		}
		return cn
	}
	for _, layout := range []string{"RDL", "RLD", "DRL", "DLR", "LRD", "LDR", "RRDL", "RDRL", "DRRL", "RDDL"} {
		for start := range uint32(12) {
			e := &endpoint{addr: "x", c: c, state: Ready}
			var live *conn
			for i := range len(layout) {
				cn := mk(layout[i])
				if layout[i] == 'L' {
					live = cn
				}
				e.conns = append(e.conns, cn)
			}
			e.rr.Store(start)
			e.mu.Lock()
			got := e.liveLocked()
			st := e.state
			e.mu.Unlock()
			if got != live {
				t.Errorf("pool %s, turn counter at %d: liveLocked returned %p, not the live connection (state now %v)",
					layout, start, got, st)
			}
		}
	}
}

// An endpoint whose pool's last connection died while the pool's extra
// (growth) dial was under way has a dial in progress, which the next call
// waits for (see get): its status is Connecting ("a dial is in progress;
// calls wait for it"), not Idle ("no connection and none being made; the
// next call dials"). connDead left it Idle, and the status showed Idle for
// as long as the dial took (up to the dial timeout) unless a call came.
func TestPoolGrowthDialAfterTheLastConnectionDiedIsConnecting(t *testing.T) {
	var a Arith
	addr := serveArith(t, &a)
	c, _ := newTestClient(t, []string{addr}, WithPoolSize(2), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sum int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum); err != nil {
		t.Fatal(err)
	}
	e := c.endpoint(addr)
	// Let the pool's own growth dial end, then stand in for one under way.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.Lock()
		n, busy := len(e.conns), e.dialing != nil
		e.mu.Unlock()
		if n == 2 && !busy {
			break
		}
		if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum); err != nil { // grows the pool
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool of %d, dialing %v", n, busy)
		}
		time.Sleep(time.Millisecond)
	}
	d := &dialAttempt{done: make(chan struct{}), grow: true}
	e.mu.Lock()
	e.dialing = d
	conns := append([]*conn(nil), e.conns...)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.dialing = nil
		e.mu.Unlock()
		close(d.done)
	}()
	if st := endpointStatus(c, addr).State; st != Ready {
		t.Fatalf("with connections up and a growth dial: %v, want Ready", st)
	}
	for _, cn := range conns { // the peer goes away: both die
		cn.close(fmt.Errorf("%w: test: peer reset", ErrConnClosed))
	}
	if st := endpointStatus(c, addr).State; st != Connecting {
		t.Fatalf("no connection left, the growth dial under way: the endpoint reports %v, want %v", st, Connecting)
	}
	// And after a connection lost before any reply put it in backoff while
	// the growth dial runs: calls still wait for that dial (get looks at
	// e.dialing first), so it is Connecting too, not TransientFailure.
	e.mu.Lock()
	e.state, e.retryAt = TransientFailure, time.Now().Add(time.Minute)
	e.mu.Unlock()
	if st := endpointStatus(c, addr).State; st != Connecting {
		t.Fatalf("backoff with the growth dial under way: the endpoint reports %v, want %v", st, Connecting)
	}
}

// An endpoint whose only connection was retired (another caller's args did
// not encode) while a slow call drains on it has no connection that takes
// calls: the next call dials (see liveLocked, and run: "a retired
// connection takes no calls: it does not count"). Its status said Ready
// ("at least one connection is up") until that next call came, for as long
// as the slow call took.
func TestRetiredOnlyConnectionIsNotReady(t *testing.T) {
	a := &Arith{gate: make(chan struct{})}
	addr := serveArith(t, a)
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0), withoutNodeHealth())
	t.Cleanup(func() { close(a.gate) })
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &sum); err != nil {
		t.Fatal(err)
	}
	go func() {
		var r int
		c.Call(context.Background(), "Arith.Slow", Pair{1, 2}, &r)
	}()
	waitCalls(t, a, 2)
	var r int
	if err := c.Call(context.Background(), "Arith.Add", badArgs{V: unregistered{1}}, &r); !errors.Is(err, ErrCodec) {
		t.Fatalf("a call whose args do not encode: %v", err)
	}
	st := endpointStatus(c, addr)
	if st.Pending != 1 {
		t.Fatalf("%+v: want the slow call pending on the retired connection", st)
	}
	if st.State != Idle {
		t.Fatalf("the only connection retired, draining a call, no dial: the endpoint reports %v, want %v (the next call dials)", st.State, Idle)
	}
	// The next call dials and gets a connection that takes calls.
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r); err != nil {
		t.Fatal(err)
	}
	if st := endpointStatus(c, addr); st.State != Ready || st.Dials != 2 {
		t.Fatalf("after the redial: %+v, want Ready after 2 dials", st)
	}
}

// LastClose says why the connection closed: one retired because a
// caller's deadline passed while its request was encoded (nothing of it
// was sent) did not close because a request "could not be encoded".
func TestLastCloseOfAConnectionRetiredForALateRequest(t *testing.T) {
	addr := serveSlowEnc(t)
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth())
	var r int
	if err := c.Call(context.Background(), "SlowEncSvc.Take", SlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Call(ctx, "SlowEncSvc.Take", SlowEnc{Delay: 150 * time.Millisecond}, &r); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the late request: %v", err)
	}
	st := endpointStatus(c, addr)
	if st.LastClose == nil || !isRetired(st.LastClose) {
		t.Fatalf("%+v: want the connection retired and closed", st)
	}
	if msg := st.LastClose.Error(); strings.Contains(msg, "could not be encoded") && !strings.Contains(msg, "ctx") {
		t.Fatalf("LastClose %q: the request encoded fine; its deadline passed meanwhile", msg)
	}
}

// A full pool makes no more dials: WithPoolSize(n) is n connections, not
// n+1 or a pool that grows with every call once it is full (mutation
// review: "len(conns) <= size" grew it without bound, and no test failed).
func TestPoolStaysAtItsSize(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, WithPoolSize(2), withoutNodeHealth())
	e := c.endpoint(srv.Addr())
	waitFull := time.Now().Add(5 * time.Second)
	for {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
		if live, _ := liveConns(e); live >= 2 {
			break
		}
		if time.Now().After(waitFull) {
			t.Fatalf("the pool of 2 never filled: %+v", endpointStatus(c, srv.Addr()))
		}
		time.Sleep(time.Millisecond)
	}
	for range 200 {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // a dial started by the last calls ends
	if live, all := liveConns(e); all != 2 || live != 2 {
		t.Fatalf("pool of 2 after 200 calls: %d connections (%d live), want 2", all, live)
	}
	if st := endpointStatus(c, srv.Addr()); st.Dials != 2 {
		t.Fatalf("pool of 2 after 200 calls: %+v, want 2 dials", st)
	}
}
