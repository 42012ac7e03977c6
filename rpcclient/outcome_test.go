package rpcclient

import (
	"context"
	"errors"
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

// lateCtx is a context whose deadline passes before its Done closes, as a
// timer that fires late does (expired's reason to read the deadline).
type lateCtx struct {
	context.Context // Done, Err, Value
	dl              time.Time
}

func (c lateCtx) Deadline() (time.Time, bool) { return c.dl, true }

// A call that is not idempotent and got the server's error reply knows its
// outcome: the server answered. A deadline that passed after the answer
// came must not make it "outcome unknown".
func TestServerReplyAfterTheDeadlineIsNotOutcomeUnknown(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth())
	warmEvery(t, c, 1)
	done, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ctx := lateCtx{done, time.Now().Add(100 * time.Millisecond)}
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: 200 * time.Millisecond, Fail: "refused"}, &r)
	var se rpc.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v; want the server's error", err)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; the server answered, the outcome is known", err)
	}
}

// A call that is not idempotent and got the server's error reply knows its
// outcome also when the client closes as the reply comes in: Close must not
// make it "outcome unknown" (the closed path checked only isNotSent).
func TestServerReplyDuringCloseIsNotOutcomeUnknown(t *testing.T) {
	srv := rpctest.Start(t)
	bad := 0
	for round := 0; round < 40 && bad == 0; round++ {
		c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth(), WithHeartbeat(0, 0))
		warmEvery(t, c, 1)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 8 {
			wg.Go(func() {
				for {
					var r rpctest.EchoReply
					err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Fail: "refused"}, &r)
					var se rpc.ServerError
					if errors.As(err, &se) && errors.Is(err, ErrOutcomeUnknown) {
						mu.Lock()
						if bad == 0 {
							t.Errorf("err = %v; the server answered, the outcome is known", err)
						}
						bad++
						mu.Unlock()
					}
					if errors.Is(err, ErrClosed) {
						return
					}
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		c.Close()
		wg.Wait()
	}
}

// TestAnsweredCallRacingCloseIsNotOutcomeUnknown: a non-idempotent call
// whose server answered with an application error has a known outcome (it
// ran, and failed), whatever Close does meanwhile. A burst of such replies
// is delivered while Close runs: none of the calls that got the server's
// answer may say the outcome is unknown. Before, a call that saw the client
// closed right after its reply reported ErrOutcomeUnknown (and ErrClosed)
// on top of the server's error: Call's closed check tested isNotSent, not
// noAnswer, as its deadline check does.
func TestAnsweredCallRacingCloseIsNotOutcomeUnknown(t *testing.T) {
	bad := 0
	for round := 0; round < 20 && bad == 0; round++ {
		srv := rpctest.Start(t)
		c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth())
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err) // connect first
		}
		srv.Hang()
		const n = 300
		var wg sync.WaitGroup
		var first sync.Once
		returned := make(chan struct{})
		var answered, unknownToo atomic.Int64
		for range n {
			wg.Go(func() {
				var r rpctest.EchoReply
				err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Fail: "boom"}, &r)
				first.Do(func() { close(returned) })
				var se rpc.ServerError
				if errors.As(err, &se) {
					answered.Add(1)
					if errors.Is(err, ErrOutcomeUnknown) {
						if unknownToo.Add(1) == 1 {
							t.Logf("an answered call says: %v", err)
						}
					}
				}
			})
		}
		for deadline := time.Now().Add(5 * time.Second); endpointStatus(c, srv.Addr()).Pending < n; {
			if time.Now().After(deadline) {
				t.Fatalf("the calls are not all pending: %+v", endpointStatus(c, srv.Addr()))
			}
			time.Sleep(time.Millisecond)
		}
		srv.Unhang()
		<-returned
		c.Close()
		wg.Wait()
		srv.Stop()
		if unknownToo.Load() > 0 {
			bad++
			t.Errorf("round %d: %d of %d calls the server answered with its error say ErrOutcomeUnknown", round, unknownToo.Load(), answered.Load())
		}
	}
}

