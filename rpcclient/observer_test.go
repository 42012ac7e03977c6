package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// recorder is an Observer that keeps every report.
type recorder struct {
	mu       sync.Mutex
	attempts []AttemptInfo
	calls    []CallInfo
}

func (r *recorder) ObserveAttempt(a AttemptInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, a)
}

func (r *recorder) ObserveCall(c CallInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

// take returns the reports so far and forgets them.
func (r *recorder) take() ([]AttemptInfo, []CallInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, c := r.attempts, r.calls
	r.attempts, r.calls = nil, nil
	return a, c
}

// checkTimes fails t unless a's times are set and within the call's.
func checkTimes(t *testing.T, a AttemptInfo, call CallInfo) {
	t.Helper()
	if a.Start.IsZero() || a.Duration <= 0 {
		t.Errorf("attempt %+v: start and duration must be set", a)
	}
	if a.Start.Before(call.Start) || a.Start.Add(a.Duration).After(call.Start.Add(call.Duration)) {
		t.Errorf("attempt %+v lies outside its call %+v", a, call)
	}
}

// Every call is reported once, after its attempts: one attempt for a call
// that succeeded at once, and for a call whose first node was down, the
// failed dial and then the attempt that succeeded elsewhere, numbered in
// order. The counts agree with Stats.
func TestObserverSeesEveryAttemptAndCall(t *testing.T) {
	live := rpctest.Start(t, rpctest.WithName("live"))
	dead := rpctest.Start(t, rpctest.WithName("dead"))
	dead.Stop() // its port refuses connections
	rec := &recorder{}
	c, _ := newTestClient(t, []string{dead.Addr(), live.Addr()}, WithObserver(rec),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	const calls = 20
	redials := 0
	for i := range calls {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, &r); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		attempts, cs := rec.take()
		if len(cs) != 1 || cs[0].Err != nil || cs[0].Method != "Echo.Echo" || cs[0].Start.IsZero() || cs[0].Duration <= 0 {
			t.Fatalf("call %d reported as %+v, want one successful Echo.Echo with its times", i, cs)
		}
		last := attempts[len(attempts)-1]
		if last.Addr != live.Addr() || last.Err != nil || last.Attempt != len(attempts) || last.Hedge {
			t.Fatalf("call %d: last attempt %+v, want attempt %d on %s without an error", i, last, len(attempts), live.Addr())
		}
		switch len(attempts) {
		case 1:
		case 2:
			var de *DialError
			if a := attempts[0]; a.Addr != dead.Addr() || a.Attempt != 1 || !errors.As(a.Err, &de) {
				t.Fatalf("call %d: first of two attempts %+v, want attempt 1 on %s with a *DialError", i, a, dead.Addr())
			}
			redials++
		default:
			t.Fatalf("call %d: %d attempts reported: %+v", i, len(attempts), attempts)
		}
		for _, a := range attempts {
			checkTimes(t, a, cs[0])
			if a.Method != "Echo.Echo" {
				t.Fatalf("attempt %+v: method", a)
			}
		}
	}
	if redials == 0 {
		t.Fatal("no call was reported trying the dead node: the test proves nothing")
	}
	if st := c.Stats(); int(st.Unsent) != redials || st.Failed != 0 {
		t.Fatalf("stats %+v: want Unsent %d (the failed dials reported) and no failure", st, redials)
	}
}

// A call that fails reports as many attempts as its Error counts, each with
// its own error, and the Error itself as the call's.
func TestObserverReportsAFailedCallsAttempts(t *testing.T) {
	a, b := rpctest.Start(t), rpctest.Start(t)
	rec := &recorder{}
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithObserver(rec),
		WithAttemptTimeout(50*time.Millisecond), WithMaxAttempts(3), WithRetryBackoff(time.Millisecond, time.Millisecond),
		WithHeartbeat(0, 0), withoutNodeHealth())
	warmEvery(t, c, 2)
	rec.take()
	a.Hang()
	b.Hang()
	defer a.Unhang()
	defer b.Unhang()
	var r rpctest.EchoReply
	err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 3 {
		t.Fatalf("call against hung nodes: %v, want an *Error with 3 attempts", err)
	}
	attempts, cs := rec.take()
	if len(cs) != 1 || cs[0].Err != err {
		t.Fatalf("call reported as %+v, want the error Call returned", cs)
	}
	if len(attempts) != e.Attempts {
		t.Fatalf("%d attempts reported, the Error counts %d: %+v", len(attempts), e.Attempts, attempts)
	}
	for i, at := range attempts {
		if at.Attempt != i+1 || !errors.Is(at.Err, ErrAttemptTimeout) || at.Duration < 50*time.Millisecond {
			t.Fatalf("attempt %d: %+v, want attempt %d timed out after its 50 ms", i, at, i+1)
		}
		checkTimes(t, at, cs[0])
	}
}

