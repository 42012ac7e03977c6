package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/rpctest"
	"github.com/dialtone-go/dialtone/internal/stats"
)

// FAULTS.md row 4: connections reset on connect and mid-call. Idempotent
// calls never fail; non-idempotent calls never run twice.
func TestConnectionResets(t *testing.T) {
	a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
	px := rpctest.NewProxy(t, a.Addr())
	c, _ := newTestClient(t, []string{px.Addr(), b.Addr()}, WithConnectBackoff(10*time.Millisecond, 1.6, 50*time.Millisecond, 0.2),
		withoutNodeHealth())
	stop := make(chan struct{})
	go func() { // reset every connection through the proxy, again and again
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				px.Reset()
				time.Sleep(5 * time.Millisecond)
				px.Pass()
			}
		}
	}()
	var ids atomic.Int64
	out := runLoad(8, 2000, time.Second, func(ctx context.Context, w, i int) error {
		if i%2 == 0 {
			var r rpctest.EchoReply
			return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
		}
		var r rpctest.ExecReply
		err := c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: fmt.Sprintf("r%d", ids.Add(1))}, &r)
		if errors.Is(err, ErrOutcomeUnknown) {
			return nil // allowed for a non-idempotent call; duplicates are checked below
		}
		return err
	})
	close(stop)
	if n, first := failures(out); n != 0 {
		t.Fatalf("%d of %d calls failed across resets (idempotent, or non-idempotent for another reason than outcome unknown); first: %v", n, len(out), first)
	}
	if d := rpctest.Duplicates(a.Executions(), b.Executions()); len(d) != 0 {
		t.Fatalf("non-idempotent calls ran twice: %v", d)
	}
	t.Logf("%d calls across repeated resets: 0 idempotent failures, 0 duplicates", len(out))
}

// FAULTS.md row 5: with a latency-aware policy, a slow node (+500 ms) gets
// little traffic, and is not ejected for being slow.
//
// A run counts only if the box kept time: no scheduling lag over 100 ms in
// this process while it ran (startLagProbe). On a starved box (a flake hunt
// with CPU hogs saw 99 calls in a run that normally makes 11,000-21,000)
// every call takes hundreds of milliseconds, the 500 ms node no longer
// stands out, and its share says nothing about the policy; such a run is
// repeated, up to three runs. The gate is the lag and not the number of
// calls, because a latency-blind policy also makes few calls (each caller
// waits out the slow node every third call) and must fail on its share.
func TestSlowBackendGetsLittleTraffic(t *testing.T) {
	const maxLag, runs = 100 * time.Millisecond, 3
	for run := 1; ; run++ {
		probe := startLagProbe()
		slowCalls, total := slowBackendRun(t)
		if lag := probe.stop(); lag > maxLag {
			t.Logf("run %d: a scheduling lag of %v (%d calls after the first second): the box did not keep time", run, lag, total)
			if run == runs {
				t.Fatalf("%d runs, each with a scheduling lag over %v: the box was starved throughout", runs, maxLag)
			}
			continue
		}
		share := float64(slowCalls) / float64(max(total, 1))
		if total == 0 || share > 0.10 {
			t.Fatalf("the slow node served %d of %d calls after the first second (%.1f%%), want <= 10%%", slowCalls, total, 100*share)
		}
		t.Logf("slow node share after 1 s: %.2f%% of %d calls", 100*share, total)
		return
	}
}