// tripOnOneFailure is a balancer whose node breakers open on a single
// counted failure and record every state change; outlier ejection is off.
func tripOnOneFailure(events *[]breaker.Event, mu *sync.Mutex) Option {
	return WithBalancer(
		balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 1, FailureRatio: -1, OpenTimeout: time.Minute, MaxOpenTimeout: time.Minute}),
		balancer.WithBreakerEvents(func(e breaker.Event) {
			mu.Lock()
			*events = append(*events, e)
			mu.Unlock()
		}),
		balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true}),
		balancer.WithPolicy(balancer.RoundRobin()))
}

// The caller's own deadline (or cancellation) cutting its request's write
// short is not the node's fault, hedged or not: the unhedged path tells the
// balancer ctx's error (call: "whatever error the transport reported"); the
// hedged path's first leg told it the raw write error, a Failure.
func TestCallersDeadlineDuringAHedgedWriteIsNoFailure(t *testing.T) {
	for _, hedged := range []bool{false, true} {
		for _, how := range []string{"deadline", "cancel"} {
			t.Run(map[bool]string{false: "plain", true: "hedged"}[hedged]+"/"+how, func(t *testing.T) {
				srv := rpctest.Start(t)
				addr := throttled(t, srv.Addr(), 1<<20, 0) // requests pass at about 1 MiB/s
				var mu sync.Mutex
				var events []breaker.Event
				c, _ := newTestClient(t, []string{addr}, WithMaxAttempts(1), WithHeartbeat(0, 0),
					WithMaxMessageSize(32<<20), tripOnOneFailure(&events, &mu))
				warmEvery(t, c, 1)
				big := &rpctest.EchoArgs{Msg: strings.Repeat("x", 16<<20)}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				if how == "cancel" {
					ctx, cancel = context.WithCancel(context.Background())
					defer cancel()
					time.AfterFunc(time.Second, cancel)
				}
				opts := []CallOption{Idempotent()}
				if hedged {
					opts = append(opts, Hedge(time.Hour)) // one node: the hedged path, no backup
				}
				var r rpctest.EchoReply
				err := c.Call(ctx, "Echo.Echo", big, &r, opts...)
				if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
					t.Fatalf("the 16 MiB request cut by its caller: %v", err)
				}
				t.Logf("call: %v", err)
				time.Sleep(50 * time.Millisecond) // events are delivered on the Set's goroutine
				mu.Lock()
				defer mu.Unlock()
				for _, s := range c.Balancer().Status() {
					if s.Breaker != breaker.Closed {
						t.Fatalf("the caller's own %s, mid-write, counted against the node: breaker %v (events %v)", how, s.Breaker, events)
					}
				}
			})
		}
	}
}

// A per-attempt timeout is a failure of the node (breaker.Classify), also
// when it fires while the node's reply is still arriving: the connection is
// closed for the abandoned reply's sake (a *localCloseError, no outcome for
// the calls beside), but for the call whose attempt timed out it is the
// node's slowness. It counted nothing: the same slow node was blamed when
// its reply had not started and not when it had, and P2C, which gets no
// sample from an excluded outcome, never learned it.
func TestAttemptTimeoutDuringATricklingReplyIsAFailure(t *testing.T) {
	for _, hedged := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "hedged"}[hedged], func(t *testing.T) {
			srv := rpctest.Start(t)
			addr := throttled(t, srv.Addr(), 0, 1<<20) // replies pass at about 1 MiB/s
			var mu sync.Mutex
			var events []breaker.Event
			c, _ := newTestClient(t, []string{addr}, WithMaxAttempts(1), WithHeartbeat(0, 0),
				WithMaxMessageSize(32<<20), WithAttemptTimeout(150*time.Millisecond), tripOnOneFailure(&events, &mu))
			warmEvery(t, c, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			opts := []CallOption{Idempotent()}
			if hedged {
				opts = append(opts, Hedge(time.Hour))
			}
			var r rpctest.EchoReply
			err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{ReplyBytes: 2 << 20}, &r, opts...)
			t.Logf("call: %v", err)
			if err == nil {
				t.Fatal("a 2 MiB reply at 1 MiB/s came within a 150 ms attempt timeout")
			}
			if !errors.Is(err, ErrAttemptTimeout) {
				t.Errorf("err = %v, want ErrAttemptTimeout", err)
			}
			time.Sleep(50 * time.Millisecond)
			for _, s := range c.Balancer().Status() {
				if s.Breaker != breaker.Open {
					t.Fatalf("the attempt timed out on the node's trickling reply and the node's breaker (1 failure trips) is %v", s.Breaker)
				}
			}
		})
	}
}

