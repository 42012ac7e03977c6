package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/rpctest"
	"github.com/hashicorp/consul/api"
)

// FAULTS.md row 1: one of three backends SIGKILLed under load.
func TestKillOneOfThreeUnderLoad(t *testing.T) {
	var kids []*rpctest.Child
	var addrs []string
	for i := range 3 {
		k := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName(fmt.Sprintf("k%d", i)))
		kids = append(kids, k)
		addrs = append(addrs, k.Addr())
	}
	c, _ := newTestClient(t, addrs, WithAttemptTimeout(500*time.Millisecond))

	t.Run("idempotent", func(t *testing.T) {
		killed := make(chan struct{})
		go func() { time.Sleep(300 * time.Millisecond); kids[0].Kill(); close(killed) }()
		out := runLoad(8, 5000, 1200*time.Millisecond, func(ctx context.Context, w, i int) error {
			var r rpctest.EchoReply
			return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "hi"}, &r, Idempotent())
		})
		<-killed
		if n, first := failures(out); n != 0 {
			t.Fatalf("%d of %d idempotent calls failed across the kill; first: %v", n, len(out), first)
		}
		t.Logf("%d idempotent calls, 0 failures, across a SIGKILL", len(out))
	})

	t.Run("not idempotent", func(t *testing.T) {
		// kids[0] is dead; kill kids[1] under load too, leaving one.
		killed := make(chan struct{})
		go func() { time.Sleep(300 * time.Millisecond); kids[1].Kill(); close(killed) }()
		var ids atomic.Int64
		out := runLoad(8, 5000, 1200*time.Millisecond, func(ctx context.Context, w, i int) error {
			id := fmt.Sprintf("w%d-%d-%d", w, i, ids.Add(1))
			var r rpctest.ExecReply
			return c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: id}, &r)
		})
		<-killed
		var logs [][]string
		for _, k := range kids {
			logs = append(logs, k.Executions())
		}
		if d := rpctest.Duplicates(logs...); len(d) != 0 {
			t.Fatalf("non-idempotent calls executed more than once: %v", d)
		}
		n, _ := failures(out)
		for _, o := range out {
			if o.err != nil && !errors.Is(o.err, ErrOutcomeUnknown) {
				t.Fatalf("a non-idempotent call failed without saying the outcome is unknown: %v", o.err)
			}
		}
		t.Logf("%d non-idempotent calls, %d outcome-unknown failures, 0 duplicate executions", len(out), n)
	})
}

// FAULTS.md row 2: a backend hangs (SIGSTOP; TCP stays open).
func TestHungBackendSIGSTOP(t *testing.T) {
	var kids []*rpctest.Child
	var addrs []string
	for i := range 3 {
		k := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName(fmt.Sprintf("s%d", i)))
		kids = append(kids, k)
		addrs = append(addrs, k.Addr())
	}
	var opened atomic.Bool
	hung := addrs[0]
	c, _ := newTestClient(t, addrs,
		WithAttemptTimeout(500*time.Millisecond),
		WithHeartbeat(200*time.Millisecond, 300*time.Millisecond),
		// Round robin keeps sending the hung node its share, so its breaker
		// must open; P2C (the default) steers around it by in-flight count
		// after a request or two, which may not reach 2 failures.
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin()),
			balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 2, OpenTimeout: time.Second, MaxOpenTimeout: time.Second}),
			// Outlier ejection would keep the node out for 30 s after
			// its in-flight calls failed; shorten it so the test sees the
			// breaker's half-open and close.
			balancer.WithOutlierDetection(balancer.OutlierConfig{BaseEjection: 500 * time.Millisecond, MaxEjection: time.Second}),
			balancer.WithBreakerEvents(func(e breaker.Event) {
				if e.Addr == hung && e.To == breaker.Open {
					opened.Store(true)
				}
			})))
	echo := func(ctx context.Context, w, i int) error {
		var r rpctest.EchoReply
		return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "x"}, &r, Idempotent())
	}
	runLoad(4, 50, 200*time.Millisecond, echo) // warm every connection
	if err := kids[0].Stop(); err != nil {
		t.Fatal(err)
	}
	out := runLoad(4, 5000, 1500*time.Millisecond, echo)
	if n, first := failures(out); n != 0 {
		t.Fatalf("%d of %d calls failed while a backend hung; first: %v", n, len(out), first)
	}
	var worst time.Duration
	for _, o := range out {
		worst = max(worst, o.latency)
	}
	// FAULTS row 2: p99 <= per-attempt timeout + one retry. Here: the
	// worst call, bounded generously for a busy box.
	if worst > 500*time.Millisecond+500*time.Millisecond {
		t.Errorf("slowest call took %v, want at most the attempt timeout plus one retry", worst)
	}
	if !opened.Load() {
		t.Fatal("the hung node's breaker never opened")
	}
	// The heartbeat closed the connection. (Not "the state is not Ready":
	// the breaker's half-open probe may have dialed the stopped process,
	// whose kernel still completes handshakes, just before the check.)
	st := endpointStatus(c, hung)
	if !errors.Is(st.LastClose, ErrHeartbeat) {
		t.Fatalf("the hung node's last connection closed with %v, want ErrHeartbeat (status %+v)", st.LastClose, st)
	}
	t.Logf("%d calls while hung, 0 failures, slowest %v; breaker opened; connection state %v, last closed by: %v",
		len(out), worst, st.State, st.LastClose)

	if err := kids[0].Cont(); err != nil {
		t.Fatal(err)
	}
	// Back in rotation: after its open period the breaker half-opens, a
	// probe succeeds, and the node serves again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
			t.Fatal(err)
		}
		if r.Server == "s0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the resumed backend never served again")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// With the default policy (P2C), a hung node's latency estimate holds the
