package rpcclient

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// twoHung starts servers a and b, returns a client over both built with
// opts (round robin, no heartbeat, no node health) once both connections
// are up, and hangs both servers until the test ends.
func twoHung(t *testing.T, opts ...Option) (*Client, *rpctest.Server, *rpctest.Server) {
	t.Helper()
	a := rpctest.Start(t, rpctest.WithName("a"))
	b := rpctest.Start(t, rpctest.WithName("b"))
	opts = append([]Option{WithHeartbeat(0, 0), withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin()))}, opts...)
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, opts...)
	warmEvery(t, c, 2) // hedges go only to nodes already connected
	a.Hang()
	b.Hang()
	t.Cleanup(func() { a.Unhang(); b.Unhang() })
	return c, a, b
}

// A hedged call whose two legs both time out is retried: the backup is one
// hedge (it did not win), the attempt after the legs one retry, and the
// call one failure. The backup is no retry, though it took a token and
// counts against WithMaxAttempts.
func TestStatsCountHedgedLegsThatFailThenRetry(t *testing.T) {
	c, _, _ := twoHung(t, WithHedging(5*time.Millisecond), WithAttemptTimeout(50*time.Millisecond),
		WithRetryBackoff(time.Millisecond, time.Millisecond), WithMaxAttempts(3))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 3 || !errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("err = %v; want 3 attempts (2 legs, 1 retry) that timed out", err)
	}
	checkStats(t, c, "2 hedged legs and a retry, all timed out", Stats{Failed: 1, Retries: 1, Hedges: 1})

	// The same with the hedge delay given per call.
	err = c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent(), Hedge(5*time.Millisecond))
	if !errors.As(err, &e) || e.Attempts != 3 {
		t.Fatalf("err = %v; want 3 attempts again", err)
	}
	checkStats(t, c, "two such calls", Stats{Failed: 2, Retries: 2, Hedges: 2})
}

// A backup that answers after the first leg timed out won the call: one
// hedge, one win, no retry. Node a hangs; b answers after 250 ms. A call
// that starts on a sends its backup to b at 300 ms, a's attempt times out
// at 500 ms, b answers at 550 ms (see TestHedgeOutlivesTheFirstLegsTimeout).
// One that starts on b is answered at 250 ms, before the hedge delay.
func TestStatsCountABackupThatWonAfterTheFirstLegFailed(t *testing.T) {
	c, _, b := twoHung(t, WithHedging(300*time.Millisecond), WithAttemptTimeout(500*time.Millisecond),
		WithRetryBackoff(10*time.Minute, 10*time.Minute))
	b.Unhang()
	won := 0
	for i := 0; i < 6 && won == 0; i++ {
		before := c.Stats()
		var r rpctest.ExecReply
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: "x", Sleep: 250 * time.Millisecond}, &r, Idempotent())
		cancel()
		if err != nil || r.Server != "b" {
			t.Fatalf("call %d: %+v, %v; b should answer", i, r, err)
		}
		s := c.Stats()
		switch d := (Stats{Hedges: s.Hedges - before.Hedges, HedgeWins: s.HedgeWins - before.HedgeWins}); {
		case s.Failed != 0 || s.Retries != 0 || s.BudgetExhausted != 0 || s.Unsent != 0:
			t.Fatalf("call %d: stats %+v; nothing failed, nothing was retried", i, s)
		case d == Stats{Hedges: 1, HedgeWins: 1}:
			won++
		case d != Stats{}:
			t.Fatalf("call %d counted %+v; want one hedge that won, or nothing", i, d)
		}
	}
	if won == 0 {
		t.Fatalf("no call started on a in 6 round-robin calls: stats %+v", c.Stats())
	}
}

// A backup the budget refuses is counted, and so is the retry it refuses
// after the first leg failed: two refusals, no hedge, no retry.
func TestStatsCountABackupAndARetryTheBudgetRefused(t *testing.T) {
	c, _, _ := twoHung(t, WithHedging(5*time.Millisecond), WithAttemptTimeout(50*time.Millisecond),
		WithRetryBudget(0, 0))
	var r rpctest.EchoReply
	err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 1 || !errors.Is(err, ErrRetryBudget) {
		t.Fatalf("err = %v; want 1 attempt and ErrRetryBudget", err)
	}
	checkStats(t, c, "a refused backup, then a refused retry", Stats{Failed: 1, BudgetExhausted: 2})
}

