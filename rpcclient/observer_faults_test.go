package rpcclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// strictObserver checks where and when reports come: each must come on the
// goroutine of a Call in progress (begin .. end); anything else (a report
// after its Call returned, or from another goroutine) is stray.
type strictObserver struct {
	mu     sync.Mutex
	active map[uint64]*obsLog
	stray  []string
	warm   bool // setup calls made without begin and end: not checked
	seen   map[string]int
}

type obsLog struct {
	events []any // AttemptInfo or CallInfo, in the order reported
}

func newStrictObserver() *strictObserver {
	return &strictObserver{active: map[uint64]*obsLog{}, seen: map[string]int{}}
}

func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	n, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return n
}

func (o *strictObserver) report(ev any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.active[goid()]
	if l == nil && o.warm {
		return
	}
	if l == nil {
		o.stray = append(o.stray, fmt.Sprintf("%+v", ev))
		return
	}
	l.events = append(l.events, ev)
}

func (o *strictObserver) ObserveAttempt(a AttemptInfo) { o.report(a) }
func (o *strictObserver) ObserveCall(c CallInfo)       { o.report(c) }

func (o *strictObserver) begin() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.active[goid()] = &obsLog{}
}

func (o *strictObserver) end() *obsLog {
	o.mu.Lock()
	defer o.mu.Unlock()
	id := goid()
	l := o.active[id]
	delete(o.active, id)
	return l
}

// warmObs is warmEvery, with o not checking the warming calls.
func warmObs(t *testing.T, c *Client, o *strictObserver, n int) {
	t.Helper()
	o.setWarm(true)
	warmEvery(t, c, n)
	o.setWarm(false)
}

// setWarm turns the checks off (setup calls) or on.
func (o *strictObserver) setWarm(on bool) {
	o.mu.Lock()
	o.warm = on
	o.mu.Unlock()
}

func (o *strictObserver) strays() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.stray...)
}

// observedCall makes one Call with o watching, and returns its error and a
// description of any broken promise ("" if none).
func observedCall(o *strictObserver, c *Client, ctx context.Context, method string, args, reply any, opts ...CallOption) (error, string) {
	o.begin()
	err := c.Call(ctx, method, args, reply, opts...)
	l := o.end()
	o.mu.Lock()
	kind := "ok"
	if err != nil {
		kind = "fail"
	}
	n, hedged := 0, false
	for _, ev := range l.events {
		if a, ok := ev.(AttemptInfo); ok {
			n++
			hedged = hedged || a.Hedge
		}
	}
	o.seen[fmt.Sprintf("%s/n=%d/hedge=%v", kind, n, hedged)]++
	o.mu.Unlock()
	return err, checkObsLog(l, err)
}

func checkObsLog(l *obsLog, err error) string {
	var attempts []AttemptInfo
	var calls []CallInfo
	for i, ev := range l.events {
		switch ev := ev.(type) {
		case AttemptInfo:
			if len(calls) > 0 {
				return fmt.Sprintf("attempt %+v reported after the call (event %d)", ev, i)
			}
			attempts = append(attempts, ev)
		case CallInfo:
			calls = append(calls, ev)
		}
	}
	dump := func() string { return fmt.Sprintf("call err %v; events %+v", err, l.events) }
	if len(calls) != 1 {
		return fmt.Sprintf("%d call reports: %s", len(calls), dump())
	}
	if calls[0].Err != err {
		return fmt.Sprintf("call reported with %v, Call returned %v", calls[0].Err, err)
	}
	seen := map[int]bool{}
	for _, a := range attempts {
		if a.Attempt < 1 || a.Attempt > len(attempts) || seen[a.Attempt] {
			return fmt.Sprintf("attempt numbers not 1..%d once each: %s", len(attempts), dump())
		}
		seen[a.Attempt] = true
		if a.Start.IsZero() || a.Start.Before(calls[0].Start) || a.Start.Add(a.Duration).After(calls[0].Start.Add(calls[0].Duration)) {
			return fmt.Sprintf("attempt %+v outside its call %+v", a, calls[0])
		}
	}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return fmt.Sprintf("Call returned %T %v, not an *Error", err, err)
		}
		if e.Attempts != len(attempts) {
			return fmt.Sprintf("Error.Attempts %d, %d attempts reported: %s", e.Attempts, len(attempts), dump())
		}
		for _, a := range attempts {
			if a.Err == nil {
				return fmt.Sprintf("failed call reported a successful attempt: %s", dump())
			}
		}
		return ""
	}
	if len(attempts) == 0 {
		return "successful call with no attempt reported"
	}
	ok := 0
	for _, a := range attempts {
		if a.Err == nil {
			ok++
		}
	}
	if ok != 1 {
		return fmt.Sprintf("successful call with %d successful attempts: %s", ok, dump())
	}
	if last := attempts[len(attempts)-1]; last.Err != nil && !(errors.Is(last.Err, context.Canceled) && hedgedLog(attempts)) {
		return fmt.Sprintf("successful call whose last attempt failed: %s", dump())
	}
	return ""
}