// attempt timeouts. After SIGCONT the node must get its share of calls
// back within seconds, not after the minute a 10 s EWMA takes to forget
// them: its breaker closing reseeds it, and its probe replies decay it.
func TestHungBackendBackInP2CRotation(t *testing.T) {
	kids, addrs, _ := startKids(t, 3, "s")
	c, _ := newTestClient(t, addrs,
		WithAttemptTimeout(300*time.Millisecond),
		WithHeartbeat(100*time.Millisecond, 200*time.Millisecond),
		WithBalancer(balancer.WithBreakers(breaker.Config{OpenTimeout: 500 * time.Millisecond, MaxOpenTimeout: 500 * time.Millisecond}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{BaseEjection: 500 * time.Millisecond, MaxEjection: 500 * time.Millisecond})))
	var served servedTally
	echo := func(ctx context.Context, w, i int) error {
		var r rpctest.EchoReply
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "x"}, &r, Idempotent())
		served.add(r.Server)
		return err
	}
	runLoad(4, 50, 200*time.Millisecond, echo) // warm every connection
	if err := kids[0].Stop(); err != nil {
		t.Fatal(err)
	}
	if out := runLoad(4, 5000, time.Second, echo); len(out) == 0 {
		t.Fatal("no calls while the backend hung")
	}
	if err := kids[0].Cont(); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	share, ok := served.backInRotation("s0", resumed, func() { runLoad(4, 5000, 200*time.Millisecond, echo) })
	if !ok {
		t.Fatalf("10 s after SIGCONT the resumed backend serves %.1f%% of calls", 100*share)
	}
	t.Logf("the resumed backend served %.0f%% of calls %v after SIGCONT", 100*share, time.Since(resumed).Round(time.Millisecond))
}

