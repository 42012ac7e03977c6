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

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// Arith is a tiny service for tests that need no fault injection.
type Arith struct {
	calls atomic.Int64
	gate  chan struct{} // when non-nil, Slow blocks until it is closed
}

type Pair struct{ A, B int }

func (a *Arith) Add(p Pair, r *int) error {
	a.calls.Add(1)
	*r = p.A + p.B
	return nil
}

func (a *Arith) Div(p Pair, r *int) error {
	a.calls.Add(1)
	if p.B == 0 {
		return errors.New("divide by zero")
	}
	*r = p.A / p.B
	return nil
}

func (a *Arith) Slow(p Pair, r *int) error {
	a.calls.Add(1)
	if a.gate != nil {
		<-a.gate
	}
	*r = p.A
	return nil
}

// Big replies with p.A bytes.
func (a *Arith) Big(p Pair, r *string) error {
	*r = strings.Repeat("x", p.A)
	return nil
}

// Blob is a reply whose decoding takes Delay: GobDecode sleeps. The server
// fills none of it.
type Blob struct{ Delay time.Duration }

func (b *Blob) GobEncode() ([]byte, error) { return []byte{1}, nil }
func (b *Blob) GobDecode([]byte) error {
	time.Sleep(b.Delay)
	return nil
}

// Blob replies at once with a Blob.
func (a *Arith) Blob(p Pair, r *Blob) error { return nil }

// serveArith starts a net/rpc server with Arith and the heartbeat on
// loopback; it stops at test cleanup.
func serveArith(t testing.TB, a *Arith) string {
	t.Helper()
	return serveArithAt(t, a, "127.0.0.1:0")
}

// serveArithAt is serveArith listening on hostport ("[::1]:0",
// "127.0.0.2:0").
func serveArithAt(t testing.TB, a *Arith, hostport string) string {
	t.Helper()
	l, err := net.Listen("tcp", hostport)
	if err != nil {
		t.Fatal(err)
	}
	serveRPCListener(t, l, func(s *rpc.Server) error {
		if err := s.Register(a); err != nil {
			return err
		}
		return RegisterHeartbeat(s)
	}, func() {
		if a.gate != nil {
			select {
			case <-a.gate:
			default:
				close(a.gate)
			}
		}
	})
	return l.Addr().String()
}

// serveRPC starts a net/rpc server on loopback with the services register
// installs. At test cleanup it closes the listener and every connection,
// calls unblock (to release handlers a test left waiting) and waits for
// every goroutine.
func serveRPC(t testing.TB, register func(*rpc.Server) error, unblock func()) string {
	t.Helper()
	return serveRPCOn(t, register, unblock).Addr().String()
}

// serveRPCOn is serveRPC, returning the listener, for a test that closes
// it early (new dials are then refused; the connections made live on).
func serveRPCOn(t testing.TB, register func(*rpc.Server) error, unblock func()) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveRPCListener(t, l, register, unblock)
	return l
}

// serveRPCListener is serveRPCOn on a listener of the test's own (a TLS
// one, say), which it closes at test cleanup.
func serveRPCListener(t testing.TB, l net.Listener, register func(*rpc.Server) error, unblock func()) {
	t.Helper()
	s := rpc.NewServer()
	if err := register(s); err != nil {
		l.Close()
		t.Fatal(err)
	}
	serveConns(t, l, func(c net.Conn) { s.ServeConn(c) }, unblock)
}

// serveConns accepts connections on l and runs handle on each, in a
// goroutine of its own, until test cleanup, which closes l and every
// connection accepted, calls unblock (to release handlers a test left
// waiting) and waits for every goroutine.
func serveConns(t testing.TB, l net.Listener, handle func(net.Conn), unblock func()) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		unblock()
		wg.Wait()
	})
}

func newTestClient(t testing.TB, addrs []string, opts ...Option) (*Client, *discovery.Static) {
	t.Helper()
	w, err := discovery.StaticAddrs(addrs...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(w, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); w.Close() })
	return c, w
}