// A call cancelled during the retry backoff made no retry (its token goes
// back): it counts as failed only.
func TestStatsCountACallCancelledDuringTheBackoff(t *testing.T) {
	c, _, _ := twoHung(t, WithAttemptTimeout(30*time.Millisecond), WithRetryBackoff(time.Minute, time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("err = %v; want the attempt's timeout, then the cancellation", err)
	}
	checkStats(t, c, "cancelled in the backoff", Stats{Failed: 1})
}

// A call cancelled while it waits for discovery counts that wait, the
// failed dial, and the failure.
func TestStatsCountACallCancelledDuringARefreshWait(t *testing.T) {
	dead := refusingAddr(t)
	c, _ := newTestClient(t, []string{dead}, WithDialTimeout(time.Minute),
		WithConnectBackoff(time.Minute, 1.6, time.Minute, 0), withoutNodeHealth())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	var de *DialError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &de) {
		t.Fatalf("err = %v; want the dial error, then the cancellation", err)
	}
	checkStats(t, c, "cancelled in a refresh wait", Stats{Failed: 1, Unsent: 1, RefreshWaits: 1})
}

// Close fails a call that is not idempotent and whose request is out with
// ErrOutcomeUnknown, an idempotent one in its retry backoff with ErrClosed
// (no retry), and a call after Close with ErrClosed: three failures, one
// outcome unknown.
func TestStatsCountCallsEndedByClose(t *testing.T) {
	c, _, _ := twoHung(t, WithAttemptTimeout(30*time.Millisecond), WithRetryBackoff(time.Minute, time.Minute))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { // no attempt timeout: pending until Close
		defer wg.Done()
		var r rpctest.EchoReply
		errs[0] = c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, AttemptTimeout(0))
	}()
	go func() { // times out at once, then waits a minute
		defer wg.Done()
		var r rpctest.EchoReply
		errs[1] = c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	}()
	time.Sleep(300 * time.Millisecond)
	c.Close()
	wg.Wait()
	if !errors.Is(errs[0], ErrClosed) || !errors.Is(errs[0], ErrOutcomeUnknown) {
		t.Fatalf("pending call: %v; want ErrClosed and ErrOutcomeUnknown", errs[0])
	}
	if !errors.Is(errs[1], ErrClosed) || errors.Is(errs[1], ErrOutcomeUnknown) {
		t.Fatalf("call in its backoff: %v; want ErrClosed only", errs[1])
	}
	var r rpctest.EchoReply
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v; want ErrClosed", err)
	}
	checkStats(t, c, "three calls ended by Close", Stats{Failed: 3, OutcomeUnknown: 1})
}

// A call made retryable by an idempotency key is retried, and when every
// attempt timed out its outcome is unknown: counted as such, once.
func TestStatsCountAKeyedCallsUnknownOutcome(t *testing.T) {
	c, _, _ := twoHung(t, WithAttemptTimeout(30*time.Millisecond), WithRetryBackoff(time.Millisecond, time.Millisecond),
		WithHedging(5*time.Millisecond)) // keyed calls are not hedged
	var r rpctest.ExecReply
	err := c.Call(context.Background(), "Echo.Exec", &rpctest.ExecArgs{ID: "k"}, &r, WithIdempotencyKey(""))
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 3 || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; want 3 attempts and ErrOutcomeUnknown", err)
	}
	checkStats(t, c, "a keyed call that timed out 3 times", Stats{Failed: 1, OutcomeUnknown: 1, Retries: 2})
}

// A retry that fails to dial is one retry and one attempt that sent
// nothing; the call's next attempt, on the node that failed first, takes
// no token and is no retry: Retries is the requests sent after the first.
// Node a hangs; b is stopped, so its connection is gone and its dial is
// refused. Either node may come first.
func TestStatsCountARetryThatFailedToDial(t *testing.T) {
	a := rpctest.Start(t, rpctest.WithName("a"))
	b := rpctest.Start(t, rpctest.WithName("b"))
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithHeartbeat(0, 0),
		WithAttemptTimeout(30*time.Millisecond), WithRetryBackoff(time.Millisecond, time.Millisecond),
		WithMaxAttempts(2), WithDialTimeout(100*time.Millisecond),
		WithConnectBackoff(time.Minute, 1.6, time.Minute, 0),
		withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
	warmEvery(t, c, 2)
	a.Hang()
	defer a.Unhang()
	b.Stop()
	for endpointStatus(c, b.Addr()).State == Ready {
		time.Sleep(time.Millisecond)
	}
	var r rpctest.EchoReply
	err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 3 || !errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("err = %v; want 3 attempts: 2 timed out on a, 1 failed dial to b", err)
	}
	s := c.Stats()
	t.Logf("tried %v: stats %+v", e.Tried, s)
	want := Stats{Failed: 1, Retries: 1, Unsent: 1, RefreshWaits: s.RefreshWaits}
	if s != want || s.RefreshWaits > 1 {
		t.Fatalf("stats %+v; want %+v, and at most one refresh wait", s, want)
	}
}