// A backend that pauses for 300 ms (a garbage-collection pause, a
// stall) answers the calls it held late, but answers them: the default
// policy's (P2C's) estimate of it jumps to the pause at once. Once it
// serves at its usual speed again it must get its share back within
// seconds: with a single peak EWMA of 10 s its 300 ms estimate against the
// others' 20 ms kept it to its forced probes, one each 2 s, for some 20 s.
func TestPausedBackendBackInP2CRotation(t *testing.T) {
	kids, addrs, _ := startKids(t, 3, "s")
	c, _ := newTestClient(t, addrs, WithAttemptTimeout(time.Second))
	var served servedTally
	// Calls of 20 ms from six callers: about two in flight on each node,
	// so that P2C spreads them by load (with one or two callers in all,
	// the node whose estimate is a little higher gets almost none: see
	// balancer.P2C), and about 300 a second, few enough that every call's
	// latency is sampled, so the pause's are.
	echo := func(ctx context.Context, w, i int) error {
		var r rpctest.EchoReply
		err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "x", Sleep: 20 * time.Millisecond}, &r, Idempotent())
		served.add(r.Server)
		return err
	}
	runLoad(6, 1000, time.Second, echo) // warm every connection and estimate
	latencyOf := func(addr string) time.Duration {
		for _, st := range c.Balancer().Status() {
			if st.Endpoint.Addr == addr {
				return st.Latency
			}
		}
		return 0
	}
	var resumed time.Time
	for try := 1; ; try++ {
		paused := make(chan []outcome)
		go func() { paused <- runLoad(6, 1000, time.Second, echo) }()
		time.Sleep(300 * time.Millisecond)
		if err := kids[0].Stop(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := kids[0].Cont(); err != nil {
			t.Fatal(err)
		}
		resumed = time.Now()
		if n, first := failures(<-paused); n > 0 {
			t.Fatalf("%d calls failed across a 300 ms pause with a 1 s attempt timeout: %v", n, first)
		}
		l := latencyOf(addrs[0])
		if l >= 100*time.Millisecond {
			t.Logf("latency estimate of the paused node after pause %d: %v", try, l.Round(time.Millisecond))
			break
		}
		// P2C samples every call at this rate, but a burst of replies
		// can halve the rate for a moment, and then none of the two or
		// three calls the pause held may be sampled: the rest would
		// prove nothing, so pause again.
		if try == 3 {
			t.Fatalf("after 3 pauses of 300 ms the paused node's latency estimate is %v; want the pause's", l)
		}
	}
	share, ok := served.backInRotation("s0", resumed, func() {
		if n, first := failures(runLoad(6, 1000, 500*time.Millisecond, echo)); n > 0 {
			t.Errorf("%d calls failed after the pause: %v", n, first)
		}
	})
	if !ok {
		t.Fatalf("10 s after a 300 ms pause the backend serves %.1f%% of calls (estimate %v)", 100*share, latencyOf(addrs[0]))
	}
	t.Logf("the paused backend served %.0f%% of calls %v after SIGCONT", 100*share, time.Since(resumed).Round(time.Millisecond))
}

// servedTally counts the calls each backend served (EchoReply.Server),
// from the load's goroutines.
type servedTally struct {
	mu     sync.Mutex
	served map[string]int
}

func (s *servedTally) add(server string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served == nil {
		s.served = map[string]int{}
	}
	s.served[server]++
}

// backInRotation runs window (a burst of load) until the backend named
// name serves at least a fifth of a window's calls (a third is its even
// share of three), at most until 10 s after since; it reports the last
// window's share and whether it got there.
func (s *servedTally) backInRotation(name string, since time.Time, window func()) (float64, bool) {
	for {
		s.mu.Lock()
		clear(s.served)
		s.mu.Unlock()
		window()
		s.mu.Lock()
		total := 0
		for _, n := range s.served {
			total += n
		}
		share := float64(s.served[name]) / float64(max(total, 1))
		s.mu.Unlock()
		if share >= 0.2 {
			return share, true
		}
		if time.Since(since) > 10*time.Second {
			return share, false
		}
	}
}

func endpointStatus(c *Client, addr string) EndpointStatus {
	for _, e := range c.Endpoints() {
		if e.Addr == addr {
			return e
		}
	}
	return EndpointStatus{}
}

// FAULTS.md row 3: a dial into a blackhole is bounded by the dial timeout,
// the call goes elsewhere, and redials follow the reconnect backoff.
func TestDialBlackhole(t *testing.T) {
	hole := rpctest.Blackhole(t)
	srv := rpctest.Start(t)
	// Round robin keeps asking for the blackholed node, so every redial the
	// backoff allows happens (P2C would mostly avoid it).
	c, _ := newTestClient(t, []string{hole, srv.Addr()}, WithBalancer(balancer.WithPolicy(balancer.RoundRobin())),
		WithDialTimeout(200*time.Millisecond), WithConnectBackoff(400*time.Millisecond, 1.6, 10*time.Second, 0.2))
	start := time.Now()
	var slowest time.Duration
	for time.Since(start) < 2*time.Second {
		t0 := time.Now()
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatalf("call with one blackholed node: %v", err)
		}
		slowest = max(slowest, time.Since(t0))
		time.Sleep(5 * time.Millisecond)
	}
	if slowest > time.Second {
		t.Fatalf("a call took %v; the 200 ms dial timeout should bound it", slowest)
	}
	dials := endpointStatus(c, hole).Dials
	// 2 s of calls with backoff 400 ms x1.6 (+-20 %): dials at about 0,
	// 0.4, 1.0, 2.0 s. Without the backoff it would be hundreds.
	if dials < 2 || dials > 5 {
		t.Fatalf("%d dials to the blackholed address in 2 s, want 2-5 (the reconnect backoff)", dials)
	}
	t.Logf("slowest call %v, %d dials to the blackhole in 2 s", slowest, dials)
}