// slowBackendRun runs 8 callers for 3 s against three nodes, the first
// behind a proxy that adds 500 ms, and returns how many calls after the
// first second the slow node served, of how many. It fails t if the slow
// node was ejected or tripped.
func slowBackendRun(t *testing.T) (slowCalls, total int64) {
	addrs := slowFirstOfThree(t, 500*time.Millisecond)
	slow := addrs[0]
	c, _ := newTestClient(t, addrs, WithBalancer(balancer.WithPolicy(balancer.P2C())))
	var late [3]atomic.Int64
	start := time.Now()
	runLoad(8, 100000, 3*time.Second, func(ctx context.Context, w, i int) error {
		var r rpctest.EchoReply
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
		if err == nil && time.Since(start) > time.Second {
			var n int
			fmt.Sscanf(r.Server, "n%d", &n)
			late[n].Add(1)
		}
		return err
	})
	for _, s := range c.Balancer().Status() {
		if s.Endpoint.Addr == slow && (s.Ejected || s.Breaker != 0) {
			t.Fatalf("the slow but healthy node was ejected or tripped: %+v", s)
		}
	}
	return late[0].Load(), late[0].Load() + late[1].Load() + late[2].Load()
}

// FAULTS.md row 28: a deadline shorter than the next backoff: no attempt is
// started that cannot finish, and the call returns its last error with the
// attempt count, on time.
func TestDeadlineShorterThanBackoff(t *testing.T) {
	s := rpctest.Start(t)
	s.Hang()
	defer s.Unhang()
	c, _ := newTestClient(t, []string{s.Addr()}, WithAttemptTimeout(20*time.Millisecond),
		WithRetryBackoff(10*time.Second, 10*time.Second), WithHeartbeat(0, 0),
		withoutNodeHealth())
	var worst time.Duration
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		dl, _ := ctx.Deadline()
		var r rpctest.EchoReply
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
		over := time.Since(dl)
		cancel()
		worst = max(worst, over)
		var e *Error
		if !errors.As(err, &e) || e.Attempts < 1 || !errors.Is(err, ErrAttemptTimeout) {
			t.Fatalf("err = %v; want the last attempt's timeout with the attempt count", err)
		}
		// The breaker counts it as the node's failure, and the text does not
		// blame the breaker, which did nothing here.
		if !errors.Is(err, breaker.ErrAttemptTimeout) || strings.Contains(err.Error(), "breaker") {
			t.Fatalf("err = %q; want it to wrap breaker.ErrAttemptTimeout without naming the breaker", err)
		}
	}
	t.Logf("worst return relative to the deadline: %v (negative: before it)", worst)
	if worst > 50*time.Millisecond {
		t.Fatalf("a call returned %v after its deadline", worst)
	}
}

// FAULTS.md row 28, the half TestDeadlineShorterThanBackoff cannot see: a
// retry whose backoff ends after the deadline is not started, so the call
// returns when its last attempt fails, not when its deadline comes. (Waiting
// out the backoff until ctx ends returns the same error, on time, with the
// token refunded: only the moment of return tells the two apart.) The
// deadline is 3 s and the first attempt times out after 20 ms; the retry's
// backoff is 10 s. The bound, 1.5 s before the deadline, is generous for a
// busy box and still 1.5 s from a call that waits.
func TestRetryThatCannotFinishIsNotStarted(t *testing.T) {
	s := rpctest.Start(t)
	s.Hang()
	defer s.Unhang()
	c, _ := newTestClient(t, []string{s.Addr()}, WithAttemptTimeout(20*time.Millisecond),
		WithRetryBackoff(10*time.Second, 10*time.Second), func(o *options) { o.retryBackoff.Full = false },
		WithHeartbeat(0, 0), withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	early := time.Until(dl)
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 1 || !errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("err = %v; want the one attempt's timeout", err)
	}
	if ctx.Err() != nil || early < 1500*time.Millisecond {
		t.Fatalf("the call returned %v before its deadline (ctx: %v); want at once after its one attempt: "+
			"a 10 s backoff cannot end before a deadline 3 s away, so no retry may be waited for", early, ctx.Err())
	}
	t.Logf("returned %v before the deadline", early.Round(time.Millisecond))
}

