package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/rpc"
	"os"
	"runtime"
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
	"github.com/dialtone-go/dialtone/internal/rpctest"
	"go.uber.org/goleak"
)

// TestStress drives a Client over 3-6 real loopback backends, with random
// calls from 8-32 goroutines, while the endpoint set changes and backends
// hang, stop, restart and reset, and finally closes the Client with calls
// in flight. The seed (DIALTONE_STRESS_SEED, else the clock) is logged;
// DIALTONE_STRESS_DURATION sets the chaos phase (default 3 s). Skipped in
// -short mode.
//
// Invariants: every Call returns, within min(its deadline, its
// cancellation, Close) plus a slack; every failure is an *Error with sane
// fields; a non-idempotent Exec ran at most once, exactly once when Call
// succeeded, and never when Call failed without ErrOutcomeUnknown (nor a
// server error); a keyed Exec ran with one key only; Close returns within
// 1 s; the balancer has nothing in flight afterwards; no goroutine leaks.
func TestStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test: not in -short mode")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DIALTONE_STRESS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DIALTONE_STRESS_SEED: %v", err)
		}
		seed = v
	}
	chaos := 3 * time.Second
	if s := os.Getenv("DIALTONE_STRESS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("DIALTONE_STRESS_DURATION: %v", err)
		}
		chaos = min(d, 15*time.Second)
	}
	t.Logf("seed %d (DIALTONE_STRESS_SEED=%d to repeat), chaos %v", seed, seed, chaos)
	ignore := goleak.IgnoreCurrent()
	t.Run("run", func(t *testing.T) { stressRun(t, seed, chaos) })
	if t.Failed() {
		return
	}
	if err := goleak.Find(ignore); err != nil {
		t.Fatalf("seed %d: goroutines leaked: %v", seed, err)
	}
}

// stressBackend is one backend: an in-process server, maybe behind a proxy.
type stressBackend struct {
	name  string
	srv   *rpctest.Server
	child *rpctest.Child // instead of srv
	proxy *rpctest.Proxy // nil: the endpoint is srv's address
	addr  string         // what discovery lists

	mu      sync.Mutex // serialises the chaos actions on it
	stopped bool
	hung    bool
}

// stressCall is one Call's record.
type stressCall struct {
	kind  string // echo-idem, echo, exec, exec-idem, exec-keyed
	id    string
	key   string // exec-keyed's key, read back from the args
	start time.Time
	end   time.Time
	bound time.Time // the latest time by which the call must have returned (before slack); zero: Close's
	err   error
	opts  string
	snap  string        // the reply when Call returned
	reply func() string // the reply now
}