// A server's error is the attempt's error, and a call that is not
// idempotent is one attempt, reported once.
func TestObserverReportsAServerError(t *testing.T) {
	srv := rpctest.Start(t)
	rec := &recorder{}
	c, _ := newTestClient(t, []string{srv.Addr()}, WithObserver(rec))
	var r rpctest.EchoReply
	err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Fail: "no"}, &r)
	attempts, cs := rec.take()
	var se rpc.ServerError
	if len(attempts) != 1 || !errors.As(attempts[0].Err, &se) || len(cs) != 1 || cs[0].Err != err || err == nil {
		t.Fatalf("call with a server error %v reported as %+v and %+v", err, attempts, cs)
	}
}

// A hedged call reports both requests: the backup, marked Hedge, that
// answered, and the first, withdrawn, as context.Canceled.
func TestObserverReportsBothLegsOfAHedgedCall(t *testing.T) {
	rec := &recorder{}
	c, _, fast := slowAndFast(t, 300*time.Millisecond, WithHedging(20*time.Millisecond), WithObserver(rec),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	hedged := 0
	for i := 0; i < 10 && hedged < 2; i++ {
		rec.take()
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
			t.Fatal(err)
		}
		attempts, cs := rec.take()
		if len(cs) != 1 || cs[0].Err != nil {
			t.Fatalf("call reported as %+v", cs)
		}
		if len(attempts) == 1 {
			if a := attempts[0]; a.Addr != fast.Addr() || a.Err != nil || a.Hedge || a.Attempt != 1 {
				t.Fatalf("a call that was not hedged: %+v, want attempt 1 on the fast node", a)
			}
			continue
		}
		hedged++
		byNum := map[int]AttemptInfo{}
		for _, a := range attempts {
			byNum[a.Attempt] = a
			checkTimes(t, a, cs[0])
		}
		first, backup := byNum[1], byNum[2]
		if len(attempts) != 2 || first.Addr == fast.Addr() || !errors.Is(first.Err, context.Canceled) || first.Hedge ||
			backup.Addr != fast.Addr() || backup.Err != nil || !backup.Hedge {
			t.Fatalf("a hedged call reported %+v; want attempt 1 on the slow node withdrawn (context.Canceled) and attempt 2, the backup, answered by the fast node", attempts)
		}
		if first.Duration < 20*time.Millisecond {
			t.Fatalf("the withdrawn first request took %v, less than the 20 ms hedge delay", first.Duration)
		}
	}
	if hedged == 0 {
		t.Fatal("no call of 10 started on the slow node: the test proves nothing")
	}
}

// Calls made concurrently are each reported, with their attempts.
func TestObserverUnderConcurrentCalls(t *testing.T) {
	a, b := rpctest.Start(t), rpctest.Start(t)
	rec := &recorder{}
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithObserver(rec))
	const workers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				var r rpctest.EchoReply
				if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: fmt.Sprint(w, i)}, &r); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	attempts, cs := rec.take()
	if len(cs) != workers*each || len(attempts) != workers*each {
		t.Fatalf("%d calls made: %d calls and %d attempts reported", workers*each, len(cs), len(attempts))
	}
}

// Without an Observer, Call reads no clock for one.
func TestNoObserverReadsNoClock(t *testing.T) {
	c, _ := newTestClient(t, []string{rpctest.Start(t).Addr()})
	if !c.now().IsZero() {
		t.Fatal("now read the clock for a client without an Observer")
	}
}

// An attempt cut short by the caller's deadline is reported with the
// attempt's error, and the call with its Error.
func TestObserverReportsAnAttemptCutByTheDeadline(t *testing.T) {
	srv := rpctest.Start(t)
	rec := &recorder{}
	c, _ := newTestClient(t, []string{srv.Addr()}, WithObserver(rec), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: time.Second}, &r, Idempotent())
	attempts, cs := rec.take()
	if !errors.Is(err, context.DeadlineExceeded) || len(cs) != 1 || cs[0].Err != err {
		t.Fatalf("call past its deadline: %v, reported as %+v", err, cs)
	}
	// The attempt started after ctx did: a little less than 50 ms.
	if len(attempts) != 1 || attempts[0].Err == nil || attempts[0].Duration < 40*time.Millisecond {
		t.Fatalf("attempts reported: %+v, want one that failed at the 50 ms deadline", attempts)
	}
	checkTimes(t, attempts[0], cs[0])
}