func hedgedLog(attempts []AttemptInfo) bool {
	for _, a := range attempts {
		if a.Hedge {
			return true
		}
	}
	return false
}

// noStrays waits a little for late reports and fails t on any.
func noStrays(t *testing.T, o *strictObserver) {
	t.Helper()
	time.Sleep(50 * time.Millisecond)
	t.Logf("outcomes: %v", o.seen)
	if s := o.strays(); len(s) > 0 {
		t.Fatalf("%d reports outside their Call: %v", len(s), s)
	}
}

// The Observer's promises hold on every fault path a test can provoke with
// real servers: killed nodes, hung ones, reset connections, server errors,
// an empty budget, ctx ending in a backoff, Close, hedging, hash keys,
// idempotency keys, refused ports and a single attempt.
func TestObserverPromisesUnderFaults(t *testing.T) {
	bg := context.Background()
	type scenario struct {
		name string
		run  func(t *testing.T, o *strictObserver) []string
	}
	echo := func(d time.Duration) *rpctest.EchoArgs { return &rpctest.EchoArgs{Msg: "m", Sleep: d} }
	scenarios := []scenario{
		{"killed child mid-call", func(t *testing.T, o *strictObserver) []string {
			var bad []string
			for _, idem := range []bool{true, false} {
				child := rpctest.StartChild(t)
				live := rpctest.Start(t)
				c, _ := newTestClient(t, []string{child.Addr(), live.Addr()}, WithObserver(o), WithMaxAttempts(3),
					WithRetryBackoff(time.Millisecond, 5*time.Millisecond), withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
				warmObs(t, c, o, 2)
				time.AfterFunc(60*time.Millisecond, child.Kill)
				for range 4 {
					var opts []CallOption
					if idem {
						opts = append(opts, Idempotent())
					}
					if _, s := observedCall(o, c, bg, "Echo.Echo", echo(150*time.Millisecond), &rpctest.EchoReply{}, opts...); s != "" {
						bad = append(bad, s)
					}
				}
			}
			return bad
		}},
		{"hung nodes, attempt timeout", func(t *testing.T, o *strictObserver) []string {
			a, b := rpctest.Start(t), rpctest.Start(t)
			c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithObserver(o), WithMaxAttempts(4),
				WithAttemptTimeout(30*time.Millisecond), WithRetryBackoff(time.Millisecond, time.Millisecond), withoutNodeHealth())
			warmObs(t, c, o, 2)
			a.Hang()
			defer a.Unhang()
			var bad []string
			for i := range 6 {
				if i == 3 {
					b.Hang()
					defer b.Unhang()
				}
				for _, opts := range [][]CallOption{nil, {Idempotent()}} {
					if _, s := observedCall(o, c, bg, "Echo.Echo", echo(0), &rpctest.EchoReply{}, opts...); s != "" {
						bad = append(bad, s)
					}
				}
			}
			return bad
		}},
		{"proxy reset mid-call", func(t *testing.T, o *strictObserver) []string {
			srv := rpctest.Start(t)
			px := rpctest.NewProxy(t, srv.Addr())
			live := rpctest.Start(t)
			c, _ := newTestClient(t, []string{px.Addr(), live.Addr()}, WithObserver(o), WithMaxAttempts(3),
				WithRetryBackoff(time.Millisecond, time.Millisecond), withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
			var bad []string
			for i := range 8 {
				px.Pass()
				warmObs(t, c, o, 2)
				timer := time.AfterFunc(30*time.Millisecond, px.Reset)
				opts := []CallOption{}
				if i%2 == 0 {
					opts = append(opts, Idempotent())
				}
				if _, s := observedCall(o, c, bg, "Echo.Echo", echo(100*time.Millisecond), &rpctest.EchoReply{}, opts...); s != "" {
					bad = append(bad, s)
				}
				timer.Stop()
			}
			return bad
		}},
		{"server errors", func(t *testing.T, o *strictObserver) []string {
			srv := rpctest.Start(t)
			c, _ := newTestClient(t, []string{srv.Addr()}, WithObserver(o), WithHedging(time.Millisecond))
			var bad []string
			for _, opts := range [][]CallOption{nil, {Idempotent()}, {HashKey("k")}} {
				if _, s := observedCall(o, c, bg, "Echo.Echo", &rpctest.EchoArgs{Fail: "no"}, &rpctest.EchoReply{}, opts...); s != "" {
					bad = append(bad, s)
				}
				if _, s := observedCall(o, c, bg, "Echo.Nope", &rpctest.EchoArgs{}, &rpctest.EchoReply{}, opts...); s != "" {
					bad = append(bad, s)
				}
			}
			return bad
		}},
		{"retry budget exhausted", func(t *testing.T, o *strictObserver) []string {
			a, b := rpctest.Start(t), rpctest.Start(t)
			c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithObserver(o), WithMaxAttempts(5), WithRetryBudget(0, 0),
				WithAttemptTimeout(20*time.Millisecond), WithRetryBackoff(time.Millisecond, time.Millisecond), withoutNodeHealth())
			warmObs(t, c, o, 2)
			a.Hang()
			b.Hang()
			defer a.Unhang()
			defer b.Unhang()
			var bad []string
			for range 3 {
				err, s := observedCall(o, c, bg, "Echo.Echo", echo(0), &rpctest.EchoReply{}, Idempotent())
				if s != "" {
					bad = append(bad, s)
				}
				if !errors.Is(err, ErrRetryBudget) {
					bad = append(bad, fmt.Sprintf("want ErrRetryBudget, got %v", err))
				}
			}
			return bad
		}},
		{"ctx cancelled during the backoff", func(t *testing.T, o *strictObserver) []string {
			a := rpctest.Start(t)
			c, _ := newTestClient(t, []string{a.Addr()}, WithObserver(o), WithMaxAttempts(5),
				WithAttemptTimeout(20*time.Millisecond), WithRetryBackoff(time.Second, time.Second), withoutNodeHealth())
			warmObs(t, c, o, 1)
			a.Hang()
			defer a.Unhang()
			var bad []string
			for _, d := range []time.Duration{60 * time.Millisecond, 300 * time.Millisecond} {
				ctx, cancel := context.WithCancel(bg)
				time.AfterFunc(d, cancel)
				if _, s := observedCall(o, c, ctx, "Echo.Echo", echo(0), &rpctest.EchoReply{}, Idempotent()); s != "" {
					bad = append(bad, s)
				}
				dctx, dcancel := context.WithTimeout(bg, d)
				if _, s := observedCall(o, c, dctx, "Echo.Echo", echo(0), &rpctest.EchoReply{}, Idempotent()); s != "" {
					bad = append(bad, s)
				}
				dcancel()
			}
			return bad
		}},
		{"Close during a call", func(t *testing.T, o *strictObserver) []string {
			var bad []string
			for i, at := range []time.Duration{0, 10 * time.Millisecond, 40 * time.Millisecond, 120 * time.Millisecond} {
				a, b := rpctest.Start(t), rpctest.Start(t)
				c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithObserver(o), WithMaxAttempts(4),
					WithAttemptTimeout(30*time.Millisecond), WithRetryBackoff(50*time.Millisecond, 50*time.Millisecond),
					WithHedging(time.Duration(i%2)*5*time.Millisecond), withoutNodeHealth())
				warmObs(t, c, o, 2)
				a.Hang()
				time.AfterFunc(at, func() { c.Close() })
				for _, opts := range [][]CallOption{{Idempotent()}, nil} {
					if _, s := observedCall(o, c, bg, "Echo.Echo", echo(0), &rpctest.EchoReply{}, opts...); s != "" {
						bad = append(bad, s)
					}
				}
				a.Unhang()
			}
			return bad
		}},
		{"hedging with a slow node", func(t *testing.T, o *strictObserver) []string {
			o.setWarm(true)
			c, _, _ := slowAndFast(t, 80*time.Millisecond, WithHedging(10*time.Millisecond), WithObserver(o),
				WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
			o.setWarm(false)
			var bad []string
			for i := range 12 {
				ctx, cancel := context.WithTimeout(bg, time.Duration(20+10*i)*time.Millisecond)
				args := echo(time.Duration(i%3) * 15 * time.Millisecond)
				if i%4 == 3 {
					args.Fail = "no"
				}
				if _, s := observedCall(o, c, ctx, "Echo.Echo", args, &rpctest.EchoReply{}, Idempotent()); s != "" {
					bad = append(bad, s)
				}
				cancel()
			}
			return bad
		}},
		{"hedging, concurrent calls", func(t *testing.T, o *strictObserver) []string {
			o.setWarm(true)
			c, _, _ := slowAndFast(t, 30*time.Millisecond, WithHedging(5*time.Millisecond), WithObserver(o),
				WithAttemptTimeout(40*time.Millisecond), WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
			o.setWarm(false)
			var shared findings // the callers' goroutines add to it
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := range 15 {
						ctx, cancel := context.WithTimeout(bg, time.Duration(10+(w*7+i*3)%60)*time.Millisecond)
						_, s := observedCall(o, c, ctx, "Echo.Echo", echo(time.Duration(i%4)*8*time.Millisecond), &rpctest.EchoReply{}, Idempotent())
						cancel()
						shared.add(s)
					}
				})
			}
			wg.Wait()
			return shared.list
		}},
		{"hash keys on Maglev", func(t *testing.T, o *strictObserver) []string {
			a, b, dead := rpctest.Start(t), rpctest.Start(t), rpctest.Start(t)
			dead.Stop()
			c, _ := newTestClient(t, []string{a.Addr(), b.Addr(), dead.Addr()}, WithObserver(o), WithMaxAttempts(3),
				WithAttemptTimeout(30*time.Millisecond), WithRetryBackoff(time.Millisecond, time.Millisecond), WithHedging(5*time.Millisecond),
				withoutNodeHealth(balancer.WithPolicy(balancer.Maglev(1.25))))
			b.Hang()
			defer b.Unhang()
			var bad []string
			for i := range 12 {
				opts := []CallOption{HashKey(fmt.Sprint("key", i))}
				if i%2 == 0 {
					opts = append(opts, Idempotent())
				}
				if _, s := observedCall(o, c, bg, "Echo.Echo", echo(0), &rpctest.EchoReply{}, opts...); s != "" {
					bad = append(bad, s)
				}
			}
			return bad
		}},
		{"idempotency keys", func(t *testing.T, o *strictObserver) []string {
			a, b := rpctest.Start(t), rpctest.Start(t)
			c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithObserver(o), WithMaxAttempts(3), WithHedging(5*time.Millisecond),
				WithAttemptTimeout(30*time.Millisecond), WithRetryBackoff(time.Millisecond, time.Millisecond), withoutNodeHealth())
			warmObs(t, c, o, 2)
			var bad []string
			for i := range 8 {
				if i == 2 {
					a.Hang()
					defer a.Unhang()
				}
				if i == 5 {
					b.Hang()
					defer b.Unhang()
				}
				if _, s := observedCall(o, c, bg, "Echo.Exec", &rpctest.ExecArgs{ID: fmt.Sprint("op", i)}, &rpctest.ExecReply{}, WithIdempotencyKey("")); s != "" {
					bad = append(bad, s)
				}
			}
			// A key args cannot carry: refused before any attempt.
			if _, s := observedCall(o, c, bg, "Echo.Echo", echo(0), &rpctest.EchoReply{}, WithIdempotencyKey("k")); s != "" {
				bad = append(bad, s)
			}
			return bad
		}},
		{"refused port", func(t *testing.T, o *strictObserver) []string {
			dead := rpctest.Start(t)
			dead.Stop()
			live := rpctest.Start(t)
			var bad []string
			for _, addrs := range [][]string{{dead.Addr()}, {dead.Addr(), live.Addr()}} {
				c, _ := newTestClient(t, addrs, WithObserver(o), WithDialTimeout(100*time.Millisecond),
					WithConnectBackoff(10*time.Millisecond, 1.6, 50*time.Millisecond, 0.2), WithHedging(5*time.Millisecond))
				for _, opts := range [][]CallOption{nil, {Idempotent()}} {
					ctx, cancel := context.WithTimeout(bg, 2*time.Second)
					if _, s := observedCall(o, c, ctx, "Echo.Echo", echo(0), &rpctest.EchoReply{}, opts...); s != "" {
						bad = append(bad, s)
					}
					cancel()
				}
			}
			return bad
		}},
		{"max attempts 1", func(t *testing.T, o *strictObserver) []string {
			a, b := rpctest.Start(t), rpctest.Start(t)
			c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithObserver(o), WithMaxAttempts(1), WithHedging(5*time.Millisecond),
				WithAttemptTimeout(30*time.Millisecond), withoutNodeHealth())
			warmObs(t, c, o, 2)
			a.Hang()
			defer a.Unhang()
			var bad []string
			for range 6 {
				for _, opts := range [][]CallOption{nil, {Idempotent()}} {
					err, s := observedCall(o, c, bg, "Echo.Echo", echo(0), &rpctest.EchoReply{}, opts...)
					if s != "" {
						bad = append(bad, s)
					}
					var e *Error
					if errors.As(err, &e) && e.Attempts > 1 && !errors.As(err, new(*DialError)) {
						bad = append(bad, fmt.Sprintf("max attempts 1: %d attempts: %v", e.Attempts, err))
					}
				}
			}
			return bad
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			o := newStrictObserver()
			bad := sc.run(t, o)
			for _, s := range bad {
				t.Error(s)
			}
			noStrays(t, o)
		})
	}
}