// FAULTS row 18 at the client: with every node's breaker open, Call fails
// at once with the balancer's typed error, sending nothing and waiting for
// no timeout or dial, while the breakers' probes are still to come (a
// minute away here). The row's figure is a fail-fast p99 of 1 ms, asserted
// over 1000 calls; the slowest call, which a busy box (this under -race
// beside other packages' tests) may have preempted, gets 250 ms, a quarter
// of the attempt timeout a call that waited would take.
func TestAllBreakersOpenCallFailsFast(t *testing.T) {
	a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithHeartbeat(0, 0), WithAttemptTimeout(time.Second),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin()),
			balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Minute, MaxOpenTimeout: time.Minute}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})))
	warmEvery(t, c, 2)
	a.Hang()
	b.Hang()
	defer a.Unhang()
	defer b.Unhang()
	allOpen := func() bool {
		for _, n := range c.Balancer().Status() {
			if n.Breaker != breaker.Open {
				return false
			}
		}
		return true
	}
	for i := 0; i < 20 && !allOpen(); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var r rpctest.EchoReply
		_ = c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
		cancel()
	}
	if !allOpen() {
		t.Fatalf("breakers after up to 20 timed-out calls: %+v; want every one open", c.Balancer().Status())
	}
	var slowest time.Duration
	var took []time.Duration
	for range 1000 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var r rpctest.EchoReply
		t0 := time.Now()
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
		d := time.Since(t0)
		cancel()
		slowest = max(slowest, d)
		took = append(took, d)
		var ce *Error
		if !errors.Is(err, balancer.ErrUnavailable) || !errors.As(err, &ce) || ce.Attempts != 0 {
			t.Fatalf("Call with every breaker open: %v (%+v); want balancer.ErrUnavailable and no attempt", err, ce)
		}
	}
	if slowest > 250*time.Millisecond {
		t.Fatalf("the slowest of 1000 calls with every breaker open took %v; want a fast failure", slowest)
	}
	// The row's figure itself: 1000 calls, so that the p99 is not the one
	// call a busy box preempted.
	p99 := stats.Percentile(took, 99)
	if p99 > time.Millisecond {
		t.Fatalf("fail-fast p99 %v over 1000 calls with every breaker open; FAULTS row 18 wants <= 1 ms", p99)
	}
	t.Logf("1000 calls with every breaker open: p99 %v, slowest %v", p99, slowest)
}

// FAULTS row 19 at the client: discovery's authoritative empty set is
// published, calls fail at once with the balancer's ErrNoEndpoints naming
// the service (no attempt, no wait), and they succeed again as soon as
// discovery lists a node.
func TestEmptySetCallsFailThenRecover(t *testing.T) {
	a := rpctest.Start(t)
	c, w := newTestClient(t, []string{a.Addr()})
	var r rpctest.EchoReply
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
		t.Fatal(err)
	}
	v := c.Balancer().StateVersion()
	if err := w.Update(); err != nil {
		t.Fatalf("publishing the empty set: %v", err)
	}
	waitBalancer(t, c, func([]balancer.NodeStatus) bool { return c.Balancer().StateVersion() > v })
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		t0 := time.Now()
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r)
		took := time.Since(t0)
		cancel()
		var ce *Error
		if !errors.Is(err, balancer.ErrNoEndpoints) || !errors.As(err, &ce) || ce.Attempts != 0 {
			t.Fatalf("Call on an empty set: %v; want balancer.ErrNoEndpoints and no attempt", err)
		}
		if took > 500*time.Millisecond {
			t.Fatalf("Call on an empty set took %v; want a fast failure", took)
		}
	}
	v = c.Balancer().StateVersion()
	if err := w.Update(discovery.Endpoint{ID: "a", Addr: a.Addr(), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	waitBalancer(t, c, func([]balancer.NodeStatus) bool { return c.Balancer().StateVersion() > v })
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
		t.Fatalf("Call once discovery lists a node again: %v", err)
	}
}

