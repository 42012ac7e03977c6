package rpcclient

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// Deposits are capped (budget's doc): a long calm period cannot bank a
// retry storm. 100000 calls at a ratio of 0.2 would bank 20000 retries
// uncapped; the cap is 100 (ten seconds of a 10/s floor, or 100), plus the
// floor's burst of 10.
func TestRetryBudgetDepositsAreCapped(t *testing.T) {
	var b budget
	b.init(0.2, 10)
	for range 100000 {
		b.onCall()
	}
	n := 0
	for b.withdraw() && n < 100000 {
		n++
	}
	if n > 100+10+1 {
		t.Fatalf("after 100000 calls at 20 %% and 10/s, %d retries in a row were allowed; want at most 111 (the cap of 100, the floor's burst of 10)", n)
	}
	if n < 100 {
		t.Fatalf("after 100000 calls at 20 %% and 10/s, %d retries in a row were allowed; want the cap of 100 at least", n)
	}
}

// WithMaxAttempts bounds the attempts of an idempotent call whose requests
// left and got no answer (attempt timeouts), and the default is 3: each
// attempt runs on the server, so one attempt too many is one execution too
// many. Four nodes, every one of which swallows replies, so that a fourth
// attempt would have a node to go to.
func TestMaxAttemptsBoundsRetriesThatLeft(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want int
	}{
		{"WithMaxAttempts(2)", []Option{WithMaxAttempts(2)}, 2},
		{"default", nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srvs []*rpctest.Server
			var addrs []string
			for range 4 {
				s := rpctest.Start(t)
				px := rpctest.NewProxy(t, s.Addr())
				px.BlackholeResponses()
				srvs = append(srvs, s)
				addrs = append(addrs, px.Addr())
			}
			opts := append([]Option{WithAttemptTimeout(100 * time.Millisecond), WithHeartbeat(0, 0),
				WithRetryBudget(1, 1000), WithRetryBackoff(time.Millisecond, time.Millisecond), withoutNodeHealth()}, tc.opts...)
			c, _ := newTestClient(t, addrs, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var r rpctest.EchoReply
			err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrAttemptTimeout) {
				t.Fatalf("call to nodes that never answer: %v; want an *Error over ErrAttemptTimeout", err)
			}
			time.Sleep(200 * time.Millisecond) // the requests reach the servers
			var ran int64
			for _, s := range srvs {
				ran += s.Calls()
			}
			if e.Attempts != tc.want || ran != int64(tc.want) {
				t.Fatalf("%d attempts (Tried %v), %d requests reached the servers; want %d of each", e.Attempts, e.Tried, ran, tc.want)
			}
		})
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
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, fn := range []string{"rpcclient.(*endpoint).run", "rpcclient.(*Client).maintain"} {
			if strings.Contains(stacks, fn) {
				t.Fatalf("client %d: %s still running after Close returned", i, fn)
			}
		}
	}
}

// WithMaxMessageSize(n) refuses a reply message larger than n, not one of
// n bytes: the boundary, measured on the reply's own gob value message.
func TestMaxMessageSizeBoundaryIsExact(t *testing.T) {
	srv := rpctest.Start(t)
	want := rpctest.EchoReply{Msg: strings.Repeat("m", 2000), Server: srv.Name()}
	// The size of the value message gob sends for want, its type sent
	// already (the first Encode): what the codec checks against the cap.
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	if err := enc.Encode(&want); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := enc.Encode(&want); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	n := int(-int8(b[0])) // 2000 bytes and more: a multi-byte count
	size := 0
	for _, x := range b[1 : 1+n] {
		size = size<<8 | int(x)
	}
	if size != len(b)-1-n {
		t.Fatalf("measured a %d-byte message in %d bytes", size, len(b))
	}
	for _, tc := range []struct {
		max int
		ok  bool
	}{{size, true}, {size - 1, false}} {
		c, _ := newTestClient(t, []string{srv.Addr()}, WithMaxMessageSize(tc.max), WithHeartbeat(0, 0), withoutNodeHealth())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var r rpctest.EchoReply
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: want.Msg}, &r)
		cancel()
		switch {
		case tc.ok && (err != nil || r != want):
			t.Errorf("a %d-byte reply message with WithMaxMessageSize(%d): %v; want it delivered", size, tc.max, err)
		case !tc.ok && !errors.Is(err, ErrMessageTooLarge):
			t.Errorf("a %d-byte reply message with WithMaxMessageSize(%d): %v; want ErrMessageTooLarge", size, tc.max, err)
		}
		c.Close()
	}
}

// WithRetryBackoff is "full jitter over base x 2^n, capped at max": the
// wait before the retry after n failed attempts is anywhere in
// [0, base x 2^n], and grows with n.
func TestWithRetryBackoffIsExponentialWithFullJitter(t *testing.T) {
	var o options
	WithRetryBackoff(10*time.Millisecond, time.Second)(&o)
	lo, hi := time.Hour, time.Duration(0)
	for range 2000 {
		d := o.retryBackoff.Delay(3, nil)
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi > 80*time.Millisecond || hi < 60*time.Millisecond {
		t.Errorf("WithRetryBackoff(10ms, 1s): the 4th wait reached %v at most over 2000 draws; want up to 10ms x 2^3 = 80ms", hi)
	}
	if lo > 10*time.Millisecond {
		t.Errorf("WithRetryBackoff(10ms, 1s): the 4th wait was %v at least over 2000 draws; want full jitter (from 0)", lo)
	}
}

// A hedged call that the caller's own deadline ends is not an attempt
// timeout (attemptTimedOut: only when ctx has not ended), even with a
// per-attempt timeout set: the *Error must not claim ErrAttemptTimeout,
// which says the node was slow and is what callers count as its fault.
func TestHedgedCallEndedByTheCallersDeadlineIsNoAttemptTimeout(t *testing.T) {
	a, b := rpctest.Start(t), rpctest.Start(t)
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithHeartbeat(0, 0), withoutNodeHealth())
	warm, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	for range 4 { // a connection to each node, for the backup
		var r rpctest.EchoReply
		if err := c.Call(warm, "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: time.Second}, &r, Idempotent(),
		Hedge(20*time.Millisecond), AttemptTimeout(5*time.Second))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hedged call past the caller's deadline: %v; want context.DeadlineExceeded", err)
	}
	if errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("hedged call ended by the caller's 150ms deadline, attempt timeout 5s: %v; want no ErrAttemptTimeout", err)
	}
}