func stressRun(t *testing.T, seed uint64, chaos time.Duration) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	nb := 3 + rng.IntN(4)
	backends := make([]*stressBackend, nb)
	for i := range nb {
		name := fmt.Sprintf("b%d", i)
		b := &stressBackend{name: name}
		if i == 0 && rng.IntN(2) == 0 {
			b.child = rpctest.StartChild(t, rpctest.WithChildName(name), rpctest.WithChildHeartbeat())
			b.addr = b.child.Addr()
		} else {
			b.srv = rpctest.Start(t, rpctest.WithName(name), rpctest.WithHeartbeat())
			b.addr = b.srv.Addr()
		}
		if rng.IntN(3) == 0 {
			b.proxy = rpctest.NewProxy(t, b.target())
			b.addr = b.proxy.Addr()
		}
		backends[i] = b
	}

	// Options for this run.
	var opts []Option
	var desc []string
	add := func(d string, o Option) { opts = append(opts, o); desc = append(desc, d) }
	pool := 1 + rng.IntN(3)
	add(fmt.Sprintf("pool=%d", pool), WithPoolSize(pool))
	if rng.IntN(2) == 0 {
		age := time.Duration(10+rng.IntN(300)) * time.Millisecond
		add(fmt.Sprintf("maxAge=%v", age), WithMaxConnectionAge(age))
	}
	switch rng.IntN(3) {
	case 0:
		add("heartbeat=off readTimeout=1s", func(o *options) { o.heartbeat, o.heartbeatTimeout, o.readTimeout = 0, 0, time.Second })
	case 1:
		every := time.Duration(30+rng.IntN(200)) * time.Millisecond
		to := time.Duration(50+rng.IntN(300)) * time.Millisecond
		add(fmt.Sprintf("heartbeat=%v/%v", every, to), WithHeartbeat(every, to))
	}
	if rng.IntN(2) == 0 {
		at := time.Duration(50+rng.IntN(400)) * time.Millisecond
		add(fmt.Sprintf("attemptTimeout=%v", at), WithAttemptTimeout(at))
	}
	if rng.IntN(2) == 0 {
		h := time.Duration(5+rng.IntN(80)) * time.Millisecond
		add(fmt.Sprintf("hedge=%v", h), WithHedging(h))
	}
	maxAttempts := 1 + rng.IntN(4)
	add(fmt.Sprintf("maxAttempts=%d", maxAttempts), WithMaxAttempts(maxAttempts))
	dialTimeout := time.Duration(100+rng.IntN(900)) * time.Millisecond
	add(fmt.Sprintf("dialTimeout=%v", dialTimeout), WithDialTimeout(dialTimeout))
	cb := time.Duration(5+rng.IntN(100)) * time.Millisecond
	add(fmt.Sprintf("connectBackoff=%v", cb), WithConnectBackoff(cb, 1.6, 10*cb, 0.2))
	grace := time.Duration(rng.IntN(300)) * time.Millisecond
	add(fmt.Sprintf("drainGrace=%v", grace), WithDrainGrace(grace))
	if rng.IntN(2) == 0 {
		add("budget=1,1000", WithRetryBudget(1, 1000))
	}
	if rng.IntN(3) == 0 {
		add("maxMessage=1MiB", WithMaxMessageSize(1<<20))
	}
	var bopts []balancer.Option
	policies := []struct {
		name string
		p    balancer.Policy
	}{
		{"p2c", balancer.P2C()}, {"maglev", balancer.Maglev(0)}, {"rr", balancer.RoundRobin()},
		{"wrr", balancer.WeightedRoundRobin()}, {"random", balancer.Random()},
	}
	pol := policies[rng.IntN(len(policies))]
	bopts = append(bopts, balancer.WithPolicy(pol.p))
	desc = append(desc, "policy="+pol.name)
	switch rng.IntN(2) {
	case 0:
		bopts = append(bopts, balancer.WithoutBreakers())
		desc = append(desc, "breakers=off")
	case 1:
		bopts = append(bopts, balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 3, OpenTimeout: 100 * time.Millisecond, MaxOpenTimeout: 300 * time.Millisecond}))
		desc = append(desc, "breakers=fast")
	}
	if rng.IntN(2) == 0 {
		bopts = append(bopts, balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true}))
		desc = append(desc, "outlier=off")
	} else {
		bopts = append(bopts, balancer.WithOutlierDetection(balancer.OutlierConfig{BaseEjection: 100 * time.Millisecond, MaxEjection: 300 * time.Millisecond}))
	}
	opts = append(opts, WithBalancer(bopts...))
	workers := 8 + rng.IntN(25)
	desc = append(desc, fmt.Sprintf("workers=%d", workers))
	t.Logf("backends %d (%s), %s", nb, describeBackends(backends), strings.Join(desc, " "))

	randomSet := func(r *rand.Rand, allowEmpty bool) []discovery.Endpoint {
		if allowEmpty && r.IntN(20) == 0 {
			return nil
		}
		var eps []discovery.Endpoint
		for _, b := range backends {
			if r.IntN(4) != 0 {
				eps = append(eps, discovery.Endpoint{ID: b.name, Addr: b.addr, Weight: 1 + r.IntN(10)})
			}
		}
		if len(eps) == 0 {
			b := backends[r.IntN(len(backends))]
			eps = append(eps, discovery.Endpoint{ID: b.name, Addr: b.addr, Weight: 1})
		}
		return eps
	}
	w, err := discovery.NewStatic(randomSet(rng, false)...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := New(w, opts...)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()

	var (
		closeAt atomic.Pointer[time.Time]
		stop    atomic.Bool
		seq     atomic.Int64
		mu      sync.Mutex
		calls   []*stressCall
		wg      sync.WaitGroup
	)
	record := func(sc *stressCall) {
		mu.Lock()
		calls = append(calls, sc)
		mu.Unlock()
	}
	for wi := range workers {
		r := rand.New(rand.NewPCG(seed+uint64(wi)+1, uint64(wi)))
		wg.Go(func() {
			for !stop.Load() {
				if stressOne(c, r, wi, &seq, record) != nil {
					time.Sleep(time.Millisecond) // no spinning on a set that fails at once
				}
			}
		})
	}

	// Chaos.
	chaosEnd := time.Now().Add(chaos)
	var cwg sync.WaitGroup
	cwg.Go(func() {
		for time.Now().Before(chaosEnd) {
			time.Sleep(time.Duration(5+rng.IntN(60)) * time.Millisecond)
			b := backends[rng.IntN(len(backends))]
			switch rng.IntN(10) {
			case 0, 1:
				if err := w.Update(randomSet(rng, true)...); err != nil {
					t.Errorf("Update: %v", err)
				}
			case 2:
				b.mu.Lock()
				b.setHung(t, !b.hung)
				b.mu.Unlock()
			case 3:
				b.mu.Lock()
				b.setStopped(t, true)
				b.mu.Unlock()
				if rng.IntN(2) == 0 { // a quick restart on the same port
					time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
					b.mu.Lock()
					b.setStopped(t, false)
					b.mu.Unlock()
				}
			case 4, 5:
				b.mu.Lock()
				b.setStopped(t, false)
				b.mu.Unlock()
			case 6:
				if b.proxy != nil {
					b.proxy.Reset()
					time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
					b.proxy.Pass()
				}
			case 7:
				if b.proxy != nil {
					if rng.IntN(2) == 0 {
						b.proxy.BlackholeResponses()
						time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
					} else {
						b.proxy.Latency(time.Duration(rng.IntN(40)) * time.Millisecond)
						time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
					}
					b.proxy.Pass()
				}
			case 8:
				if b.proxy != nil {
					if rng.IntN(2) == 0 {
						o := backends[rng.IntN(len(backends))]
						b.proxy.Retarget(o.target())
					} else if rng.IntN(2) == 0 {
						b.proxy.Throttle(0, 0)
					} else {
						b.proxy.Throttle(256<<10+rng.IntN(4<<20), 256<<10+rng.IntN(4<<20))
					}
				}
			case 9:
				// Unhang everyone now and then, so that calls progress.
				for _, o := range backends {
					o.mu.Lock()
					o.setHung(t, false)
					o.mu.Unlock()
				}
			}
		}
	})
	cwg.Wait()

	// Close with calls in flight.
	now := time.Now()
	closeAt.Store(&now)
	t0 := time.Now()
	c.Close()
	closed = true
	closeDur := time.Since(t0)
	stop.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("seed %d: calls still running 5 s after Close\n%s", seed, buf[:n])
	}
	if closeDur > time.Second {
		t.Errorf("seed %d: Close took %v", seed, closeDur)
	}

	// Let held requests run (or not) before reading the logs.
	for _, b := range backends {
		b.mu.Lock()
		b.setHung(t, false)
		b.mu.Unlock()
		if b.proxy != nil {
			b.proxy.Pass()
		}
	}
	time.Sleep(200 * time.Millisecond)
	for _, b := range backends {
		if b.proxy != nil {
			b.proxy.Close()
		}
		if b.srv != nil {
			b.srv.Stop()
		} else {
			b.child.Kill()
		}
	}
	execs := map[string][]string{} // ID -> keys
	for _, b := range backends {
		var log []string
		if b.srv != nil {
			log = b.srv.Executions()
		} else {
			log = b.child.Executions()
		}
		for _, line := range log {
			id, key, _ := strings.Cut(line, " ")
			execs[id] = append(execs[id], key)
		}
	}

	// Invariants.
	closeTime := *closeAt.Load()
	slack := 300 * time.Millisecond
	if raceBuild {
		slack = 600 * time.Millisecond
	}
	var nerr, nok, unknown int
	var worst time.Duration
	var worstCall *stressCall
	bad := 0
	report := func(format string, args ...any) {
		bad++
		if bad <= 20 {
			t.Errorf("seed %d: "+format, append([]any{seed}, args...)...)
		}
	}
	for _, sc := range calls {
		bound := closeTime
		if !sc.bound.IsZero() && sc.bound.Before(bound) {
			bound = sc.bound
		}
		if sc.start.After(bound) {
			bound = sc.start
		}
		if late := sc.end.Sub(bound); late > worst {
			worst, worstCall = late, sc
		}
		if late := sc.end.Sub(bound); late > slack {
			report("%s %s (%s) returned %v after its bound (ran %v): %v", sc.kind, sc.id, sc.opts, late, sc.end.Sub(sc.start), sc.err)
		}
		if sc.err == nil {
			nok++
		} else {
			nerr++
			e, ok := sc.err.(*Error)
			switch {
			case !ok:
				report("%s %s: error %T is not *Error: %v", sc.kind, sc.id, sc.err, sc.err)
			case e.Attempts < 0 || e.Err == nil || len(e.Errs) == 0:
				report("%s %s (%s): bad *Error fields %+v", sc.kind, sc.id, sc.opts, *e)
			case len(slices.Compact(slices.Sorted(slices.Values(e.Tried)))) != len(e.Tried):
				report("%s %s: Tried lists an endpoint twice: %v", sc.kind, sc.id, e.Tried)
			case errors.Is(sc.err, ErrOutcomeUnknown) && (e.Attempts < 1 || len(e.Tried) == 0):
				report("%s %s (%s): ErrOutcomeUnknown with no attempt: %v", sc.kind, sc.id, sc.opts, sc.err)
			case errors.Is(sc.err, ErrOutcomeUnknown) && !slices.ContainsFunc(e.Errs, sentNoAnswer(true)):
				report("%s %s (%s): ErrOutcomeUnknown but no attempt went without an answer: %#v", sc.kind, sc.id, sc.opts, e.Errs)
			case (sc.kind == "exec" || sc.kind == "echo") && errors.As(e.Err, new(rpc.ServerError)) && errors.Is(sc.err, ErrOutcomeUnknown):
				report("%s %s (%s): the server answered, but the call says the outcome is unknown: %v", sc.kind, sc.id, sc.opts, sc.err)
			case (sc.kind == "exec" || sc.kind == "echo") && !errors.Is(sc.err, ErrOutcomeUnknown) && slices.ContainsFunc(e.Errs, sentNoAnswer(false)):
				report("%s %s (%s): an attempt went without an answer but no ErrOutcomeUnknown: %v", sc.kind, sc.id, sc.opts, sc.err)
			}
			if errors.Is(sc.err, ErrOutcomeUnknown) {
				unknown++
			}
		}
		if sc.reply != nil {
			if now := sc.reply(); now != sc.snap {
				report("%s %s (%s): reply written after Call returned (%v): %q, then %q", sc.kind, sc.id, sc.opts, sc.err, sc.snap, now)
			}
		}
		ex := execs[sc.id]
		var se rpc.ServerError
		serverErr := errors.As(sc.err, &se)
		switch sc.kind {
		case "exec":
			switch {
			case len(ex) > 1:
				report("non-idempotent %s (%s) executed %d times: %v", sc.id, sc.opts, len(ex), sc.err)
			case sc.err == nil && len(ex) != 1:
				report("non-idempotent %s (%s) succeeded but executed %d times", sc.id, sc.opts, len(ex))
			case sc.err != nil && len(ex) == 1 && !serverErr && !errors.Is(sc.err, ErrOutcomeUnknown):
				report("non-idempotent %s (%s) executed but its error does not say the outcome is unknown: %v", sc.id, sc.opts, sc.err)
			}
		case "exec-keyed":
			for _, k := range ex {
				if k != sc.key || k == "" {
					report("keyed %s executed with key %q, want %q", sc.id, k, sc.key)
					break
				}
			}
			switch {
			case sc.err == nil && len(ex) == 0:
				report("keyed %s (%s) succeeded but never executed", sc.id, sc.opts)
			case sc.err != nil && len(ex) > 0 && !serverErr && !errors.Is(sc.err, ErrOutcomeUnknown):
				report("keyed %s (%s) executed %d times but its error does not say the outcome is unknown: %v", sc.id, sc.opts, len(ex), sc.err)
			}
		case "exec-idem":
			if sc.err == nil && len(ex) == 0 {
				report("idempotent %s (%s) succeeded but never executed", sc.id, sc.opts)
			}
		}
	}
	for _, st := range c.Balancer().Status() {
		if st.InFlight != 0 {
			report("balancer: %s has %d requests in flight after everything settled", st.Endpoint.ID, st.InFlight)
		}
	}
	for _, st := range c.Endpoints() {
		if st.Pending != 0 || st.State != Shutdown {
			report("endpoint %s after Close: %+v", st.Addr, st)
		}
	}
	if bad > 20 {
		t.Errorf("seed %d: %d more violations", seed, bad-20)
	}
	t.Logf("%d calls: %d ok, %d failed (%d outcome unknown); Close took %v", len(calls), nok, nerr, unknown, closeDur)
	if worstCall != nil {
		t.Logf("latest return: %v past its bound, %s %s (%s) ran %v: %v", worst, worstCall.kind, worstCall.id, worstCall.opts, worstCall.end.Sub(worstCall.start), worstCall.err)
	}
	if testing.Verbose() {
		kinds := map[string]int{}
		for _, sc := range calls {
			if sc.err != nil {
				k := sc.err.Error()
				if e, ok := sc.err.(*Error); ok && e.Err != nil {
					k = fmt.Sprintf("%T", e.Err) + " " + e.Err.Error()
				}
				if len(k) > 200 {
					k = k[:200]
				}
				for _, b := range backends {
					k = strings.ReplaceAll(k, b.addr, "ADDR")
					k = strings.ReplaceAll(k, b.target(), "ADDR")
				}
				kinds[k]++
			}
		}
		type kv struct {
			k string
			n int
		}
		var top []kv
		for k, n := range kinds {
			top = append(top, kv{k, n})
		}
		slices.SortFunc(top, func(a, b kv) int { return b.n - a.n })
		for _, x := range top[:min(len(top), 8)] {
			t.Logf("  %6d %s", x.n, x.k)
		}
	}
}