// FAULTS.md row 27: ctx cancelled during a retry backoff.
func TestCancelDuringBackoff(t *testing.T) {
	srv := rpctest.Start(t)
	// The backoff is 10 minutes without jitter (full jitter drew under
	// 100 ms, a retry before the cancel, about once in 6,000 runs). One
	// retry token in all, a reserve of 1 refilled every 1000 s: the retry
	// takes it just before its backoff, which tells the test when to cancel.
	c, _ := newTestClient(t, []string{srv.Addr()}, WithRetryBackoff(10*time.Minute, 10*time.Minute),
		func(o *options) { o.retryBackoff.Full = false }, WithRetryBudget(0, 0.001))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int64
	done := make(chan error, 1)
	go func() {
		var r rpctest.EchoReply
		done <- c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: 300 * time.Millisecond}, &r, Idempotent(), AttemptTimeout(20*time.Millisecond))
		calls.Add(1)
	}()
	// The first attempt times out after 20 ms; the call then takes the
	// token and sleeps in its backoff. (A fixed sleep here could, on a
	// loaded box, cancel during the first attempt and prove nothing.)
	for deadline := time.Now().Add(5 * time.Second); c.budget.reserve.Tokens() >= 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the call did not reach its retry backoff within 5 s")
		}
	}
	// The token is taken just before the wait starts: give the call a
	// moment to be in it, so that a wait that looks at ctx only as it
	// starts is caught too.
	time.Sleep(20 * time.Millisecond)
	t0 := time.Now()
	cancel()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Second):
		t.Fatal("Call had not returned 1 s after cancel; its backoff is 10 minutes")
	}
	took := time.Since(t0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 1 {
		t.Fatalf("err = %v, want one attempt before the cancel", err)
	}
	t.Logf("cancel to return: %v", took)
}

// FAULTS.md row 26: with an idempotency key, a call whose response was lost
// is retried with the same key; without one it is not retried.
func TestIdempotencyKeyAcrossAttempts(t *testing.T) {
	a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
	px := rpctest.NewProxy(t, a.Addr())
	px.BlackholeResponses() // requests reach a, its replies are dropped
	c, _ := newTestClient(t, []string{px.Addr(), b.Addr()}, WithAttemptTimeout(200*time.Millisecond),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	var lostOnce bool
	for i := range 4 {
		args := &rpctest.ExecArgs{ID: fmt.Sprintf("keyed-%d", i)}
		var r rpctest.ExecReply
		if err := c.Call(context.Background(), "Echo.Exec", args, &r, WithIdempotencyKey("")); err != nil {
			t.Fatalf("keyed call: %v", err)
		}
		if args.Key == "" {
			t.Fatal("no key was set")
		}
		all := append(a.Executions(), b.Executions()...)
		var seen []string
		for _, line := range all {
			if strings.HasPrefix(line, args.ID+" ") {
				seen = append(seen, line)
			}
		}
		for _, line := range seen {
			if line != args.ID+" "+args.Key {
				t.Fatalf("execution %q does not carry the call's key %q", line, args.Key)
			}
		}
		lostOnce = lostOnce || len(seen) == 2
	}
	if !lostOnce {
		t.Fatal("no call hit the blackholed node; the test proved nothing")
	}
	// Without a key the same loss is not retried.
	for i := range 4 {
		args := &rpctest.ExecArgs{ID: fmt.Sprintf("plain-%d", i)}
		var r rpctest.ExecReply
		err := c.Call(context.Background(), "Echo.Exec", args, &r)
		if err != nil && !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("unkeyed call: %v", err)
		}
	}
	if d := rpctest.Duplicates(a.Executions(), b.Executions()); len(d) != 0 {
		for id := range d {
			if strings.HasPrefix(id, "plain-") {
				t.Fatalf("an unkeyed call ran twice: %v", d)
			}
		}
	}
}