// withoutNodeHealth is WithBalancer with breakers and outlier ejection off,
// plus opts: for tests whose failed attempts must not take a node out of
// rotation.
func withoutNodeHealth(opts ...balancer.Option) Option {
	return WithBalancer(append([]balancer.Option{balancer.WithoutBreakers(),
		balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})}, opts...)...)
}

func TestCallAndServerError(t *testing.T) {
	var a Arith
	c, _ := newTestClient(t, []string{serveArith(t, &a)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sum int
	if err := c.Call(ctx, "Arith.Add", Pair{2, 3}, &sum); err != nil || sum != 5 {
		t.Fatalf("Add = %d, %v", sum, err)
	}
	err := c.Call(ctx, "Arith.Div", Pair{1, 0}, &sum, Idempotent())
	var se rpc.ServerError
	var e *Error
	if !errors.As(err, &se) || string(se) != "divide by zero" || !errors.As(err, &e) || e.Attempts != 1 {
		t.Fatalf("Div by zero = %v; want one attempt and the rpc.ServerError", err)
	}
	if a.calls.Load() != 2 {
		t.Fatalf("server saw %d calls, want 2 (an application error is not retried)", a.calls.Load())
	}
}

// A cancelled call returns at once although its reply never comes (the
// server's handler is gated): it does not wait for the reply. The bound is
// loose for a loaded -race run (the return takes microseconds); what it
// catches is a call that waits for the reply, or for the connection's own
// machinery (the default heartbeat is 1 s; it is answered here anyway).
func TestCancelReleasesPendingAndLateReplyIsDropped(t *testing.T) {
	a := Arith{gate: make(chan struct{})}
	c, _ := newTestClient(t, []string{serveArith(t, &a)})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	var r int
	go func() { errc <- c.Call(ctx, "Arith.Slow", Pair{7, 0}, &r) }()
	waitCalls(t, &a, 1)
	start := time.Now()
	cancel()
	const bound = 500 * time.Millisecond
	var err error
	select {
	case err = <-errc:
	case <-time.After(bound):
		t.Fatalf("Call had not returned %v after cancel (its reply is held back: a call that waits for it waits for ever)", bound)
	}
	if took := time.Since(start); took > bound {
		t.Fatalf("Call returned %v after cancel", took)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	for _, e := range c.Endpoints() {
		if e.Pending != 0 {
			t.Fatalf("cancelled call still pending on %s", e.Addr)
		}
	}
	close(a.gate) // the late reply arrives and must be discarded
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 1}, &sum); err != nil || sum != 2 {
		t.Fatalf("next call on the same connection: %d, %v", sum, err)
	}
	if r != 0 {
		t.Fatalf("the late reply was written into the abandoned reply: %d", r)
	}
}

func TestHugeReplyClosesConnection(t *testing.T) {
	var a Arith
	c, _ := newTestClient(t, []string{serveArith(t, &a)}, WithMaxMessageSize(64<<10))
	var s string
	err := c.Call(context.Background(), "Arith.Big", Pair{1 << 20, 0}, &s, Idempotent())
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("1 MiB reply with a 64 KiB cap: %v", err)
	}
	if err := c.Call(context.Background(), "Arith.Big", Pair{1000, 0}, &s); err != nil || len(s) != 1000 {
		t.Fatalf("a small reply after the connection was replaced: %v", err)
	}
}