func describeBackends(bs []*stressBackend) string {
	var s []string
	for _, b := range bs {
		d := b.name
		if b.child != nil {
			d += "(child)"
		}
		if b.proxy != nil {
			d += "+proxy"
		}
		s = append(s, d)
	}
	return strings.Join(s, " ")
}

// target is the server's own address.
func (b *stressBackend) target() string {
	if b.srv != nil {
		return b.srv.Addr()
	}
	return b.child.Addr()
}

// setHung hangs or resumes the backend (SIGSTOP and SIGCONT for a child);
// under b.mu.
func (b *stressBackend) setHung(t *testing.T, hung bool) {
	if b.hung == hung {
		return
	}
	b.hung = hung
	switch {
	case b.srv != nil && hung:
		b.srv.Hang()
	case b.srv != nil:
		b.srv.Unhang()
	case hung:
		if err := b.child.Stop(); err != nil {
			t.Errorf("SIGSTOP: %v", err)
		}
	default:
		if err := b.child.Cont(); err != nil {
			t.Errorf("SIGCONT: %v", err)
		}
	}
}

// setStopped stops the backend's server, or starts it again on the same
// port; under b.mu. A hung child is not touched (its signal would wait).
func (b *stressBackend) setStopped(t *testing.T, stopped bool) {
	if b.stopped == stopped || (b.child != nil && b.hung) {
		return
	}
	b.stopped = stopped
	switch {
	case b.srv != nil && stopped:
		b.srv.Stop()
	case b.srv != nil:
		// From a chaos goroutine: a port an outgoing connection took
		// meanwhile keeps the backend down, which is chaos too.
		if err := b.srv.TryRestart(true); err != nil {
			t.Logf("backend %s stays down: %v", b.name, err)
			b.stopped = true
		}
	case stopped:
		if _, err := b.child.StopServer(); err != nil {
			t.Errorf("child StopServer: %v", err)
		}
	default:
		if _, err := b.child.StartServer(); err != nil {
			t.Errorf("child StartServer: %v", err)
		}
	}
}

