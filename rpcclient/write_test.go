package rpcclient

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

type unregistered struct{ X int }

// badArgs holds, in an interface, a type gob was never told about: encoding
// it fails after the request header is written.
type badArgs struct{ V any }

// Args that do not encode are the caller's bug. The call fails with
// ErrCodec at once and is not retried; the calls in flight on the same
// connection get their replies; the node's breaker counts nothing.
func TestArgsThatDoNotEncodeHarmNothingElse(t *testing.T) {
	a := &Arith{gate: make(chan struct{})}
	addr := serveArith(t, a)
	var opened bool
	var mu sync.Mutex
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(50*time.Millisecond, 200*time.Millisecond),
		WithBalancer(balancer.WithBreakerEvents(func(e breaker.Event) {
			mu.Lock()
			opened = opened || e.To == breaker.Open
			mu.Unlock()
		})))
	slow := make(chan error, 1)
	go func() {
		var r int
		slow <- c.Call(context.Background(), "Arith.Slow", Pair{1, 2}, &r, Idempotent())
	}()
	waitCalls(t, a, 1)
	for range 8 {
		var r int
		err := c.Call(context.Background(), "Arith.Add", badArgs{V: unregistered{1}}, &r, Idempotent())
		var ce *Error
		if !errors.Is(err, ErrCodec) || !errors.As(err, &ce) || ce.Attempts != 1 {
			t.Fatalf("a call whose args do not encode: %v; want ErrCodec after 1 attempt", err)
		}
	}
	close(a.gate)
	if err := <-slow; err != nil {
		t.Fatalf("a call in flight on the connection of the bad calls failed: %v", err)
	}
	var r int
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r); err != nil || r != 3 {
		t.Fatalf("a good call after the bad ones: %d, %v", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if opened {
		t.Fatal("the node's breaker opened on the caller's encoding errors")
	}
	// The retired connections close once their calls are done.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ep := c.endpoint(addr)
		ep.mu.Lock()
		n := len(ep.conns)
		ep.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to the node 5 s after the bad calls, want 1", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sink is a peer that accepts connections and never reads from them: once
// the socket buffers fill, every write to it blocks.
func sink(t *testing.T) string {
	return rawServer(t, func(net.Conn) {}) // held open, never read
}

// A write that a peer does not drain is bounded by the call's deadline; a
// call queued behind it gives up at its own deadline; and the heartbeat,
// which cannot get its ping out, closes the connection and releases a call
// that has no deadline at all.
func TestBlockedWriteIsBounded(t *testing.T) {
	// A connection the heartbeat closes before any reply counts as a failed
	// dial (see endpoint.connDead); a short backoff keeps the call queued
	// behind it from waiting out the default 1 s before it redials.
	c, _ := newTestClient(t, []string{sink(t)}, WithHeartbeat(200*time.Millisecond, 300*time.Millisecond), WithMaxAttempts(1),
		WithConnectBackoff(100*time.Millisecond, 1.6, time.Second, 0.2))
	big := &rpctest.EchoArgs{Msg: strings.Repeat("x", 16<<20)} // more than the loopback socket buffers hold
	type result struct {
		err error
		d   time.Duration
	}
	call := func(timeout time.Duration) chan result {
		ch := make(chan result, 1)
		go func() {
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if timeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, timeout)
			}
			defer cancel()
			start := time.Now()
			var r rpctest.EchoReply
			err := c.Call(ctx, "Echo.Echo", big, &r, Idempotent())
			ch <- result{err, time.Since(start)}
		}()
		return ch
	}
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		bound   time.Duration
	}{
		{"with a 500 ms deadline", 500 * time.Millisecond, 2500 * time.Millisecond},
		{"without a deadline (the heartbeat, 200 ms + 300 ms)", 0, 2500 * time.Millisecond},
	} {
		first, second := call(tc.timeout), call(tc.timeout)
		for _, ch := range []chan result{first, second} {
			select {
			case r := <-ch:
				if r.err == nil {
					t.Fatalf("%s: a call to a peer that never reads succeeded", tc.name)
				}
				if r.d > tc.bound {
					t.Errorf("%s: returned after %v, want within %v: %v", tc.name, r.d, tc.bound, r.err)
				}
				t.Logf("%s: returned after %v: %v", tc.name, r.d.Round(time.Millisecond), r.err)
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: a call to a peer that never reads was still blocked after 10 s", tc.name)
			}
		}
	}
}