// TestHugeReplyFailsOnlyItsOwnCall: an oversized reply closes the
// connection, but only its own call gets ErrMessageTooLarge. The other calls
// in flight on that connection lost it through no fault of their own: an
// idempotent one is retried, and one that is not gets ErrOutcomeUnknown
// over ErrConnClosed, never the non-retryable ErrMessageTooLarge.
func TestHugeReplyFailsOnlyItsOwnCall(t *testing.T) {
	a := Arith{gate: make(chan struct{})}
	c, _ := newTestClient(t, []string{serveArith(t, &a)}, WithMaxMessageSize(64<<10), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		r   int
		err error
	}
	idem, once := make(chan result, 1), make(chan result, 1)
	go func() {
		var r int
		err := c.Call(ctx, "Arith.Slow", Pair{7, 0}, &r, Idempotent())
		idem <- result{r, err}
	}()
	go func() {
		var r int
		err := c.Call(ctx, "Arith.Slow", Pair{8, 0}, &r)
		once <- result{r, err}
	}()
	waitCalls(t, &a, 2) // both wait in Slow, on the one connection
	var s string
	if err := c.Call(ctx, "Arith.Big", Pair{1 << 20, 0}, &s, Idempotent()); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("1 MiB reply with a 64 KiB cap: %v", err)
	}
	close(a.gate) // the retried call now returns at once
	got := <-idem
	if got.err != nil || got.r != 7 {
		t.Fatalf("the idempotent call in flight beside the huge reply: %d, %v; want it retried to 7", got.r, got.err)
	}
	got = <-once
	if !errors.Is(got.err, ErrOutcomeUnknown) || !errors.Is(got.err, ErrConnClosed) || errors.Is(got.err, ErrMessageTooLarge) {
		t.Fatalf("the other call in flight beside the huge reply: %v; want ErrOutcomeUnknown over ErrConnClosed", got.err)
	}
	if n := a.calls.Load(); n != 3 {
		t.Fatalf("server saw %d Slow calls, want 3 (the idempotent one twice, the other once)", n)
	}
}

// An oversized reply counts against its node once, for its own call: the
// calls beside it lost the connection for that call's sake (this side
// closed it), no outcome of the node's (see conn.read). Here three calls
// in flight beside it and a breaker that opens on the third consecutive
// failure: it stays closed, and the next call goes to the node (mutation
// review: the classification inverted, the three counted, passed every
// test).
func TestHugeReplyCountsOnceAgainstItsNode(t *testing.T) {
	a := Arith{gate: make(chan struct{})}
	addr := serveArith(t, &a)
	var mu sync.Mutex
	var events []breaker.Event
	c, _ := newTestClient(t, []string{addr}, WithMaxMessageSize(64<<10), WithMaxAttempts(1),
		WithBalancer(
			balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 3, FailureRatio: -1, OpenTimeout: time.Minute, MaxOpenTimeout: time.Minute}),
			balancer.WithBreakerEvents(func(e breaker.Event) {
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
			}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	beside := make(chan error, 3)
	for i := range 3 {
		go func() {
			var r int
			beside <- c.Call(ctx, "Arith.Slow", Pair{i, 0}, &r)
		}()
	}
	waitCalls(t, &a, 3) // all wait in Slow, on the one connection
	var s string
	if err := c.Call(ctx, "Arith.Big", Pair{1 << 20, 0}, &s); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("1 MiB reply with a 64 KiB cap: %v", err)
	}
	for range 3 {
		if err := <-beside; !errors.Is(err, ErrConnClosed) {
			t.Fatalf("a call beside the huge reply: %v, want ErrConnClosed", err)
		}
	}
	close(a.gate)
	var sum int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum); err != nil || sum != 3 {
		t.Fatalf("the next call to the node: %d, %v", sum, err)
	}
	time.Sleep(50 * time.Millisecond) // breaker events are delivered on their own goroutine
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 0 {
		t.Fatalf("one oversized reply with three calls beside it changed the node's breaker: %+v", events)
	}
}