// One reply that does not decode into its caller's type (a caller's slip,
// or version skew of one method's reply), or that is larger than the
// client's cap, closes the connection, and every call in flight beside it
// loses the connection through no fault of the node's nor its own. Each of
// those used to count as one more failure of the node: one bad reply with
// four calls beside it was five consecutive failures, the default
// breaker's and ejection's threshold, on a healthy node. An oversized reply
// itself counts, once (FAULTS row 23: "count a failure"); one that does not
// decode counts for nothing (TestWrongReplyTypeDoesNotOpenEveryBreaker).
func TestBadReplyCountsOnceAgainstTheNode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		args   Pair
		want   error
	}{
		{"undecodable", "Arith.Add", Pair{2, 3}, ErrCodec},               // an int into a *string
		{"too large", "Arith.Big", Pair{1 << 20, 0}, ErrMessageTooLarge}, // 1 MiB, cap 64 KiB
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Arith{gate: make(chan struct{})}
			addr := serveArith(t, &a)
			var mu sync.Mutex
			var events []breaker.Event
			c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0), WithMaxMessageSize(64<<10), WithBalancer(
				balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 2, FailureRatio: -1, OpenTimeout: time.Minute, MaxOpenTimeout: time.Minute}),
				balancer.WithBreakerEvents(func(e breaker.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }),
				balancer.WithOutlierDetection(balancer.OutlierConfig{ConsecutiveFailures: 2, MaxEjectedShare: 1})))
			var sum int
			if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &sum); err != nil {
				t.Fatal(err)
			}
			const beside = 4
			errs := make(chan error, beside)
			for range beside {
				go func() {
					var r int
					errs <- c.Call(context.Background(), "Arith.Slow", Pair{7, 0}, &r)
				}()
			}
			waitCalls(t, &a, 1+beside)
			var s string // Arith.Add replies with an int
			err := c.Call(context.Background(), tc.method, tc.args, &s)
			if !errors.Is(err, tc.want) {
				t.Fatalf("the bad reply: %v, want %v", err, tc.want)
			}
			for range beside {
				t.Logf("beside: %v", <-errs)
			}
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			for _, s := range c.Balancer().Status() {
				if s.Breaker != breaker.Closed || s.Ejected {
					t.Fatalf("one bad reply took the healthy node out (2 failures trip): breaker %v, ejected %v; events %v", s.Breaker, s.Ejected, events)
				}
			}
		})
	}
}

// A request whose encoding, on this side, outlasts the attempt timeout
// sends nothing (errEncodedLate) and retires its connection, whose gob
// stream it left unusable. Another node would take as long to encode it:
// such retries are bounded by WithMaxAttempts like those of a request that
// may have left, not by the nodes, as a failed dial's are. They were not:
// with WithMaxAttempts(1) and three nodes, the call encoded its args nine
// times (three rounds of the nodes) and retired and redialled every
// node's connection three times.
func TestEncodingPastTheAttemptTimeoutIsBoundedByMaxAttempts(t *testing.T) {
	for _, max := range []int{1, 2} {
		addrs := []string{serveSlowEnc(t), serveSlowEnc(t), serveSlowEnc(t)}
		c, _ := newTestClient(t, addrs, WithAttemptTimeout(100*time.Millisecond), WithMaxAttempts(max), withoutNodeHealth())
		for range 6 {
			var r int
			if err := c.Call(context.Background(), "SlowEncSvc.Take", SlowEnc{}, &r); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var r int
		err := c.Call(ctx, "SlowEncSvc.Take", SlowEnc{Delay: 150 * time.Millisecond}, &r)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrAttemptTimeout) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("max %d: %v, want an attempt timeout, nothing sent", max, err)
		}
		dials := 0
		for _, st := range c.Endpoints() {
			dials += int(st.Dials)
		}
		t.Logf("max %d: %d attempts, %d dials: %v", max, e.Attempts, dials, err)
		if e.Attempts > max {
			t.Errorf("WithMaxAttempts(%d): the request that encodes past its attempt timeout was encoded %d times, and the nodes were dialled %d times", max, e.Attempts, dials)
		}
	}
}