// A call whose context is already done when it reaches the connection
// sends nothing and leaves the connection alone: a call in flight on it
// (not idempotent, so it could not be retried) still gets its reply, and
// the node is not dialled again.
func TestDoneContextSendsNothingAndHarmsNoOtherCall(t *testing.T) {
	a := &Arith{gate: make(chan struct{})}
	addr := serveArith(t, a)
	c, _ := newTestClient(t, []string{addr})
	slow := make(chan error, 1)
	go func() {
		var r int
		slow <- c.Call(context.Background(), "Arith.Slow", Pair{7, 0}, &r)
	}()
	waitCalls(t, a, 1)

	late, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	gone, cancel2 := context.WithCancel(context.Background())
	cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"deadline past", late, context.DeadlineExceeded},
		{"cancelled", gone, context.Canceled},
	} {
		var r int
		err := c.Call(tc.ctx, "Arith.Add", Pair{1, 2}, &r)
		if !errors.Is(err, tc.want) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("%s: %v; want %v, and not an unknown outcome (nothing was sent)", tc.name, err, tc.want)
		}
	}
	if n := a.calls.Load(); n != 1 {
		t.Fatalf("the server ran %d calls, want 1: a call whose context was done was sent", n)
	}
	close(a.gate)
	if err := <-slow; err != nil {
		t.Fatalf("the call in flight failed after calls with done contexts: %v", err)
	}
	if st := c.Endpoints(); len(st) != 1 || st[0].Dials != 1 {
		t.Fatalf("endpoints %+v: want one, dialled once", st)
	}
}

// The endpoint's state tells the truth when a retired connection is all it
// has and the redial fails: TransientFailure, not Connecting (a retired
// connection takes no calls, so it does not count as one the endpoint has).
func TestRetiredConnectionAndFailedRedialIsTransientFailure(t *testing.T) {
	a := &Arith{gate: make(chan struct{})}
	s := rpc.NewServer()
	if err := s.Register(a); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	served := make(chan struct{})
	go func() { // one connection, then refuse
		defer close(served)
		cn, err := l.Accept()
		l.Close()
		if err == nil {
			s.ServeConn(cn)
		}
	}()
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0), withoutNodeHealth())
	t.Cleanup(func() {
		close(a.gate)
		c.Close()
		<-served
	})
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &sum); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		var r int
		slow <- c.Call(context.Background(), "Arith.Slow", Pair{1, 2}, &r)
	}()
	waitCalls(t, a, 2) // keeps the connection open once it is retired
	var r int
	if err := c.Call(context.Background(), "Arith.Add", badArgs{V: unregistered{1}}, &r); !errors.Is(err, ErrCodec) {
		t.Fatalf("a call whose args do not encode: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r); err == nil {
		t.Fatal("a call with the only connection retired and the redial refused succeeded")
	}
	if st := endpointStatus(c, addr); st.State != TransientFailure || st.Dials != 2 {
		t.Fatalf("endpoint %+v; want TransientFailure after 2 dials", st)
	}
}

// A connection retired by one caller's unencodable args takes no more
// pings, but its calls in flight still get their replies, however slow: its
// silence is judged by the read timeout, as on a server without the
// heartbeat, not by the heartbeat timeout (review finding: a healthy 2 s call
// failed with ErrHeartbeat 408 ms after another caller's bad args). A peer
// silent past the read timeout still releases them.
func TestRetiredConnectionKeepsItsSlowCalls(t *testing.T) {
	for _, tc := range []struct {
		name    string
		read    time.Duration
		wantErr error
	}{
		{"slow call answered", 5 * time.Second, nil},
		{"hung peer", 400 * time.Millisecond, ErrReadTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Arith{gate: make(chan struct{})}
			addr := serveArith(t, a)
			c, _ := newTestClient(t, []string{addr}, WithHeartbeat(100*time.Millisecond, 300*time.Millisecond),
				WithReadTimeout(tc.read), WithMaxAttempts(1))
			slow := make(chan error, 1)
			go func() {
				var r int
				slow <- c.Call(context.Background(), "Arith.Slow", Pair{1, 2}, &r)
			}()
			waitCalls(t, a, 1)
			var r int
			if err := c.Call(context.Background(), "Arith.Add", badArgs{V: unregistered{1}}, &r); err == nil {
				t.Fatal("a call with unencodable args succeeded")
			}
			if tc.wantErr == nil {
				time.AfterFunc(1500*time.Millisecond, func() { close(a.gate) })
			} else {
				defer close(a.gate)
			}
			select {
			case err := <-slow:
				if !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil) {
					t.Fatalf("the call in flight on the retired connection: %v; want %v", err, tc.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the call in flight on the retired connection was never released")
			}
		})
	}
}