// A caller whose deadline passes while its reply, all arrived, is being
// decoded (slowly) harms no other call: nothing is missing on the wire, so
// closing the connection would end nothing but the calls beside it.
func TestDeadlineDuringReplyDecodeHarmsNoOtherCall(t *testing.T) {
	a := Arith{gate: make(chan struct{})}
	c, _ := newTestClient(t, []string{serveArith(t, &a)}, withoutNodeHealth())
	other := make(chan error, 1)
	go func() {
		var r int
		other <- c.Call(context.Background(), "Arith.Slow", Pair{7, 0}, &r) // not idempotent
	}()
	waitCalls(t, &a, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	blob := &Blob{Delay: 80 * time.Millisecond}
	err := c.Call(ctx, "Arith.Blob", Pair{}, blob)
	t.Logf("the call whose reply decoded for 80 ms past its 20 ms deadline: %v", err)
	close(a.gate)
	if err := <-other; err != nil {
		t.Fatalf("the call beside it failed: %v", err)
	}
}

func TestRetryOnDeadNodeAndQuarantine(t *testing.T) {
	var a Arith
	live := serveArith(t, &a)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close() // refused from now on
	c, w := newTestClient(t, []string{dead, live})
	_ = w
	for i := range 20 {
		var sum int
		if err := c.Call(context.Background(), "Arith.Add", Pair{i, 1}, &sum); err != nil || sum != i+1 {
			t.Fatalf("call %d: %d, %v", i, sum, err)
		}
	}
	dials := map[string]uint64{}
	for _, e := range c.Endpoints() {
		dials[e.Addr] = e.Dials
	}
	if dials[dead] > 1 {
		t.Fatalf("dead address dialed %d times in 20 calls; the backoff should allow 1", dials[dead])
	}
	// The backoff alone bounds the dials; the quarantine is what keeps the
	// picks off the dead node meanwhile (DESIGN.md: ResolveNow). The 20
	// calls take milliseconds, well inside the first 0.8-1.2 s backoff.
	if !quarantinedIn(c, dead) {
		t.Fatalf("the address whose dial failed is not quarantined in the balancer (status %+v)", endpointStatus(c, dead))
	}
}

func TestNonIdempotentIsNotRetriedAfterSend(t *testing.T) {
	a := Arith{gate: make(chan struct{})}
	c, _ := newTestClient(t, []string{serveArith(t, &a)}, WithAttemptTimeout(50*time.Millisecond))
	var r int
	err := c.Call(context.Background(), "Arith.Slow", Pair{1, 0}, &r)
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("timed-out non-idempotent call: %v", err)
	}
	if n := a.calls.Load(); n != 1 {
		t.Fatalf("server executed %d times, want 1", n)
	}
	err = c.Call(context.Background(), "Arith.Slow", Pair{1, 0}, &r, Idempotent())
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 3 {
		t.Fatalf("idempotent: %v, want 3 attempts", err)
	}
}

func TestCloseFailsPendingAndIsIdempotent(t *testing.T) {
	a := Arith{gate: make(chan struct{})}
	c, _ := newTestClient(t, []string{serveArith(t, &a)})
	errc := make(chan error, 1)
	var r int
	go func() { errc <- c.Call(context.Background(), "Arith.Slow", Pair{1, 0}, &r) }()
	waitCalls(t, &a, 1)
	start := time.Now()
	c.Close()
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending call after Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 1}, &r); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
}

// waitCalls waits, bounded by 5 s, until the server has seen n calls.
func waitCalls(t testing.TB, a *Arith, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for a.calls.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("server saw %d calls, want %d", a.calls.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// HashKey routes calls by key with Maglev: the same key to the same node,
// different keys over every node. It used to reach no policy: rpcclient
// passed no key, and Maglev picked at random.
func TestHashKeyRoutesCallsByKey(t *testing.T) {
	var addrs []string
	for _, name := range []string{"a", "b", "c"} {
		addrs = append(addrs, rpctest.Start(t, rpctest.WithName(name)).Addr())
	}
	c, _ := newTestClient(t, addrs, WithBalancer(balancer.WithPolicy(balancer.Maglev(0))))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serverOf := func(key string) string {
		t.Helper()
		var r rpctest.EchoReply
		if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, HashKey(key)); err != nil {
			t.Fatal(err)
		}
		return r.Server
	}
	seen := map[string]bool{}
	for k := range 30 {
		key := fmt.Sprintf("user-%d", k)
		first := serverOf(key)
		seen[first] = true
		for range 5 {
			if s := serverOf(key); s != first {
				t.Fatalf("key %q went to %s, then to %s", key, first, s)
			}
		}
	}
	if len(seen) != 3 {
		t.Fatalf("30 keys reached only %v of 3 nodes", seen)
	}
}