// FAULTS row 27's figure: cancel-to-return p99 <= 5 ms. Each of 100 calls
// times out its first attempt on a hung real backend, takes the one retry
// token and waits in a 10-minute backoff; the test cancels it there and
// measures how long Call takes to return. TestCancelDuringBackoff allows a
// whole second, so it passes a cancel that is noticed 50 ms late.
func TestCancelToReturnP99(t *testing.T) {
	srv := rpctest.Start(t)
	srv.Hang()
	defer srv.Unhang()
	const n = 100
	var took []time.Duration
	for range n {
		c, _ := newTestClient(t, []string{srv.Addr()}, WithRetryBackoff(10*time.Minute, 10*time.Minute),
			func(o *options) { o.retryBackoff.Full = false }, WithRetryBudget(0, 0.001),
			WithHeartbeat(0, 0), withoutNodeHealth())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			var r rpctest.EchoReply
			done <- c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent(), AttemptTimeout(10*time.Millisecond))
		}()
		for deadline := time.Now().Add(5 * time.Second); c.budget.reserve.Tokens() >= 1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the call did not reach its retry backoff within 5 s")
			}
		}
		time.Sleep(5 * time.Millisecond) // in the wait, not at its start
		// The control: when a bare wait on the same ctx woke. What is
		// counted is the call's return past it, so that a goroutine this
		// busy box ran late is not blamed on the call.
		woke := make(chan time.Time, 1)
		go func() { <-ctx.Done(); woke <- time.Now() }()
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Second):
			t.Fatal("Call had not returned 1 s after cancel")
		}
		took = append(took, max(0, time.Since(<-woke)))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		c.Close()
	}
	p99 := stats.Percentile(took, 99)
	t.Logf("cancel to return over %d calls: p50 %v, p99 %v", n, stats.Percentile(took, 50), p99)
	if p99 > 5*time.Millisecond {
		t.Fatalf("cancel-to-return p99 %v over %d calls; FAULTS row 27 wants <= 5 ms", p99, n)
	}
}

// FAULTS row 28's figure: overruns > 5 ms = 0. TestDeadlineShorterThanBackoff
// returns after its single 20 ms attempt, 80 ms before its deadline, so it
// measures no overrun at all. Here the deadline (60 ms) comes while the call
// is busy: in an attempt on a hung backend (attempt timeout 1 s), and in a
// dial to a blackholed address (dial timeout 3 s). Each call must return
// within 5 ms of its deadline (of a bare wait on it, which this box may
// wake late).
func TestDeadlineOverrunsAtMost5ms(t *testing.T) {
	hung := rpctest.Start(t)
	hung.Hang()
	defer hung.Unhang()
	hole := rpctest.Blackhole(t)
	for _, tc := range []struct {
		name string
		addr string
	}{{"hung attempt", hung.Addr()}, {"blackholed dial", hole}} {
		c, _ := newTestClient(t, []string{tc.addr}, WithAttemptTimeout(time.Second),
			WithRetryBackoff(time.Millisecond, time.Millisecond), WithHeartbeat(0, 0), withoutNodeHealth())
		var overruns []time.Duration
		var worst time.Duration
		for range 10 {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
			// The control: when a bare wait on the same deadline woke. The
			// overrun counted is the call's return past it, so that a timer
			// this busy box fired late is not blamed on the call.
			woke := make(chan time.Time, 1)
			go func() { <-ctx.Done(); woke <- time.Now() }()
			var r rpctest.EchoReply
			err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
			returned := time.Now()
			over := returned.Sub(<-woke)
			cancel()
			if err == nil {
				t.Fatalf("%s: call succeeded", tc.name)
			}
			worst = max(worst, over)
			if over > 5*time.Millisecond {
				overruns = append(overruns, over)
			}
		}
		t.Logf("%s: worst return relative to the deadline %v", tc.name, worst)
		if len(overruns) > 0 {
			t.Errorf("%s: %d of 10 calls returned more than 5 ms after their deadline: %v", tc.name, len(overruns), overruns)
		}
	}
}

