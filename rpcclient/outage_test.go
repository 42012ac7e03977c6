package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/discovery/etcd"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// FAULTS.md rows 9 and 1 at once: the registry is down, and while it is, one
// of three backends (child processes) is SIGKILLed under load: 8 callers,
// alternating idempotent and non-idempotent calls. ResolveNow cannot reach
// the registry, so the client routes around the dead node within the last
// known good set (quarantine, or ejection and breaker, or P2C's failure
// penalty until its probe): 0 idempotent failures, outcome unknown only for
// non-idempotent calls in flight at the kill, 0 duplicate executions, no
// call near the attempt timeout. Then the registry restarts, still listing
// the dead node, which is deregistered: the set follows, and calls go on
// without it.
func TestRegistryDownThenBackendDies(t *testing.T) {
	t.Run("consul", func(t *testing.T) {
		testRegistryDownThenBackendDies(t, func(t *testing.T, addrs []string) outageRig {
			// A server with a data directory, not a -dev agent: the catalog
			// and the agent's registrations survive the restart, as in
			// production, so the dead backend is still listed when the
			// agent is back, until it is deregistered.
			agent := consultest.StartCluster(t, 1).Agents()[0]
			for i, addr := range addrs {
				registerEcho(t, agent.API(t, ""), fmt.Sprintf("echo-%d", i), addr)
			}
			w, err := consul.New("echo", consul.WithAddress(agent.Addr()),
				consul.WithErrorBackoff(50*time.Millisecond, time.Second))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
			return outageRig{watcher: w, down: agent.Stop, up: func(*testing.T) { agent.Restart() },
				deregister: func(t *testing.T, i int) {
					if err := agent.API(t, "").Agent().ServiceDeregister(fmt.Sprintf("echo-%d", i)); err != nil {
						t.Fatal(err)
					}
				}}
		})
	})
	t.Run("etcd", func(t *testing.T) {
		testRegistryDownThenBackendDies(t, func(t *testing.T, addrs []string) outageRig {
			es := etcdtest.Start(t)
			cli := es.Client(t)
			const prefix = "outage/echo"
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i, addr := range addrs {
				id := fmt.Sprintf("echo-%d", i)
				v, err := etcd.FormatValue(discovery.Endpoint{ID: id, Addr: addr})
				if err != nil {
					t.Fatal(err)
				}
				// No lease: the keys outlive the outage, as the
				// registration of a backend that died while etcd was
				// down does until its lease expires or it is deleted.
				if _, err := cli.Put(ctx, prefix+"/"+id, string(v)); err != nil {
					t.Fatal(err)
				}
			}
			w, err := etcd.New(cli, prefix, etcd.WithBackoff(50*time.Millisecond, time.Second),
				etcd.WithProgressInterval(500*time.Millisecond), etcd.WithRequestTimeout(time.Second),
				etcd.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() }) // before the client's cleanup (es.Client)
			return outageRig{watcher: w, down: es.Stop, up: func(t *testing.T) { es.Restart(t) },
				deregister: func(t *testing.T, i int) {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if _, err := cli.Delete(ctx, fmt.Sprintf("%s/echo-%d", prefix, i)); err != nil {
						t.Fatal(err)
					}
				}}
		})
	})
}

// outageRig is one registry with the backends registered, for
// testRegistryDownThenBackendDies.
type outageRig struct {
	watcher    discovery.Watcher         // over the registry; closed by t.Cleanup
	down       func()                    // stops the registry
	up         func(t *testing.T)        // restarts it
	deregister func(t *testing.T, i int) // removes the i-th backend
}

// tapWatcher passes a Watcher through, keeping the last State the client
// read and counting ResolveNow calls.
type tapWatcher struct {
	discovery.Watcher
	resolves atomic.Int64

	mu      sync.Mutex
	last    discovery.State
	changed chan struct{} // closed and replaced on each State
}

func (w *tapWatcher) Next(ctx context.Context) (discovery.State, error) {
	s, err := w.Watcher.Next(ctx)
	if err == nil {
		w.mu.Lock()
		w.last = s
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
	return s, err
}

func (w *tapWatcher) ResolveNow() {
	w.resolves.Add(1)
	w.Watcher.ResolveNow()
}

func (w *tapWatcher) state() discovery.State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// wait returns the first State the client reads for which ok holds, failing
// t after d.
func (w *tapWatcher) wait(t *testing.T, d time.Duration, what string, ok func(discovery.State) bool) discovery.State {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		w.mu.Lock()
		s, ch := w.last, w.changed
		w.mu.Unlock()
		if ok(s) {
			return s
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("%s: not within %v; last state: %s (err %v)", what, d, stateAddrs(s), s.Err)
		}
	}
}