// stressOne makes one random call and records it.
func stressOne(c *Client, r *rand.Rand, wi int, seq *atomic.Int64, record func(*stressCall)) error {
	sc := &stressCall{id: fmt.Sprintf("w%d-%d", wi, seq.Add(1))}
	var copts []CallOption
	var od []string
	ctx := context.Background()
	var cancel context.CancelFunc = func() {}
	switch r.IntN(6) {
	case 0: // no deadline
	case 1: // already cancelled
		ctx, cancel = context.WithCancel(ctx)
		cancel()
		sc.bound = time.Now()
		od = append(od, "cancelled")
	case 2: // cancelled later
		d := time.Duration(r.IntN(200)) * time.Millisecond
		ctx, cancel = context.WithCancel(ctx)
		sc.bound = time.Now().Add(d)
		tm := time.AfterFunc(d, cancel)
		defer tm.Stop()
		od = append(od, fmt.Sprintf("cancel@%v", d))
	default:
		d := time.Duration(10+r.IntN(800)) * time.Millisecond
		ctx, cancel = context.WithTimeout(ctx, d)
		sc.bound = time.Now().Add(d)
		od = append(od, fmt.Sprintf("deadline=%v", d))
	}
	defer cancel()
	if r.IntN(4) == 0 {
		at := time.Duration(r.IntN(300)) * time.Millisecond
		copts = append(copts, AttemptTimeout(at))
		od = append(od, fmt.Sprintf("at=%v", at))
	}
	if r.IntN(4) == 0 {
		h := time.Duration(r.IntN(60)) * time.Millisecond
		copts = append(copts, Hedge(h))
		od = append(od, fmt.Sprintf("hedge=%v", h))
	}
	if r.IntN(3) == 0 {
		k := strconv.Itoa(r.IntN(20))
		copts = append(copts, HashKey(k))
		od = append(od, "hashkey="+k)
	}
	sleep := time.Duration(0)
	if r.IntN(3) == 0 {
		sleep = time.Duration(r.IntN(50)) * time.Millisecond
	}
	sc.start = time.Now()
	switch r.IntN(5) {
	case 0:
		sc.kind = "echo-idem"
		var rep rpctest.EchoReply
		args := &rpctest.EchoArgs{Msg: sc.id, Sleep: sleep}
		switch r.IntN(20) {
		case 0, 1:
			args.Fail = "boom"
		case 2:
			args.ReplyBytes = r.IntN(2 << 20)
			od = append(od, fmt.Sprintf("replyBytes=%d", args.ReplyBytes))
		case 3:
			args.Msg = sc.id + strings.Repeat("x", r.IntN(2<<20))
			od = append(od, fmt.Sprintf("msgBytes=%d", len(args.Msg)))
		}
		msg := args.Msg
		sc.reply = func() string { return fmt.Sprintf("%.60s %s %d", rep.Msg, rep.Server, len(rep.Payload)) }
		sc.err = c.Call(ctx, "Echo.Echo", args, &rep, append(copts, Idempotent())...)
		if sc.err == nil && (rep.Msg != msg || len(rep.Payload) != args.ReplyBytes) {
			sc.err = fmt.Errorf("stress: echo reply %d bytes %.40q and %d bytes payload, want %.40q and %d", len(rep.Msg), rep.Msg, len(rep.Payload), msg, args.ReplyBytes)
		}
	case 1:
		sc.kind = "echo"
		var rep rpctest.EchoReply
		sc.reply = func() string { return fmt.Sprintf("%s %s %d", rep.Msg, rep.Server, len(rep.Payload)) }
		args := &rpctest.EchoArgs{Msg: sc.id, Sleep: sleep}
		if r.IntN(10) == 0 {
			args.Fail = "boom"
		}
		sc.err = c.Call(ctx, "Echo.Echo", args, &rep, copts...)
		if sc.err == nil && rep.Msg != sc.id {
			sc.err = fmt.Errorf("stress: echo reply %q, want %q", rep.Msg, sc.id)
		}
	case 2:
		sc.kind = "exec"
		var rep rpctest.ExecReply
		sc.reply = func() string { return rep.Server }
		sc.err = c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: sc.id, Sleep: sleep}, &rep, copts...)
	case 3:
		sc.kind = "exec-idem"
		var rep rpctest.ExecReply
		sc.reply = func() string { return rep.Server }
		sc.err = c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: sc.id, Sleep: sleep}, &rep, append(copts, Idempotent())...)
	case 4:
		sc.kind = "exec-keyed"
		var rep rpctest.ExecReply
		sc.reply = func() string { return rep.Server }
		args := &rpctest.ExecArgs{ID: sc.id, Sleep: sleep}
		sc.err = c.Call(ctx, "Echo.Exec", args, &rep, append(copts, WithIdempotencyKey(""))...)
		sc.key = args.Key
	}
	sc.end = time.Now()
	if sc.reply != nil {
		sc.snap = sc.reply()
	}
	if sleep > 0 {
		od = append(od, fmt.Sprintf("sleep=%v", sleep))
	}
	sc.opts = strings.Join(od, " ")
	record(sc)
	return sc.err
}

// sentNoAnswer reports whether err, one of an *Error's Errs, is an attempt's
// error whose request may have left and got no answer (not a stop reason).
// ctx's bare error and ErrClosed may be either (do returns the first for a
// request abandoned unanswered, Close fails pending calls with the second);
// withCtx says whether to count them.
func sentNoAnswer(withCtx bool) func(error) bool {
	return func(err error) bool {
		var be *balancer.Error
		switch {
		case err == ErrOutcomeUnknown, err == ErrRetryBudget, errors.As(err, &be):
			return false
		case err == context.Canceled, err == context.DeadlineExceeded, err == ErrClosed:
			return withCtx
		}
		return noAnswer(err)
	}
}