// FAULTS.md row 29: Close under load with a hung peer.
func TestCloseUnderLoadWithHungPeer(t *testing.T) {
	srv, hung := rpctest.Start(t), rpctest.Start(t)
	fdsBefore := openFDs(t)
	c, _ := newTestClient(t, []string{srv.Addr(), hung.Addr()}, WithHeartbeat(0, 0))
	hung.Hang()
	defer hung.Unhang()
	loadDone := make(chan []outcome, 1)
	go func() {
		loadDone <- runLoad(8, 100000, 3*time.Second, func(ctx context.Context, w, i int) error {
			var r rpctest.EchoReply
			return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
		})
	}()
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	c.Close()
	closeTook := time.Since(t0)
	out := <-loadDone
	if closeTook > time.Second {
		t.Fatalf("Close took %v under load with a hung peer", closeTook)
	}
	closedErrs := 0
	for _, o := range out {
		if o.err != nil && o.at > 300*time.Millisecond && errors.Is(o.err, ErrClosed) {
			closedErrs++
		}
	}
	if closedErrs == 0 {
		t.Fatal("no call failed with ErrClosed after Close")
	}
	t.Logf("Close took %v with calls pending on a hung peer", closeTook)
	// File descriptors back to the baseline (FAULTS row 29): every socket
	// the client opened is closed. The servers' ends close once they read
	// the client's close, the hung one once it is let go; a socket the
	// client leaked would keep its server end open too.
	hung.Unhang()
	deadline := time.Now().Add(5 * time.Second)
	for n := openFDs(t); n > fdsBefore; n = openFDs(t) {
		if time.Now().After(deadline) {
			t.Fatalf("%d file descriptors open 5 s after Close, %d before the client: %s", n, fdsBefore, describeFDs(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openFDs counts the process's open file descriptors (Linux's /proc).
func openFDs(t *testing.T) int {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting file descriptors: %v", err)
	}
	return len(des)
}

// describeFDs lists what the process's file descriptors point at.
func describeFDs(t *testing.T) string {
	des, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, de := range des {
		target, _ := os.Readlink("/proc/self/fd/" + de.Name())
		fmt.Fprintf(&b, "%s->%s ", de.Name(), target)
	}
	return b.String()
}

// Static watcher helper for tests that replace the set.
var _ = discovery.StaticAddrs

// startKids starts n real child backends (SIGKILLable) and a discoverytest
// watcher that lists them.
func startKids(t *testing.T, n int, prefix string) ([]*rpctest.Child, []string, *discoverytest.Watcher) {
	var kids []*rpctest.Child
	var addrs []string
	for i := range n {
		k := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName(fmt.Sprintf("%s%d", prefix, i)))
		kids = append(kids, k)
		addrs = append(addrs, k.Addr())
	}
	return kids, addrs, discoverytest.NewAddrs(addrs...)
}

// FAULTS.md row 1, the half TestKillOneOfThreeUnderLoad does not look at:
// "The dead address is quarantined and discovery refreshed." One of three
// real child backends is SIGKILLed under load. Round robin, with breakers
// and ejection off, keeps picking the dead node, so its redials fail; the
// balancer must then hold it in quarantine (picks skip it instead of
// spending an attempt and a retry token on its backoff every third call),
// and discovery must be asked to refresh.
func TestKilledBackendIsQuarantined(t *testing.T) {
	kids, addrs, w := startKids(t, 3, "q")
	c, err := New(w, WithAttemptTimeout(500*time.Millisecond),
		withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); w.Close() })
	dead := addrs[0]

	var quarantined atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { // the poller: was the dead address ever in quarantine
		for ctx.Err() == nil && !quarantined.Load() {
			if quarantinedIn(c, dead) {
				quarantined.Store(true)
			}
			time.Sleep(time.Millisecond)
		}
	})
	go func() { time.Sleep(300 * time.Millisecond); kids[0].Kill() }()
	out := runLoad(8, 5000, 1500*time.Millisecond, func(ctx context.Context, _, _ int) error {
		var r rpctest.EchoReply
		return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "hi"}, &r, Idempotent())
	})
	cancel()
	wg.Wait()
	if n, first := failures(out); n != 0 {
		t.Fatalf("%d of %d idempotent calls failed across the kill; first: %v", n, len(out), first)
	}
	if !quarantined.Load() {
		t.Errorf("the SIGKILLed address %s was never quarantined in the balancer during %d calls (status %+v)",
			dead, len(out), endpointStatus(c, dead))
	}
	if n := w.ResolveNowCalls(); n == 0 {
		t.Errorf("discovery was never asked to refresh (ResolveNow) after the kill")
	}
	t.Logf("%d calls, 0 failures; quarantined %v; %d ResolveNow calls", len(out), quarantined.Load(), w.ResolveNowCalls())
}