func stateAddrs(s discovery.State) string {
	var a []string
	for _, e := range s.Endpoints {
		a = append(a, e.Addr)
	}
	slices.Sort(a)
	return strings.Join(a, ",")
}

// outageLoad is how long the load runs while the registry is down: the kill
// comes 500 ms in, and P2C's probe of the dead node (2 s without a sample)
// falls within the rest.
const outageLoad = 4 * time.Second

// mixedCall is one call of runMixed.
type mixedCall struct {
	idem    bool
	id      string // the Exec ID of a non-idempotent call
	start   time.Time
	latency time.Duration
	err     error
}

// runMixed runs 8 closed-loop callers for d (runLoad), each alternating an
// idempotent Echo.Echo and a non-idempotent Echo.Exec (with a unique ID,
// sleeping 2 ms in the handler so that some are in flight at any instant),
// each with a 2 s deadline.
func runMixed(c *Client, round string, d time.Duration) []mixedCall {
	id := func(w, i int) string { return fmt.Sprintf("%s-w%d-%d", round, w, i) }
	out := runLoad(8, 100000, d, func(ctx context.Context, w, i int) error {
		if i%2 == 0 {
			var r rpctest.EchoReply
			return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "x"}, &r, Idempotent())
		}
		var r rpctest.ExecReply
		return c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: id(w, i), Sleep: 2 * time.Millisecond}, &r)
	})
	mixed := make([]mixedCall, len(out))
	for k, o := range out {
		mixed[k] = mixedCall{idem: o.i%2 == 0, start: o.start, latency: o.latency, err: o.err}
		if !mixed[k].idem {
			mixed[k].id = id(o.worker, o.i)
		}
	}
	return mixed
}

// mixedFigures counts runMixed's outcomes.
type mixedFigures struct {
	idem, idemFailed, exec, execFailed, unknown int
	slowest                                     time.Duration
	firstIdemErr, firstOtherErr                 error
}

func countMixed(out []mixedCall) mixedFigures {
	var f mixedFigures
	for _, m := range out {
		f.slowest = max(f.slowest, m.latency)
		if m.idem {
			f.idem++
			if m.err != nil {
				f.idemFailed++
				if f.firstIdemErr == nil {
					f.firstIdemErr = m.err
				}
			}
			continue
		}
		f.exec++
		if m.err != nil {
			f.execFailed++
			if errors.Is(m.err, ErrOutcomeUnknown) {
				f.unknown++
			} else if f.firstOtherErr == nil {
				f.firstOtherErr = m.err
			}
		}
	}
	return f
}

// checkExecutions fails t if an Exec ID ran more than once, or a
// non-idempotent call that succeeded did not run exactly once.
func checkExecutions(t *testing.T, kids []*rpctest.Child, out []mixedCall) (duplicates int) {
	t.Helper()
	var logs [][]string
	for _, k := range kids {
		logs = append(logs, k.Executions())
	}
	d := rpctest.Duplicates(logs...)
	if len(d) != 0 {
		t.Errorf("non-idempotent calls executed more than once: %v", d)
	}
	ran := rpctest.Runs(logs...)
	for _, m := range out {
		if !m.idem && m.err == nil && ran[m.id] != 1 {
			t.Errorf("non-idempotent call %s succeeded but ran %d times", m.id, ran[m.id])
		}
	}
	return len(d)
}