// Calls that time out waiting for the write slot another call's long write
// holds sent nothing: the node's breaker does not count them (that write's
// own outcome is what counts). Counted, six of them opened the breaker of a
// node whose only trouble was one caller's large upload.
func TestSlotWaitsDoNotTripTheBreaker(t *testing.T) {
	a := sink(t)
	var opened atomic.Bool
	c, _ := newTestClient(t, []string{a}, WithAttemptTimeout(100*time.Millisecond), WithHeartbeat(time.Minute, time.Minute),
		WithBalancer(balancer.WithBreakerEvents(func(e breaker.Event) {
			if e.To == breaker.Open {
				opened.Store(true)
			}
		})))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	upload := holdWriteSlot(t, ctx, c, a)
	var calls sync.WaitGroup
	for range 6 {
		calls.Go(func() {
			cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer ccancel()
			var r rpctest.EchoReply
			if err := c.Call(cctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "x"}, &r, Idempotent()); err == nil {
				t.Error("a call behind a write that never ends succeeded")
			}
		})
	}
	calls.Wait()
	if opened.Load() {
		t.Fatal("the node's breaker opened on calls that waited for another call's write and sent nothing")
	}
	for _, st := range c.Balancer().Status() {
		if st.Breaker != breaker.Closed || st.InFlight != 0 {
			t.Fatalf("after the calls: %+v; want the breaker closed and nothing in flight", st)
		}
	}
	c.Close() // ends the upload's write, which its context cannot interrupt
	upload.Wait()
}

// A connection retired by a request that does not encode closes once its
// calls in flight have their replies, the one whose reply is arriving
// included. It used to close at once when no call was left in the pending
// table, cutting that reply short ("retired after a request could not be
// encoded (while reading a reply)"; outcome unknown).
func TestRetiredConnectionWaitsForAReplyArriving(t *testing.T) {
	srv := rpctest.Start(t)
	addr := throttled(t, srv.Addr(), 0, 1<<20)
	c, _ := newTestClient(t, []string{addr}, WithMaxMessageSize(32<<20), withoutNodeHealth(), WithHeartbeat(0, 0))
	warmEvery(t, c, 1)
	done := replyArriving(t, c, addr)
	var r int
	if err := c.Call(context.Background(), "Echo.Echo", badArgs{V: unregistered{1}}, &r); !errors.Is(err, ErrCodec) {
		t.Fatalf("args that do not encode: %v, want ErrCodec", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the call whose reply was arriving failed: %v", err)
	}
}

// One caller's write deadline that cuts its large request short closes the
// connection (the gob stream is unusable after it), and the calls beside it
// lose it. They may be retried, but the node did nothing wrong: its breaker
// and ejection count no failure for them. They used to get a plain
// ErrConnClosed, which the breaker counted: six such calls opened a healthy
// node's breaker.
func TestOwnWriteDeadlineIsNoFailureOfTheCallsBeside(t *testing.T) {
	srv := rpctest.Start(t)
	addr := throttled(t, srv.Addr(), 1<<20, 0) // requests pass at about 1 MiB/s
	c, _ := newTestClient(t, []string{addr}, WithMaxAttempts(1), WithHeartbeat(0, 0), WithMaxMessageSize(32<<20))
	warmEvery(t, c, 1)
	const beside = 6 // over the breaker's 5 consecutive failures
	errs := make([]error, beside)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			var r rpctest.EchoReply
			errs[i] = c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Sleep: 5 * time.Second}, &r, Idempotent())
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for endpointStatus(c, addr).Pending < beside {
		if time.Now().After(deadline) {
			t.Fatalf("the calls beside never got in flight: %+v", endpointStatus(c, addr))
		}
		time.Sleep(time.Millisecond)
	}
	// The request is built before its deadline starts, and the deadline
	// leaves time for the write to begin on a loaded box (a call whose
	// deadline passes before its write starts sends nothing and closes
	// nothing); 16 MiB at 1 MiB/s still cannot finish within it, and the
	// calls beside, sleeping 5 s, are still pending when it cuts the write.
	big := &rpctest.EchoArgs{Msg: strings.Repeat("x", 16<<20)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", big, &r)
	if !errors.Is(err, context.DeadlineExceeded) || isNotSent(err) {
		t.Fatalf("the 16 MiB request with a 1 s deadline: %v (not sent: %v), want its deadline, mid-write", err, isNotSent(err))
	}
	wg.Wait()
	for i, err := range errs {
		var lc *localCloseError
		if !errors.As(err, &lc) {
			t.Fatalf("call %d beside the cut request: %v, want the connection closed for that request's sake", i, err)
		}
	}
	for _, s := range c.Balancer().Status() {
		if s.Breaker != breaker.Closed || s.Ejected {
			t.Fatalf("one caller's own deadline counted against the healthy node: %+v", s)
		}
	}
}

