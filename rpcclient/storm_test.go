package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/internal/logbuf"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// FAULTS.md row 25: a reconnect storm. 1000 clients, each with its own
// balancer, breakers and endpoint pool (default options, heartbeats off,
// FAULTS.md's 2 s call deadline), hold one connection each to a single real
// net/rpc backend. The backend stops
// (listener and every connection closed at once) and listens again on the
// same port stormDown later, while every client keeps calling (a call, then
// 100 ms after a failure, the next). The figure: max accepts per 100 ms <= 3x
// the mean over the reconnect period.
//
// How the pool behaves: a lost Ready connection leaves its endpoint Idle and
// the next call redials at once (as grpc-go does after a lost transport). A
// refused dial starts the gRPC connect backoff, 1 s x1.6 +-20 %, jittered on
// every attempt including the first (grpc-go leaves its first delay
// unjittered). A call that has no other node waits, as its deadline allows,
// for the backoff to end (the static watcher never answers ResolveNow) and
// redials then; so does a call that starts during the backoff, and its
// refusal is not counted by the breaker. So every client dials at t1 (its
// first call after the stop: at once, spread only by the time this process
// takes to make 1000 refused dials), t2 = t1 + 1 s +-20 % and t3 = t2 + 1.6
// s +-20 %: t3 >= 2.08 s after the stop, and t2 <= 1.2 s plus the spread of
// t1.
//
// The reconnect period runs from the moment the backend listens again to the
// accept by which 99 % of the clients were back (the last 1 %, delayed by a
// busy box, would otherwise stretch the period and lower the mean). It starts at the reopen, not at the
// first accept, so that a lock-step storm fails the figure (all accepts in
// one bucket after a quiet lead-in). stormDown puts the reopen in the quiet
// gap between every client's second and third dial, so the fleet reconnects
// in one wave spread by the jitter of its last delay, and the test checks
// that premise (all but 1 % of the clients were due to redial after the
// reopen) when this process kept time (see below). A reopen that splits the fleet between
// two backoff rounds gives two waves 1-2 s apart; over both, the ratio is
// 4-5x with grpc-go's algorithm as well as ours (simulated with these
// numbers): the figure describes one round. Within one round it is 2-2.7x
// (simulated: 1 run in 5000 above 3x when t1 is spread over 0.3 s).
//
// Two views of the figure are checked. The pool's own schedule (when each
// client's backoff let it redial, read from its endpoint before the reopen)
// is asserted unless this process ran more than 200 ms late (it then bunched
// the failed dials the schedule starts from), and every client must have
// reconnected, within stormBack and no earlier than its schedule, whatever
// the lag. The accepts the backend saw, and the one-round premise, are
// asserted when this process kept time to within one bucket during the wave
// (a starved process runs the second dials late, so they are still due at
// the reopen): with -race, the 1000
// reconnects take about a core for a second, and on a busy 2-core box the
// clients' timers then fire up to 0.6 s late and in bursts, which measures
// the box, not the pool. The backend runs in a child process, so that its
// accept loop is not queued behind the clients' goroutines.
//
// Every client must be back within stormBack of the reopen: its pending
// delay is at most 1.92 s; the rest is slack for a busy box. (Calls refused
// during the backoff used to count as breaker failures: with a later reopen
// some clients tripped their breaker and stayed out for its 24-36 s open
// period; see TestBackoffRefusalsDoNotTripBreaker. Likewise a connection
// that had died but was still in its endpoint was handed to call after call,
// each failing at once, and tripped 1 client's breaker in 1000 now and then;
// see TestDeadConnectionIsSkipped.)
//
// Without the race detector (scripts/test.sh runs this test so, after the
// race suite, on a quiet box) the figures must be asserted: a run in which
// this process did not keep time is run again, up to three times, and the
// test fails when none did. With -race one run is made and its figures are
// asserted only when it kept time.
func TestReconnectStorm(t *testing.T) {
	tries := 1
	if !raceBuild {
		tries = 3
	}
	for k := 1; k <= tries; k++ {
		var asserted bool
		t.Run(fmt.Sprintf("try=%d", k), func(t *testing.T) { asserted = reconnectStorm(t) })
		if t.Failed() || asserted {
			return
		}
	}
	if !raceBuild {
		t.Fatalf("the storm's figures were not asserted in %d runs: this process did not keep time in any", tries)
	}
}