func testRegistryDownThenBackendDies(t *testing.T, setup func(t *testing.T, addrs []string) outageRig) {
	var kids []*rpctest.Child
	var addrs []string
	for i := range 3 {
		k := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName(fmt.Sprintf("o%d", i)))
		kids = append(kids, k)
		addrs = append(addrs, k.Addr())
	}
	rig := setup(t, addrs)
	tap := &tapWatcher{Watcher: rig.watcher, changed: make(chan struct{})}
	var rec recorder
	c, err := New(tap, WithAttemptTimeout(500*time.Millisecond), WithObserver(&rec))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // before the watcher's cleanup
	all := strings.Join(slices.Sorted(slices.Values(addrs)), ",")
	tap.wait(t, 10*time.Second, "the three backends", func(s discovery.State) bool {
		return s.Err == nil && stateAddrs(s) == all
	})
	warm := runMixed(c, "warm", 300*time.Millisecond)
	if f := countMixed(warm); f.idemFailed+f.execFailed != 0 {
		t.Fatalf("before any fault: %+v", f)
	}

	// 1. The registry goes down: the watcher reports the error and keeps
	// the last known good set.
	rig.down()
	downAt := time.Now()
	s := tap.wait(t, 10*time.Second, "the outage reported", func(s discovery.State) bool { return s.Err != nil })
	reported := time.Since(downAt)
	if stateAddrs(s) != all {
		t.Fatalf("registry down: the set is %q, want the last known good %q", stateAddrs(s), all)
	}
	synced := s.Synced

	// 2. While it is down, one backend is SIGKILLed under load.
	dead := addrs[0]
	resolvesBefore := tap.resolves.Load()
	rec.take()
	var killSent, killAt time.Time
	killed := make(chan struct{})
	go func() {
		time.Sleep(500 * time.Millisecond)
		killSent = time.Now()
		kids[0].Kill()
		killAt = time.Now()
		close(killed)
	}()
	// Sample the dead node's status in the balancer every 10 ms.
	loaded := make(chan struct{})
	sampled := make(chan nodeSamples)
	go func() { sampled <- sampleNode(c, dead, loaded) }()
	loadAt := time.Now()
	out := runMixed(c, "outage", outageLoad)
	close(loaded)
	<-killed
	samples := <-sampled
	attempts, _ := rec.take()
	s = tap.state()
	f := countMixed(out)
	if f.idemFailed != 0 {
		t.Errorf("%d of %d idempotent calls failed; first: %v", f.idemFailed, f.idem, f.firstIdemErr)
	}
	if f.firstOtherErr != nil {
		t.Errorf("a non-idempotent call failed without saying the outcome is unknown: %v", f.firstOtherErr)
	}
	// Unknown outcomes only for calls in flight at the kill: started before
	// Kill returned (it waits for the process to die) and ended after the
	// SIGKILL was sent.
	for _, m := range out {
		switch {
		case m.idem || m.err == nil:
		case m.start.After(killAt):
			t.Errorf("non-idempotent call %s started %v after the kill and failed: %v",
				m.id, m.start.Sub(killAt), m.err)
		case m.start.Add(m.latency).Before(killSent):
			t.Errorf("non-idempotent call %s failed before the kill: %v", m.id, m.err)
		}
	}
	dups := checkExecutions(t, kids, out)
	// No hang: the slowest call within the attempt timeout plus a retry.
	if f.slowest > 500*time.Millisecond+500*time.Millisecond {
		t.Errorf("slowest call during the outage took %v", f.slowest)
	}
	var deadPicks int
	var lastPick time.Time
	var picks []time.Duration
	for _, a := range attempts {
		if a.Addr != dead || a.Start.Before(killSent) {
			continue
		}
		deadPicks++
		picks = append(picks, a.Start.Sub(killSent).Round(time.Millisecond))
		if a.Start.After(lastPick) {
			lastPick = a.Start
		}
		// Past the calls caught by the kill, only failed dials: the
		// picks that find the node dead before sending anything.
		var de *DialError
		var be *BackoffError
		if a.Start.Sub(killSent) > 100*time.Millisecond && !errors.As(a.Err, &de) && !errors.As(a.Err, &be) {
			t.Errorf("an attempt on the dead node %s at +%v was not a failed dial: %v", dead, a.Start.Sub(killSent), a.Err)
		}
	}
	slices.Sort(picks)
	sinceKill := time.Duration(0)
	if !lastPick.IsZero() {
		sinceKill = lastPick.Sub(killSent)
	}
	// The dead address is quarantined by its first failed dial: at once
	// when a call picks it before the client has read the connection's
	// end; otherwise P2C's failure penalty keeps it unpicked (and
	// undialled: a lost connection that had answered quarantines
	// nothing) until its probe, 2 s without a sample. Failed calls may
	// also have ejected it, or opened its breaker, first.
	quarantined := samples.firstOut(killSent)
	if quarantined < 0 {
		t.Errorf("the dead node %s was never quarantined, ejected or broken in the %v after the kill", dead, outageLoad-500*time.Millisecond)
	}
	// A new error text (the killed blocking query's, then connection
	// refused) publishes a new Version; Synced stays.
	if s.Err == nil || !s.Synced.Equal(synced) || stateAddrs(s) != all {
		t.Errorf("registry still down after the load: state %q (synced %v, was %v; err %v), want the last known good set with the error",
			stateAddrs(s), s.Synced, synced, s.Err)
	}
	resolves := tap.resolves.Load() - resolvesBefore
	if resolves == 0 {
		t.Errorf("the client never called ResolveNow for the dead node")
	}
	t.Logf("registry down (reported after %v); kill at +%v of %v of load with 8 callers: "+
		"%d idempotent calls, %d failed; %d non-idempotent, %d failed (%d outcome unknown), %d duplicate executions; "+
		"slowest call %v; %d picks of the dead node after the kill, the last at +%v (at %v); "+
		"out of rotation from +%v (%s); %d ResolveNow calls",
		reported.Round(time.Millisecond), killSent.Sub(loadAt).Round(time.Millisecond), outageLoad,
		f.idem, f.idemFailed, f.exec, f.execFailed, f.unknown, dups,
		f.slowest.Round(time.Millisecond), deadPicks, sinceKill.Round(time.Millisecond), picks,
		quarantined.Round(time.Millisecond), samples.why(killSent), resolves)

	// 3. The registry comes back, still listing the dead backend, which is
	// then deregistered: the set follows and the dead node is gone.
	rig.up(t)
	upAt := time.Now()
	tap.wait(t, 15*time.Second, "the registry answering again", func(s discovery.State) bool { return s.Err == nil })
	resumed := time.Since(upAt)
	rig.deregister(t, 0)
	deregAt := time.Now()
	live := strings.Join(slices.Sorted(slices.Values(addrs[1:])), ",")
	tap.wait(t, 10*time.Second, "the dead backend deregistered", func(s discovery.State) bool {
		return s.Err == nil && stateAddrs(s) == live
	})
	followed := time.Since(deregAt)
	if c.Balancer().Listed(dead) {
		// The client applies the State after Next returns it: wait for it.
		deadline := time.Now().Add(5 * time.Second)
		for c.Balancer().Listed(dead) && time.Now().Before(deadline) {
			select {
			case <-c.Balancer().Updated():
			case <-time.After(10 * time.Millisecond):
			}
		}
		if c.Balancer().Listed(dead) {
			t.Fatalf("the balancer still lists %s 5 s after discovery dropped it", dead)
		}
	}
	rec.take()
	after := runMixed(c, "after", 500*time.Millisecond)
	attempts, _ = rec.take()
	fa := countMixed(after)
	if fa.idemFailed+fa.execFailed != 0 {
		t.Errorf("after the registry came back: %d idempotent and %d non-idempotent calls failed; first: %v %v",
			fa.idemFailed, fa.execFailed, fa.firstIdemErr, fa.firstOtherErr)
	}
	for _, a := range attempts {
		if a.Addr == dead {
			t.Errorf("an attempt went to the deregistered node at %v", a.Start)
			break
		}
	}
	dups = checkExecutions(t, kids, append(out, after...))
	t.Logf("registry back: answering %v after its restart, dead node gone from the set %v after its deregistration; "+
		"then %d idempotent and %d non-idempotent calls, %d failed, %d duplicates, slowest %v",
		resumed.Round(time.Millisecond), followed.Round(time.Millisecond), fa.idem, fa.exec,
		fa.idemFailed+fa.execFailed, dups, fa.slowest.Round(time.Millisecond))
}