// Cancelling a call (a context without a deadline) ends its large request's
// write to a peer that does not read. The write used to go on until the
// heartbeat closed the connection, or, with the heartbeat off, until the
// client closed: still blocked 5 s after the cancel.
func TestCancelEndsALargeWrite(t *testing.T) {
	addr := sink(t)
	c, _ := newTestClient(t, []string{addr}, WithMaxAttempts(1), WithHeartbeat(0, 0), WithReadTimeout(0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		var r rpctest.EchoReply
		done <- c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: strings.Repeat("x", 16<<20)}, &r, Idempotent())
	}()
	// Wait until the write is under way and stuck: bytes went out, and
	// none for 100 ms.
	deadline := time.Now().Add(10 * time.Second)
	var cn *conn
	for last, still := int64(-1), 0; still < 10; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the 16 MiB request never got stuck writing to the peer that does not read")
		}
		if cn == nil {
			cn = c.endpoint(addr).ready()
			continue
		}
		if n := cn.codec.out.n.Load(); n > 0 && n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the cancelled call: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call was still writing 5 s after its cancel")
	}
}

// A request smaller than writeChunk, which the cancellation watch does not
// cover, is still bounded by its deadline when the peer stops reading: the
// deadline is the connection's write deadline. With the heartbeat off and
// a long read timeout nothing else ends that write (mutation review: a
// start that set no write deadline passed every test, the 16 MiB request
// of TestBlockedWriteIsBounded being cut by the watch). Calls go one after
// another into the peer's full buffers until one blocks in its write.
func TestSmallBlockedWriteIsBoundedByItsDeadline(t *testing.T) {
	c, _ := newTestClient(t, []string{sink(t)}, WithHeartbeat(0, 0), WithReadTimeout(time.Minute),
		WithMaxAttempts(1), withoutNodeHealth())
	args := &rpctest.EchoArgs{Msg: strings.Repeat("x", writeChunk/2)}
	const n, timeout = 600, time.Second // 600 x 32 KiB: more than loopback's buffers hold
	var wg sync.WaitGroup
	var slow atomic.Int64
	done := make(chan struct{})
	for range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			var r rpctest.EchoReply
			if err := c.Call(ctx, "Echo.Echo", args, &r); err == nil {
				t.Error("a call to a peer that never reads succeeded")
			}
			if time.Since(start) > timeout+2*time.Second {
				slow.Add(1)
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("calls with a %v deadline still blocked after 15 s: a write to a peer that does not read ignores the deadline", timeout)
	}
	if s := slow.Load(); s > 0 {
		t.Fatalf("%d calls with a %v deadline returned more than 2 s late", s, timeout)
	}
}