// unencodable is args gob cannot encode.
type unencodable struct{ C chan int }

// outcomeOf tells what one real call's error counted as for its node's
// breaker. Run A trips on one failure: only if the call was a Failure. Run
// B trips on two consecutive failures, and makes a known failure (an
// attempt timeout), the call, and another: a Success between them resets
// the run, an exclusion does not.
func outcomeOf(t *testing.T, x func(t *testing.T, c *Client, px *rpctest.Proxy) error) (breaker.Outcome, error) {
	tripped := func(runB bool) (bool, error) {
		srv := rpctest.Start(t)
		px := rpctest.NewProxy(t, srv.Addr())
		var mu sync.Mutex
		opened := false
		n := 1
		if runB {
			n = 2
		}
		c, _ := newTestClient(t, []string{px.Addr()}, WithHeartbeat(0, 0), WithMaxMessageSize(64<<10), WithBalancer(
			balancer.WithBreakers(breaker.Config{ConsecutiveFailures: n, FailureRatio: -1, OpenTimeout: time.Minute, MaxOpenTimeout: time.Minute}),
			balancer.WithBreakerEvents(func(e breaker.Event) {
				mu.Lock()
				opened = opened || e.To == breaker.Open
				mu.Unlock()
			}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})))
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
		fail := func() {
			// A known failure: an attempt timeout, not retried (not idempotent).
			for range 20 {
				err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Sleep: 150 * time.Millisecond}, &r, AttemptTimeout(20*time.Millisecond))
				if errors.Is(err, ErrAttemptTimeout) {
					return
				}
				time.Sleep(20 * time.Millisecond) // a redial after the call cost the connection
			}
			t.Fatal("no known failure")
		}
		if runB {
			fail()
		}
		err := x(t, c, px)
		px.Pass()
		if runB {
			fail()
		}
		time.Sleep(30 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return opened, err
	}
	_ = rpc.ServerError("")
	a, err := tripped(false)
	if a {
		return breaker.Failure, err
	}
	if b, _ := tripped(true); b {
		return breaker.Excluded, err
	}
	return breaker.Success, err
}