// Args that do not encode on a hedged call are one attempt, reported with
// the codec error.
func TestObserverReportsAHedgedCallsCodecError(t *testing.T) {
	srv := rpctest.Start(t)
	rec := &recorder{}
	c, _ := newTestClient(t, []string{srv.Addr()}, WithObserver(rec), WithHedging(20*time.Millisecond))
	warmEvery(t, c, 1)
	rec.take()
	var r rpctest.EchoReply
	err := c.Call(context.Background(), "Echo.Echo", make(chan int), &r, Idempotent())
	attempts, cs := rec.take()
	var e *Error
	if !errors.Is(err, ErrCodec) || !errors.As(err, &e) || len(cs) != 1 || cs[0].Err != err {
		t.Fatalf("hedged call with args that do not encode: %v, reported as %+v", err, cs)
	}
	if len(attempts) != e.Attempts || len(attempts) != 1 || !errors.Is(attempts[0].Err, ErrCodec) || attempts[0].Addr != srv.Addr() {
		t.Fatalf("attempts reported: %+v, want the Error's %d, with ErrCodec", attempts, e.Attempts)
	}
}

// A hedged call's first request that failed on its node before it left
// (its attempt's time ran out before the write) is an attempt the call
// counts, reported once, as are the attempts after it.
func TestObserverReportsAHedgedCallsUnsentAttempt(t *testing.T) {
	rec := &recorder{}
	c, a, ctx := unsentFirstLeg(t, WithObserver(rec))
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("calls whose attempts have 1 ns: %v, want an *Error", err)
	}
	attempts, cs := rec.take()
	if len(cs) != 1 || cs[0].Err != err || len(attempts) != e.Attempts {
		t.Fatalf("an Error of %d attempts reported as %d attempts (%+v) and calls %+v", e.Attempts, len(attempts), attempts, cs)
	}
	if f := attempts[0]; f.Addr != a || f.Attempt != 1 || f.Hedge || !errors.Is(f.Err, ErrAttemptTimeout) {
		t.Fatalf("first attempt %+v, want attempt 1 on %s timed out before its write", f, a)
	}
	for i, at := range attempts {
		if at.Attempt != i+1 {
			t.Fatalf("attempt %d numbered %d: %+v", i+1, at.Attempt, attempts)
		}
	}
}

// panicking is an Observer whose ObserveAttempt panics once armed.
type panicking struct{ armed atomic.Bool }

func (p *panicking) ObserveAttempt(AttemptInfo) {
	if p.armed.Load() {
		panic("observer")
	}
}

func (*panicking) ObserveCall(CallInfo) {}

// A panic in the Observer is the Call's, but it leaves the client as a
// returned call would: every pick done (the balancer's in-flight counts,
// which P2C weighs, back to zero) and a hedged call's other request
// withdrawn. Two report sites: an attempt of the retry loop (a server
// error after the first attempt), and the winning leg of a hedged call
// whose first request, on a slow node, is still out.
func TestPanickingObserverLeavesNoPickInFlight(t *testing.T) {
	callPanics := func(c *Client, args *rpctest.EchoArgs) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Fatal("Call did not pass the Observer's panic on")
			}
		}()
		c.Call(context.Background(), "Echo.Echo", args, &rpctest.EchoReply{}, Idempotent())
	}
	t.Run("retry loop", func(t *testing.T) {
		o := &panicking{}
		srv := rpctest.Start(t)
		c, _ := newTestClient(t, []string{srv.Addr()}, WithObserver(o), withoutNodeHealth())
		warmEvery(t, c, 1)
		o.armed.Store(true)
		callPanics(c, &rpctest.EchoArgs{Fail: "no"}) // the fast path fails; the loop reports it
		nothingInFlight(t, c)
	})
	t.Run("hedged", func(t *testing.T) {
		o := &panicking{}
		slow, fast := rpctest.Start(t, rpctest.WithName("slow")), rpctest.Start(t, rpctest.WithName("fast"))
		px := rpctest.NewProxy(t, slow.Addr())
		// P2C over load / weight sends the first request to the slow node.
		c := hedgedClient(t, 5*time.Millisecond, 5*time.Second,
			[]discovery.Endpoint{{ID: "slow", Addr: px.Addr(), Weight: 100}, {ID: "fast", Addr: fast.Addr(), Weight: 1}}, WithObserver(o))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, addr := range []string{px.Addr(), fast.Addr()} {
			if _, err := c.endpoint(addr).get(ctx); err != nil {
				t.Fatal(err)
			}
		}
		px.Latency(300 * time.Millisecond)
		o.armed.Store(true)
		callPanics(c, &rpctest.EchoArgs{}) // the backup wins; its report panics
		nothingInFlight(t, c)
	})
}