// FAULTS.md row 1 with the default balancer: a SIGKILL drops a proven
// connection. Discovery must be asked to refresh for that loss itself
// (grpc-go re-resolves when a ready connection is lost), not only once
// some later call redials the address and fails: the breaker and outlier
// ejection that the in-flight failures trip, or P2C's cost, may keep the
// dead node unpicked for the whole ejection time (30 s by default), and
// with no redial there is no refresh. Here no call follows the kill.
func TestKilledBackendRefreshesDiscoveryWithoutARedial(t *testing.T) {
	kids, addrs, w := startKids(t, 3, "r")
	c, err := New(w, WithAttemptTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); w.Close() })
	for _, a := range addrs { // a proven connection to every node
		for i := 0; endpointStatus(c, a).State != Ready; i++ {
			if i == 5000 {
				t.Fatalf("5000 calls never connected to %s", a)
			}
			var r rpctest.EchoReply
			if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := w.ResolveNowCalls()
	kids[0].Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.WaitResolveNow(ctx, before+1); err != nil {
		t.Fatalf("2 s after %s was SIGKILLed and its connection lost (status %+v), discovery was not asked to refresh (%d ResolveNow calls)",
			addrs[0], endpointStatus(c, addrs[0]), w.ResolveNowCalls()-before)
	}
}

// FAULTS.md row 5 with one serial caller. TestSlowBackendGetsLittleTraffic
// runs 8 callers, whose in-flight counts alone steer P2C away from a node
// that holds each call 500 ms: a latency-blind least-request P2C passes it
// (0.03 % share). A serial caller never has a call in flight at a pick;
// only the latency estimate tells the nodes apart. The slow node here adds
// 20 ms, and the measure is in picks: how many calls a fresh serial client
// sends the slow node before it moves away (200 fast picks in a row).
// Latency-blind, every client goes on picking it (a third of the picks).
//
// P2C folds in the latency of one request in 1 to 256 (sampling.go), chosen
// at the pick whatever the node: until one of the slow node's requests is
// sampled it costs what the others cost. When the least rate was one in 8
// the number of its picks before that was geometric (median about 5, and
// about 7 % of clients over 20: at +500 ms, still on it after the 10 s of
// the row's figure); a client whose traffic is light now samples every
// request (median 1, at most 5 of 40 clients, session 28). The assertion
// is on most clients, which holds for any latency-aware P2C; the tail is
// logged.
func TestSlowNodeLearnedBySerialCallers(t *testing.T) {
	addrs := slowFirstOfThree(t, 20*time.Millisecond)
	const trials, maxSlowPicks, learned = 40, 20, 200 // learned: fast picks in a row
	var picks []int
	for range trials {
		c, _ := newTestClient(t, addrs, WithBalancer(balancer.WithPolicy(balancer.P2C())))
		slow, run := 0, 0
		for run < learned && slow <= maxSlowPicks {
			var r rpctest.EchoReply
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if r.Server == "n0" {
				slow, run = slow+1, 0
			} else {
				run++
			}
		}
		c.Close()
		picks = append(picks, slow)
	}
	slices.Sort(picks)
	over := len(picks) - slices.IndexFunc(append(slices.Clone(picks), maxSlowPicks+1), func(p int) bool { return p > maxSlowPicks })
	t.Logf("picks of the slow node before %d fast picks in a row, %d fresh serial clients: %v; %d over %d",
		learned, trials, picks, over, maxSlowPicks)
	if over > trials/4 {
		t.Fatalf("%d of %d serial clients picked the slow node more than %d times before moving away: P2C does not weigh latency",
			over, trials, maxSlowPicks)
	}
	// A light client samples every request, so most clients leave the
	// slow node after its first slow request (median 1; sampling one
	// request in 8, as the least rate once was, gives a median of 5).
	if med := picks[len(picks)/2]; med > 2 {
		t.Fatalf("median %d picks of the slow node before moving away, want at most 2: a light client's slow requests are not all sampled", med)
	}
}

// FAULTS.md row 8 end to end, with real parts: a real agent whose TTL
// health check for one of two real backends flaps passing <-> critical
// (every 400 ms here, not 2 s, to keep the test short), a consul Watcher
// behind a counting pass-through, and a Client under load. The figure:
// "registry requests per watcher bounded; at most one new dial per flap".
// TestFlapKeepsConnection proves the dials with a static watcher; the
// registry side is proven here: the watcher follows every flap (the
// balancer sees the node leave and come back) with a bounded number of
// requests, the flapping backend accepts one connection over all the
// flaps (the drain grace keeps it), and no call fails.
func TestConsulFlapBoundedRequestsOneDial(t *testing.T) {
	agent := consultest.Start(t)
	ac := agent.API(t, "")
	a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
	for id, s := range map[string]*rpctest.Server{"echo-a": a, "echo-b": b} {
		host, port, _ := net.SplitHostPort(s.Addr())
		p, _ := strconv.Atoi(port)
		if err := ac.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "echo", Address: host, Port: p,
			Check: &api.AgentServiceCheck{TTL: "1m"}}); err != nil {
			t.Fatal(err)
		}
		if err := ac.Agent().UpdateTTL("service:"+id, "", api.HealthPassing); err != nil {
			t.Fatal(err)
		}
	}
	var requests atomic.Int64
	target, _ := url.Parse("http://" + agent.Addr())
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	w, err := consul.New("echo", consul.WithAddress(strings.TrimPrefix(front.URL, "http://")), consul.WithWaitTime(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := New(w, WithDrainGrace(time.Minute), WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var r rpctest.EchoReply
		if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; endpointStatus(c, a.Addr()).Dials == 0 || len(c.Balancer().Status()) != 2; i++ {
		if i == 2000 {
			t.Fatalf("2000 calls never reached both nodes (status %+v)", c.Balancer().Status())
		}
		call()
	}
	before := requests.Load()
	const flaps = 5
	var left, back int
	for range flaps {
		for _, status := range []string{api.HealthCritical, api.HealthPassing} {
			if err := ac.Agent().UpdateTTL("service:echo-a", "", status); err != nil {
				t.Fatal(err)
			}
			want := map[string]int{api.HealthCritical: 1, api.HealthPassing: 2}[status]
			seen := false
			for end := time.Now().Add(400 * time.Millisecond); time.Now().Before(end); {
				call()
				if len(c.Balancer().Status()) == want {
					seen = true
				}
				time.Sleep(2 * time.Millisecond)
			}
			if seen && want == 1 {
				left++
			}
			if seen && want == 2 {
				back++
			}
		}
	}
	made := requests.Load() - before
	t.Logf("%d flaps: the node left %d times and came back %d times; %d registry requests; backend a accepted %d connections",
		flaps, left, back, made, len(a.Accepts()))
	if left != flaps || back != flaps {
		t.Fatalf("the watcher followed %d of %d departures and %d of %d returns", left, flaps, back, flaps)
	}
	// Each of the 2 x flaps changes ends a blocking query, which the watcher
	// sends again: about 2 requests a change (20 measured), and as many
	// again for slack. A watcher that re-queries without blocking makes
	// its rate limit's worth (20/s: 80 in the 4 s).
	if limit := int64(4 * 2 * flaps); made > limit {
		t.Errorf("%d registry requests for %d health changes, want at most %d", made, 2*flaps, limit)
	}
	if n := len(a.Accepts()); n != 1 {
		t.Errorf("the flapping backend accepted %d connections over %d flaps, want 1 (kept through the drain grace)", n, flaps)
	}
}