// FAULTS row 26's figure: duplicate executions = 0 in 10,000 calls. Three
// real backends, one behind a proxy whose responses are dropped 100 ms in
// every 400 ms (the requests pass and run). Half the calls are plain
// (non-idempotent, no key), half carry an idempotency key. A plain call must
// run at most once; a keyed call may run again after a lost response, but
// only with its one key (a server that deduplicates by key runs it once).
func TestNoDuplicateExecutionsIn10000Calls(t *testing.T) {
	a, b, d := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b")), rpctest.Start(t, rpctest.WithName("d"))
	px := rpctest.NewProxy(t, a.Addr())
	c, _ := newTestClient(t, []string{px.Addr(), b.Addr(), d.Addr()}, WithAttemptTimeout(50*time.Millisecond),
		WithHeartbeat(0, 0), WithRetryBudget(1, 1000),
		withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
	stop := make(chan struct{})
	var flapper sync.WaitGroup
	flapper.Go(func() {
		// The first partition comes early: without the race detector the
		// 10000 calls take about 0.3 s, and a first partition at 300 ms
		// came after the last of them (the test failed, proving nothing).
		pass := 50 * time.Millisecond
		for {
			select {
			case <-stop:
				px.Pass()
				return
			case <-time.After(pass):
			}
			pass = 150 * time.Millisecond
			px.BlackholeResponses()
			select {
			case <-stop:
				px.Pass()
				return
			case <-time.After(100 * time.Millisecond):
			}
			px.Pass()
		}
	})
	const calls, workers = 10000, 8
	var next, unknown, keyedFailed atomic.Int64
	var wg sync.WaitGroup
	keys := make([]string, calls)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= calls {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				keyed := i%2 == 0
				args := &rpctest.ExecArgs{ID: fmt.Sprintf("c%d", i)}
				var r rpctest.ExecReply
				var err error
				if keyed {
					err = c.Call(ctx, "Echo.Exec", args, &r, WithIdempotencyKey(""))
					keys[i] = args.Key
					if err != nil {
						keyedFailed.Add(1)
					}
				} else {
					err = c.Call(ctx, "Echo.Exec", args, &r)
					if errors.Is(err, ErrOutcomeUnknown) {
						unknown.Add(1)
					}
				}
				cancel()
			}
		})
	}
	wg.Wait()
	close(stop)
	flapper.Wait()
	time.Sleep(100 * time.Millisecond) // requests still running on the servers
	logs := [][]string{a.Executions(), b.Executions(), d.Executions()}
	var dupPlain, dupKeyed, rerun int
	seen := map[string]string{}
	for _, log := range logs {
		for _, line := range log {
			id, key, _ := strings.Cut(line, " ")
			var i int
			fmt.Sscanf(id, "c%d", &i)
			prev, again := seen[id]
			seen[id] = key
			switch {
			case i%2 == 1 && again:
				dupPlain++
			case i%2 == 0 && key != keys[i]:
				dupKeyed++ // ran with a key other than the call's
			case i%2 == 0 && again:
				rerun++
				if prev != key {
					dupKeyed++
				}
			}
		}
	}
	t.Logf("%d calls: %d plain calls outcome unknown, %d keyed calls failed, %d keyed calls ran again with their key", calls, unknown.Load(), keyedFailed.Load(), rerun)
	if dupPlain+dupKeyed != 0 {
		t.Fatalf("duplicate executions: %d plain calls ran more than once, %d keyed executions with another key; want 0", dupPlain, dupKeyed)
	}
	if unknown.Load() == 0 || rerun == 0 {
		t.Fatalf("the partition was never hit (%d outcome unknown, %d keyed reruns): the test proved nothing", unknown.Load(), rerun)
	}
}

// slowFirstOfThree starts three real backends, n0 to n2, and returns their
// addresses, n0's through a proxy that adds latency to each call.
func slowFirstOfThree(t *testing.T, latency time.Duration) []string {
	t.Helper()
	var addrs []string
	for i := range 3 {
		addr := rpctest.Start(t, rpctest.WithName(fmt.Sprintf("n%d", i))).Addr()
		if i == 0 {
			px := rpctest.NewProxy(t, addr)
			px.Latency(latency)
			addr = px.Addr()
		}
		addrs = append(addrs, addr)
	}
	return addrs
}