func TestOutcomesOfRealCalls(t *testing.T) {
	echo := func(ctx context.Context, c *Client, args *rpctest.EchoArgs, reply any, opts ...CallOption) error {
		return c.Call(ctx, "Echo.Echo", args, reply, opts...)
	}
	for _, tc := range []struct {
		name string
		want breaker.Outcome
		x    func(t *testing.T, c *Client, px *rpctest.Proxy) error
	}{
		{"server error", breaker.Success, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			var r rpctest.EchoReply
			return echo(context.Background(), c, &rpctest.EchoArgs{Fail: "boom"}, &r)
		}},
		{"reset mid-call", breaker.Failure, func(t *testing.T, c *Client, px *rpctest.Proxy) error {
			time.AfterFunc(50*time.Millisecond, px.Reset)
			var r rpctest.EchoReply
			return echo(context.Background(), c, &rpctest.EchoArgs{Sleep: 200 * time.Millisecond}, &r)
		}},
		{"attempt timeout", breaker.Failure, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			var r rpctest.EchoReply
			return echo(context.Background(), c, &rpctest.EchoArgs{Sleep: 150 * time.Millisecond}, &r, AttemptTimeout(20*time.Millisecond))
		}},
		{"caller cancels", breaker.Excluded, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			var r rpctest.EchoReply
			return echo(ctx, c, &rpctest.EchoArgs{Sleep: 150 * time.Millisecond}, &r)
		}},
		{"caller deadline", breaker.Excluded, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			var r rpctest.EchoReply
			return echo(ctx, c, &rpctest.EchoArgs{Sleep: 150 * time.Millisecond}, &r)
		}},
		{"caller deadline before the attempt timeout", breaker.Excluded, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			var r rpctest.EchoReply
			return echo(ctx, c, &rpctest.EchoArgs{Sleep: 150 * time.Millisecond}, &r, AttemptTimeout(40*time.Millisecond))
		}},
		{"reply too large", breaker.Failure, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			var r rpctest.EchoReply
			return echo(context.Background(), c, &rpctest.EchoArgs{ReplyBytes: 1 << 20}, &r)
		}},
		{"reply of the wrong type", breaker.Excluded, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			var r int
			return echo(context.Background(), c, &rpctest.EchoArgs{}, &r)
		}},
		{"args do not encode", breaker.Excluded, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			var r rpctest.EchoReply
			return c.Call(context.Background(), "Echo.Echo", unencodable{C: make(chan int)}, &r)
		}},
		{"args do not encode, hedged", breaker.Excluded, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			var r rpctest.EchoReply
			return c.Call(context.Background(), "Echo.Echo", unencodable{C: make(chan int)}, &r, Idempotent(), Hedge(time.Hour))
		}},
		{"server error, hedged", breaker.Success, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			var r rpctest.EchoReply
			return echo(context.Background(), c, &rpctest.EchoArgs{Fail: "boom"}, &r, Idempotent(), Hedge(time.Hour))
		}},
		{"attempt timeout, hedged", breaker.Failure, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			var r rpctest.EchoReply
			return echo(context.Background(), c, &rpctest.EchoArgs{Sleep: 150 * time.Millisecond}, &r, Idempotent(), Hedge(time.Hour), AttemptTimeout(20*time.Millisecond))
		}},
		{"caller cancels, hedged", breaker.Excluded, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			var r rpctest.EchoReply
			return echo(ctx, c, &rpctest.EchoArgs{Sleep: 150 * time.Millisecond}, &r, Idempotent(), Hedge(time.Hour))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := outcomeOf(t, tc.x)
			t.Logf("%v: %v", got, err)
			if got != tc.want {
				t.Errorf("counted as %v, want %v (err %v)", got, tc.want, err)
			}
		})
	}
}

// A reply that does not decode into the caller's value is a bug at the call
// site (or a version skew), as args that do not encode are. Repeating it must
// not take the whole service away from the client's correct calls. It did:
// every node's breaker opened after a handful of such calls, and every other
// call failed with ErrUnavailable for the open period (30 s).
func TestWrongReplyTypeDoesNotOpenEveryBreaker(t *testing.T) {
	var a, b Arith
	c, _ := newTestClient(t, []string{serveArith(t, &a), serveArith(t, &b)})
	for i := range 12 {
		var wrong string // Arith.Add replies an int
		var opts []CallOption
		if i%2 == 0 {
			opts = append(opts, Idempotent()) // retryable, were it not the caller's bug
		}
		err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &wrong, opts...)
		// ErrCodec at its only attempt, never "no node available": the
		// breakers count nothing, and the call is not retried, not even
		// an idempotent one (every node would answer it alike).
		var e *Error
		if !errors.Is(err, ErrCodec) || !errors.As(err, &e) || e.Attempts != 1 {
			t.Fatalf("call %d with the wrong reply type: %v; want ErrCodec after 1 attempt", i+1, err)
		}
	}
	for _, st := range c.Balancer().Status() {
		if st.Breaker != breaker.Closed || st.Ejected {
			t.Fatalf("after 12 calls with the wrong reply type, %s: breaker %v, ejected %v; want closed, not ejected", st.Endpoint.Addr, st.Breaker, st.Ejected)
		}
	}
	var r int
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r, Idempotent()); err != nil {
		for _, st := range c.Balancer().Status() {
			t.Logf("%s: breaker %v, ejected %v", st.Endpoint.Addr, st.Breaker, st.Ejected)
		}
		t.Fatalf("a correct call after 12 calls with the wrong reply type: %v", err)
	}
}