// Concurrent failing calls count exactly, and no counter ever goes down.
func TestStatsCountConcurrentCalls(t *testing.T) {
	c, _, _ := twoHung(t, WithAttemptTimeout(20*time.Millisecond), WithRetryBackoff(time.Millisecond, time.Millisecond),
		WithRetryBudget(0, 10000))
	const calls = 32
	stop := make(chan struct{})
	watched := make(chan error, 1)
	go func() {
		var last Stats
		for {
			s := c.Stats()
			if s.Failed < last.Failed || s.Retries < last.Retries || s.OutcomeUnknown < last.OutcomeUnknown {
				watched <- errors.New("a counter went down")
				return
			}
			last = s
			select {
			case <-stop:
				watched <- nil
				return
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var opts []CallOption
			if i%2 == 0 {
				opts = append(opts, Idempotent())
			}
			var r rpctest.EchoReply
			if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, opts...); err == nil {
				t.Error("a call to hung servers succeeded")
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-watched; err != nil {
		t.Fatal(err)
	}
	checkStats(t, c, "16 idempotent and 16 other calls, all timed out",
		Stats{Failed: calls, OutcomeUnknown: calls / 2, Retries: calls})
}

// retryHook is a call's context that runs fire at the second read of its
// deadline once armed: armed when the call's first attempt is out (the
// server holds the request; the call waits on its reply and reads nothing
// of its context), the reads that follow are the loop's expired, after the
// attempt failed, and then retry's deadline check, just before the retry
// takes its token and waits out its backoff. fire then runs where Close or
// the caller's cancellation can come at any time, after the call saw the
// attempt fail and decided to retry, and before the retry's attempt.
type retryHook struct {
	context.Context // Done, Err, Value
	armed           atomic.Bool
	reads           atomic.Int32
	fire            func()
}

func (h *retryHook) Deadline() (time.Time, bool) {
	if h.armed.Load() && h.reads.Add(1) == 2 {
		h.fire()
	}
	return time.Time{}, false
}

// retryCut makes an idempotent call to a server that runs the request (a
// long sleep) and then stops (the connection is lost: retryable, the request may have run),
// with a retry backoff of 0 and a retry budget of one token; the call's
// context runs fire (which cancels it when given nil) where retryHook says.
// It returns the call's error.
func retryCut(t *testing.T, fire func(c *Client)) (*Client, error) {
	t.Helper()
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, WithHeartbeat(0, 0), withoutNodeHealth(),
		WithRetryBackoff(0, 0), WithRetryBudget(0, 0.001)) // the reserve's one token, refilled in 1000 s
	warmEvery(t, c, 1)
	before := srv.Calls()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &retryHook{Context: ctx, fire: func() {
		if fire == nil {
			cancel()
		} else {
			fire(c)
		}
	}}
	done := make(chan error, 1)
	go func() {
		var r rpctest.EchoReply
		done <- c.Call(h, "Echo.Echo", &rpctest.EchoArgs{Sleep: time.Hour}, &r, Idempotent())
	}()
	for srv.Calls() == before {
		time.Sleep(time.Millisecond)
	}
	h.armed.Store(true)
	srv.Stop()
	err := <-done
	if n := h.reads.Load(); n < 2 {
		t.Fatalf("the call read its deadline %d times after its first attempt failed; want at least 2 (then retry's check): %v", n, err)
	}
	var e *Error
	if !errors.As(err, &e) || len(e.Errs) == 0 || !retryable(e.Errs[0]) {
		t.Fatalf("err = %v; want a first attempt whose error was retryable", err)
	}
	return c, err
}

// A call whose client closes after it decided to retry, and before the
// retry's attempt, made no retry: Retries counts attempts made, and the
// retry's token goes back to the budget. (With a backoff of 0 the wait is
// empty: Close comes between it and the pick, as it can after any backoff.)
func TestStatsCountNoRetryWhenCloseCameBeforeItsAttempt(t *testing.T) {
	c, err := retryCut(t, func(c *Client) { c.Close() })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v; want ErrClosed", err)
	}
	checkNoRetry(t, c, err, "closed before the retry's attempt")
}

// A call whose context is cancelled after it decided to retry, and before a
// backoff of 0, made no retry either.
func TestStatsCountNoRetryWhenCancelledBeforeAZeroBackoff(t *testing.T) {
	c, err := retryCut(t, nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; want the cancellation, and no unknown outcome (the call is idempotent)", err)
	}
	checkNoRetry(t, c, err, "cancelled before the retry's attempt")
}

// checkNoRetry checks a call that failed, with err, before its retry's
// attempt: one failed call and no retry in c's Stats, the retry's token back
// in the budget, and one attempt in the Error.
func checkNoRetry(t *testing.T, c *Client, err error, what string) {
	t.Helper()
	checkStats(t, c, what, Stats{Failed: 1})
	if !c.budget.withdraw() {
		t.Fatal("the retry made no attempt, but its token was not given back")
	}
	if e := (*Error)(nil); !errors.As(err, &e) || e.Attempts != 1 {
		t.Fatalf("err = %v; want 1 attempt", err)
	}
}