// reconnectStorm runs one storm (see TestReconnectStorm) and reports whether
// both figures, the pool's schedule and the accepts, were asserted.
func reconnectStorm(t *testing.T) (asserted bool) {
	const (
		clients   = 1000
		stormDown = 1900 * time.Millisecond
		stormBack = 5 * time.Second
		bucket    = 100 * time.Millisecond
	)
	ensureFiles(t, clients+512) // a socket per client here and in the child, which inherits the limit

	// The backend runs in a child process, so that its accept loop is not
	// queued behind the 1000 clients' goroutines: an accept then is when the
	// connection arrived, not when this process found time for it.
	kid := rpctest.StartChild(t)
	addr := kid.Addr()
	cs := make([]*Client, clients)
	for i := range cs {
		// Heartbeats off: 1000 pings a second would compete for the two
		// cores with the reconnects being measured. No attempt timeout
		// (FAULTS.md's 500 ms): while this process is starved, it cut
		// dials whose handshake had completed, and the backend saw extra
		// connections.
		cs[i], _ = newTestClient(t, []string{addr}, WithHeartbeat(0, 0))
	}
	echo := func(ctx context.Context, c *Client) error {
		var r rpctest.EchoReply
		return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, clients)
	for _, c := range cs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := echo(ctx, c); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err, ok := <-errs; ok {
		t.Fatalf("%d clients could not connect; first: %v", len(errs)+1, err)
	}
	if n := len(kid.Accepts()); n != clients {
		t.Fatalf("%d accepts for %d clients before the restart", n, clients)
	}

	stopped, err := kid.StopServer()
	if err != nil {
		t.Fatal(err)
	}
	probe := startLagProbe()
	t.Cleanup(func() { probe.stop() })
	back := make([]time.Time, clients)  // when each client's call succeeded again
	history := make([][]error, clients) // each client's failures, for the report
	deadline := stopped.Add(stormDown + stormBack + 5*time.Second)
	for i, c := range cs {
		wg.Go(func() {
			for n := 0; n < 100 && time.Now().Before(deadline); n++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := echo(ctx, c)
				cancel()
				if err == nil {
					back[i] = time.Now()
					return
				}
				history[i] = append(history[i], err)
				if errors.Is(err, ErrClosed) {
					return // the test failed and cleaned up
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	time.Sleep(time.Until(stopped.Add(stormDown)))
	// The pool's own decisions: when each client's backoff lets it redial.
	sched := make([]time.Time, clients)
	for i, c := range cs {
		e := c.endpoint(addr)
		e.mu.Lock()
		sched[i] = e.retryAt
		e.mu.Unlock()
	}
	reopen, err := kid.StartServer()
	if err != nil {
		t.Fatal(err) // the callers end when t.Cleanup closes the clients
	}
	wg.Wait()
	lag := probe.stop()

	var acc []time.Time
	for _, a := range kid.Accepts() {
		if !a.Before(reopen) {
			acc = append(acc, a)
		}
	}
	last := slices.MaxFunc(back, func(a, b time.Time) int { return a.Compare(b) })
	missing, split, early := 0, 0, 0
	late := []time.Duration{0} // from each client's scheduled redial to its call's success
	for i := range cs {
		switch {
		case back[i].IsZero():
			missing++
		case back[i].Before(sched[i]):
			early++
		default:
			late = append(late, back[i].Sub(sched[i]))
		}
		if sched[i].Before(reopen) {
			split++
		}
	}
	slices.Sort(late)
	maxA, meanA, spanA := perBucket(acc, reopen, bucket)
	maxS, meanS, spanS := perBucket(sched, reopen, bucket)
	t.Logf("reopen %v after the stop; %d reconnect accepts over %v: max %d per 100 ms, mean %.1f (%.2fx); "+
		"the pool's redial schedule over %v: max %d, mean %.1f (%.2fx); %d clients back, the last %v after the reopen; "+
		"reconnect calls done after their scheduled redial: median %v, p99 %v; "+
		"largest scheduling lag of this process during the wave %v; %d clients due before the reopen",
		reopen.Sub(stopped).Round(time.Millisecond), len(acc), spanA.Round(time.Millisecond), maxA, meanA, float64(maxA)/meanA,
		spanS.Round(time.Millisecond), maxS, meanS, float64(maxS)/meanS,
		clients-missing, last.Sub(reopen).Round(time.Millisecond),
		late[len(late)/2].Round(time.Millisecond), late[len(late)*99/100].Round(time.Millisecond), lag, split)

	if missing > 0 {
		i := slices.IndexFunc(back, time.Time.IsZero)
		var calls strings.Builder
		for k, err := range history[i] {
			var e *Error
			if errors.As(err, &e) {
				fmt.Fprintf(&calls, "\n  call %d: %v; attempt errors %v", k, err, e.Errs)
			} else {
				fmt.Fprintf(&calls, "\n  call %d: %v", k, err)
			}
		}
		t.Fatalf("%d of %d clients did not reconnect within %v of the reopen; client %d: endpoint %+v; "+
			"balancer %+v; its failed calls:%s", missing, clients, deadline.Sub(reopen), i, cs[i].Endpoints(),
			cs[i].Balancer().Status(), calls.String())
	}
	if d := last.Sub(reopen); d > stormBack {
		t.Fatalf("the last client reconnected %v after the reopen, want within %v", d, stormBack)
	}
	if len(acc) < clients {
		t.Fatalf("%d accepts after the reopen for %d clients", len(acc), clients)
	}
	if early > 0 {
		t.Fatalf("%d clients reconnected before their backoff allowed", early)
	}
	// Each client's schedule is the time this process ran its failed dial
	// plus the jittered backoff (1.6 s +-20 %, a 640 ms window). A process
	// that ran those dials a large part of that window late bunched them
	// itself; the schedule then measures the box, not the jitter.
	if lag > 2*bucket {
		t.Logf("figures not asserted: this process woke up to %v late during the wave, over 200 ms of the "+
			"640 ms jitter window (schedule %.2fx, accepts %.2fx)", lag, float64(maxS)/meanS, float64(maxA)/meanA)
		return false
	}
	if float64(maxS) > 3*meanS {
		t.Fatalf("reconnect storm in the pool's schedule: %d redials in one 100 ms bucket, more than 3x the mean %.1f over %v",
			maxS, meanS, spanS)
	}
	if p99 := late[len(late)*99/100]; lag > bucket || p99 > bucket {
		// A starved box runs the clients' second dials late, so they are
		// still due at the reopen, and it bunches the accepts; neither says
		// anything about the pool's schedule, which is asserted above. The
		// probe, one goroutine, can be lucky while the clients are not
		// (seen in CI: probe 89 ms, reconnects done a median 242 ms and a
		// p99 538 ms after their schedule, accepts 3.77x against a
		// schedule of 2.38x), so the reconnects' own lateness counts too.
		t.Logf("accept figure and backoff rounds not asserted: this process woke up to %v late during the wave, "+
			"and the reconnects were done up to %v (p99) after their schedule; one of them is more than a bucket "+
			"(%d clients due before the reopen)", lag, p99.Round(time.Millisecond), split)
		return false
	}
	// A client whose second dial this process ran a little late is still
	// due before the reopen and redials as it happens: its accept is
	// counted, where it can only add to the first bucket (its schedule,
	// before the reopen, is not). More than 1 % of them means the reopen did
	// not fall between two rounds.
	if split > clients/100 {
		t.Fatalf("%d clients were due to redial before the reopen (%v after the stop), not after it: the reopen was "+
			"not between every client's second and third dial, so the reconnects came in more than one backoff round",
			split, reopen.Sub(stopped))
	}
	if float64(maxA) > 3*meanA {
		t.Fatalf("reconnect storm: %d accepts in one 100 ms bucket, more than 3x the mean %.1f over the %v reconnect period "+
			"(the pool's schedule: max %d, mean %.1f)", maxA, meanA, spanA, maxS, meanS)
	}
	return true
}

// perBucket counts the times at or after from in buckets of width d, and
// returns the largest count, the mean count per bucket over the reconnect
// period, and the period. The period runs from from to the 99th percentile
// of the times, so that a few stragglers (a timer fired late on a busy box)
// do not stretch it and lower the mean; the largest count is taken over all
// the times.
func perBucket(ts []time.Time, from time.Time, d time.Duration) (maxN int, mean float64, period time.Duration) {
	var offs []time.Duration
	counts := map[int64]int{}
	for _, x := range ts {
		if x.Before(from) {
			continue
		}
		off := x.Sub(from)
		offs = append(offs, off)
		counts[int64(off/d)]++
	}
	if len(offs) == 0 {
		return 0, 0, 0
	}
	slices.Sort(offs)
	k := (len(offs)*99 + 99) / 100 // the times within the period
	period = offs[k-1]
	for _, c := range counts {
		maxN = max(maxN, c)
	}
	buckets := int64(period/d) + 1
	return maxN, float64(k) / float64(buckets), period
}

// ensureFiles makes sure this process may open n files, raising the soft
// limit up to the hard one if needed, and fails the test when it cannot.
func ensureFiles(t *testing.T, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if rl.Cur >= n {
		return
	}
	if rl.Max < n {
		t.Fatalf("needs %d open files; the hard limit is %d", n, rl.Max)
	}
	old := rl
	rl.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("needs %d open files; raising the limit from %d: %v", n, old.Cur, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// lagProbe measures how late this process wakes a sleeping goroutine, to
// tell a storm made by the clients from one made by a starved scheduler.
type lagProbe struct {
	done  chan struct{}
	res   chan time.Duration
	once  sync.Once
	worst time.Duration
}

func startLagProbe() *lagProbe {
	p := &lagProbe{done: make(chan struct{}), res: make(chan time.Duration, 1)}
	go func() {
		var worst time.Duration
		for {
			t0 := time.Now()
			select {
			case <-p.done:
				p.res <- worst
				return
			case <-time.After(10 * time.Millisecond):
				worst = max(worst, time.Since(t0)-10*time.Millisecond)
			}
		}
	}()
	return p
}

// stop ends the probe and returns the largest lag seen. It is idempotent.
func (p *lagProbe) stop() time.Duration {
	p.once.Do(func() {
		close(p.done)
		p.worst = (<-p.res).Round(time.Millisecond)
	})
	return p.worst
}

// Calls refused locally while an endpoint is in its reconnect backoff are
// not failures of the node: only the failed dial that started the backoff
// counts for its breaker. Counting each refusal tripped the breaker of a
// client that made five calls during one backoff, and kept the node out for
// the breaker's 24-36 s open period after the backend was back (seen in a
// reconnect storm of 1000 clients with a 2.5 s outage and calls on a 2 s
// deadline: 4 % of the clients stayed out).
func TestBackoffRefusalsDoNotTripBreaker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // refused from now on
	// Every call below falls in the first backoff.
	var logs logbuf.Buffer
	c, _ := newTestClient(t, []string{dead}, WithConnectBackoff(10*time.Second, 1.6, time.Minute, 0.2),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	call := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var r int
		return c.Call(ctx, "Arith.Add", Pair{1, 1}, &r)
	}
	var de *DialError
	if err := call(100 * time.Millisecond); !errors.As(err, &de) {
		t.Fatalf("first call: %v, want a dial error", err)
	}
	for i := range 10 {
		var be *BackoffError
		if err := call(20 * time.Millisecond); !errors.As(err, &be) {
			t.Fatalf("call %d in the backoff: %v, want a *BackoffError", i, err)
		}
	}
	if d := c.Endpoints()[0].Dials; d != 1 {
		t.Fatalf("%d dials, want 1: the calls in the backoff must not dial", d)
	}
	if st := c.Balancer().Status()[0]; st.Breaker != breaker.Closed || st.Ejected {
		t.Fatalf("breaker %v, ejected %v after 1 failed dial and 10 calls refused in the backoff; want closed, not ejected",
			st.Breaker, st.Ejected)
	}
	// The one failed dial is logged once, with its address; the refusals
	// during its backoff are not logged again.
	out := logs.String()
	if n := strings.Count(out, "rpcclient: dial failed"); n != 1 || !strings.Contains(out, "addr="+dead) {
		t.Fatalf("log after 1 failed dial and 10 refusals: %d \"dial failed\" lines, want 1 naming %s:\n%s", n, dead, out)
	}
}