// nodeSample is one look at a node's status in the balancer.
type nodeSample struct {
	at     time.Time
	status balancer.NodeStatus
	listed bool
}

type nodeSamples []nodeSample

// sampleNode samples addr's status every 10 ms until done is closed (at
// most 10 s).
func sampleNode(c *Client, addr string, done <-chan struct{}) nodeSamples {
	var out nodeSamples
	for range 1000 {
		for _, st := range c.Balancer().Status() {
			if st.Endpoint.Addr == addr {
				out = append(out, nodeSample{at: time.Now(), status: st, listed: true})
			}
		}
		select {
		case <-done:
			return out
		case <-time.After(10 * time.Millisecond):
		}
	}
	return out
}

// firstOut returns how long after from the node was first seen
// quarantined, ejected or with its breaker not closed, or -1.
func (ns nodeSamples) firstOut(from time.Time) time.Duration {
	for _, n := range ns {
		if !n.at.Before(from) && (n.status.Quarantined || n.status.Ejected || n.status.Breaker != breaker.Closed) {
			return n.at.Sub(from)
		}
	}
	return -1
}

// why counts, among the samples from from on, those that saw the node
// quarantined, ejected and with its breaker not closed.
func (ns nodeSamples) why(from time.Time) string {
	var n, q, e, b int
	for _, s := range ns {
		if s.at.Before(from) {
			continue
		}
		n++
		if s.status.Quarantined {
			q++
		}
		if s.status.Ejected {
			e++
		}
		if s.status.Breaker != breaker.Closed {
			b++
		}
	}
	var last balancer.NodeStatus
	if len(ns) > 0 {
		last = ns[len(ns)-1].status
	}
	return fmt.Sprintf("of %d samples after the kill: %d quarantined, %d ejected, %d breaker not closed; last: in flight %d, latency %v",
		n, q, e, b, last.InFlight, last.Latency.Round(time.Millisecond))
}