// Seeded random scenarios: nodes of random kinds, options and call options
// at random, and a fault at a random moment of the call.
func TestObserverPromisesRandom(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	deadline := time.Now().Add(90 * time.Second)
	for seed := range seeds {
		if time.Now().After(deadline) {
			break
		}
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			o := newStrictObserver()
			var addrs []string
			var faults []func()
			var descr []string
			for range 1 + rng.IntN(3) {
				srv := rpctest.Start(t)
				switch k := rng.IntN(6); k {
				case 0:
					addrs = append(addrs, srv.Addr())
					descr = append(descr, "live")
					faults = append(faults, srv.Stop)
				case 1:
					px := rpctest.NewProxy(t, srv.Addr())
					px.Latency(time.Duration(10+rng.IntN(60)) * time.Millisecond)
					addrs = append(addrs, px.Addr())
					descr = append(descr, "slow")
					faults = append(faults, px.Reset)
				case 2:
					addrs = append(addrs, srv.Addr())
					descr = append(descr, "hung")
					srv.Hang()
					t.Cleanup(srv.Unhang)
					faults = append(faults, srv.Stop)
				case 3:
					srv.Stop()
					addrs = append(addrs, srv.Addr())
					descr = append(descr, "refused")
				case 4:
					px := rpctest.NewProxy(t, srv.Addr())
					addrs = append(addrs, px.Addr())
					descr = append(descr, "resetting")
					faults = append(faults, px.Reset, px.BlackholeResponses)
				case 5:
					addrs = append(addrs, srv.Addr())
					descr = append(descr, "hangs later")
					faults = append(faults, srv.Hang)
					t.Cleanup(srv.Unhang)
				}
			}
			opts := []Option{WithObserver(o), WithMaxAttempts(1 + rng.IntN(4)), WithDialTimeout(200 * time.Millisecond),
				WithConnectBackoff(10*time.Millisecond, 1.6, 100*time.Millisecond, 0.2),
				WithRetryBackoff(time.Duration(rng.IntN(30))*time.Millisecond, 40*time.Millisecond)}
			if rng.IntN(2) == 0 {
				opts = append(opts, WithAttemptTimeout(time.Duration(15+rng.IntN(80))*time.Millisecond))
			}
			if rng.IntN(2) == 0 {
				opts = append(opts, WithHedging(time.Duration(1+rng.IntN(20))*time.Millisecond))
			}
			if rng.IntN(4) == 0 {
				opts = append(opts, WithRetryBudget(0, 0))
			}
			pols := []balancer.Policy{balancer.RoundRobin(), balancer.P2C(), balancer.Maglev(1.25), balancer.Random()}
			opts = append(opts, withoutNodeHealth(balancer.WithPolicy(pols[rng.IntN(len(pols))])))
			c, _ := newTestClient(t, addrs, opts...)
			t.Logf("nodes %v", descr)
			// Warm what answers, so that hedges have connections.
			for range 2 * len(addrs) {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				o.begin()
				c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &rpctest.EchoReply{}, Idempotent())
				o.end()
				cancel()
			}
			closed := false
			for i := range 6 {
				var copts []CallOption
				method, args, reply := "Echo.Echo", any(&rpctest.EchoArgs{Sleep: time.Duration(rng.IntN(40)) * time.Millisecond}), any(&rpctest.EchoReply{})
				switch rng.IntN(4) {
				case 0:
					copts = append(copts, Idempotent())
				case 1:
					method, args, reply = "Echo.Exec", &rpctest.ExecArgs{ID: fmt.Sprint("op", i)}, &rpctest.ExecReply{}
					copts = append(copts, WithIdempotencyKey(""))
				case 2:
					copts = append(copts, HashKey(fmt.Sprint("k", rng.IntN(5))))
				}
				if ea, ok := args.(*rpctest.EchoArgs); ok && rng.IntN(5) == 0 {
					ea.Fail = "no"
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(30+rng.IntN(400))*time.Millisecond)
				var timers []*time.Timer
				at := time.Duration(rng.IntN(80)) * time.Millisecond
				switch f := rng.IntN(6); {
				case f == 0:
					timers = append(timers, time.AfterFunc(at, cancel))
				case f == 1 && !closed && i > 2:
					closed = true
					timers = append(timers, time.AfterFunc(at, func() { c.Close() }))
				case f == 2 && len(faults) > 0:
					timers = append(timers, time.AfterFunc(at, faults[rng.IntN(len(faults))]))
				}
				err, s := observedCall(o, c, ctx, method, args, reply, copts...)
				for _, tm := range timers {
					tm.Stop()
				}
				cancel()
				if s != "" {
					t.Errorf("call %d (%s %v): %s", i, method, copts, s)
				}
				_ = err
			}
			noStrays(t, o)
		})
	}
}

// Hedged calls under churn: two or three nodes behind proxies of random
// latency, some resetting, some failing with server errors, calls from
// several goroutines with random deadlines and attempt timeouts.
func TestObserverPromisesHedgedChurn(t *testing.T) {
	deadline := time.Now().Add(60 * time.Second)
	for seed := range 20 {
		if time.Now().After(deadline) {
			break
		}
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 11))
			o := newStrictObserver()
			var addrs []string
			var pxs []*rpctest.Proxy
			var srvs []*rpctest.Server
			for range 2 + rng.IntN(2) {
				srv := rpctest.Start(t)
				px := rpctest.NewProxy(t, srv.Addr())
				addrs = append(addrs, px.Addr())
				pxs = append(pxs, px)
				srvs = append(srvs, srv)
			}
			opts := []Option{WithObserver(o), WithHedging(time.Duration(1+rng.IntN(8)) * time.Millisecond),
				WithMaxAttempts(1 + rng.IntN(4)), WithRetryBackoff(time.Millisecond, 5*time.Millisecond),
				WithConnectBackoff(5*time.Millisecond, 1.6, 50*time.Millisecond, 0.2), WithDialTimeout(100 * time.Millisecond),
				withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin()))}
			if rng.IntN(2) == 0 {
				opts = append(opts, WithAttemptTimeout(time.Duration(5+rng.IntN(40))*time.Millisecond))
			}
			c, _ := newTestClient(t, addrs, opts...)
			o.setWarm(true)
			warmEvery(t, c, len(addrs))
			o.setWarm(false)
			for _, px := range pxs {
				px.Latency(time.Duration(rng.IntN(30)) * time.Millisecond)
			}
			stop := make(chan struct{})
			var churn sync.WaitGroup
			crng := rand.New(rand.NewPCG(uint64(seed), 13))
			churn.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(5+crng.IntN(40)) * time.Millisecond):
					}
					i := crng.IntN(len(pxs))
					switch crng.IntN(4) {
					case 0:
						pxs[i].Reset()
					case 1:
						pxs[i].Latency(time.Duration(crng.IntN(40)) * time.Millisecond)
					case 2:
						srvs[i].Hang()
					case 3:
						srvs[i].Unhang()
					}
				}
			})
			var shared findings // the callers' goroutines add to it
			var wg sync.WaitGroup
			for w := range 4 {
				wseed := uint64(seed*10 + w)
				wg.Go(func() {
					r := rand.New(rand.NewPCG(wseed, 17))
					for range 15 {
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(5+r.IntN(120))*time.Millisecond)
						args := &rpctest.EchoArgs{Sleep: time.Duration(r.IntN(20)) * time.Millisecond}
						if r.IntN(6) == 0 {
							args.Fail = "no"
						}
						copts := []CallOption{Idempotent()}
						if r.IntN(3) == 0 {
							copts = append(copts, HashKey(fmt.Sprint(r.IntN(4))))
						}
						if r.IntN(4) == 0 {
							copts = append(copts, Hedge(time.Duration(r.IntN(5))*time.Millisecond))
						}
						_, s := observedCall(o, c, ctx, "Echo.Echo", args, &rpctest.EchoReply{}, copts...)
						cancel()
						shared.add(s)
					}
				})
			}
			wg.Wait()
			close(stop)
			churn.Wait()
			for _, s := range srvs {
				s.Unhang()
			}
			for _, s := range shared.list {
				t.Error(s)
			}
			noStrays(t, o)
		})
	}
}

// findings collects the problems that concurrent callers find; add ignores
// the empty string (no problem).
type findings struct {
	mu   sync.Mutex
	list []string
}

func (f *findings) add(s string) {
	if s == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, s)
}
