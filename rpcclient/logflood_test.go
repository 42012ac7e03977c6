package rpcclient

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/logbuf"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// floodRun drives many calls at addrs (good plus a faulty node) for d, at
// Debug level, and returns the log lines and how many calls were made.
func floodRun(t *testing.T, addrs []string, d time.Duration, call func(c *Client, ctx context.Context) error, opts ...Option) ([]string, int64) {
	t.Helper()
	var logs logbuf.Buffer
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]Option{WithBalancer(balancer.WithLogger(lg)), WithConnectBackoff(50*time.Millisecond, 1.6, 200*time.Millisecond, 0.2),
		WithDialTimeout(100 * time.Millisecond), WithHeartbeat(50*time.Millisecond, 100*time.Millisecond),
		WithLogger(lg)}, opts...)
	c, _ := newTestClient(t, addrs, opts...)
	var calls atomic.Int64
	runLoad(32, 1<<30, d, func(ctx context.Context, w, i int) error {
		calls.Add(1)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		return call(c, cctx)
	})
	c.Close()
	var lines []string
	for l := range strings.Lines(logs.String()) {
		lines = append(lines, l)
	}
	return lines, calls.Load()
}

func checkFlood(t *testing.T, lines []string, calls int64, bound int) {
	t.Helper()
	kinds := map[string]int{}
	for _, l := range lines {
		i := strings.Index(l, "msg=")
		j := strings.Index(l[i:], " service=")
		if j < 0 || !strings.Contains(l, "addr=") && !strings.Contains(l, "panic mode") {
			t.Errorf("line without service or addr: %s", l)
			j = len(l) - i - 1
		}
		kinds[l[i:i+j]]++
	}
	t.Logf("%d calls, %d lines: %v", calls, len(lines), kinds)
	if len(lines) > bound {
		t.Errorf("%d log lines for %d calls; want at most %d (one per backoff step):\n%s", len(lines), calls, bound, strings.Join(lines[:min(20, len(lines))], ""))
	}
}

func arithCall(c *Client, ctx context.Context) error {
	var r int
	return c.Call(ctx, "Arith.Add", Pair{1, 1}, &r, Idempotent())
}

func echoCall(c *Client, ctx context.Context) error {
	var r rpctest.EchoReply
	return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "x"}, &r, Idempotent())
}

const floodFor = 1500 * time.Millisecond

// flap makes the proxies reset every connection, then pass them, in turn,
// every period, until the returned function is called (which waits for it).
func flap(period time.Duration, ps ...*rpctest.Proxy) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			case <-time.After(period):
			}
			for _, p := range ps {
				if i%2 == 0 {
					p.Reset()
				} else {
					p.Pass()
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

func TestLogFloodRefused(t *testing.T) {
	lines, n := floodRun(t, []string{serveArith(t, &Arith{}), refusingAddr(t)}, floodFor, arithCall)
	checkFlood(t, lines, n, 40)
}

func TestLogFloodBlackhole(t *testing.T) {
	lines, n := floodRun(t, []string{serveArith(t, &Arith{}), rpctest.Blackhole(t)}, floodFor, arithCall)
	checkFlood(t, lines, n, 40)
}

func TestLogFloodReset(t *testing.T) {
	p := rpctest.NewProxy(t, serveArith(t, &Arith{}))
	p.Reset()
	lines, n := floodRun(t, []string{serveArith(t, &Arith{}), p.Addr()}, floodFor, arithCall)
	checkFlood(t, lines, n, 40)
}

func TestLogFloodFlapping(t *testing.T) {
	p := rpctest.NewProxy(t, serveArith(t, &Arith{}))
	stop := flap(10*time.Millisecond, p)
	lines, n := floodRun(t, []string{serveArith(t, &Arith{}), p.Addr()}, floodFor, arithCall)
	stop()
	checkFlood(t, lines, n, 60)
}

func TestLogFloodServerErrors(t *testing.T) {
	lines, n := floodRun(t, []string{serveArith(t, &Arith{})}, floodFor, func(c *Client, ctx context.Context) error {
		var r int
		return c.Call(ctx, "Arith.Div", Pair{1, 0}, &r, Idempotent())
	})
	checkFlood(t, lines, n, 10)
}

func TestLogFloodStopped(t *testing.T) {
	good := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName("g"))
	bad := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName("b"))
	go func() { time.Sleep(200 * time.Millisecond); bad.Stop() }()
	lines, n := floodRun(t, []string{good.Addr(), bad.Addr()}, floodFor, echoCall)
	bad.Cont()
	checkFlood(t, lines, n, 40)
}

func TestLogFloodKilled(t *testing.T) {
	good := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName("g"))
	bad := rpctest.StartChild(t, rpctest.WithChildHeartbeat(), rpctest.WithChildName("b"))
	go func() { time.Sleep(200 * time.Millisecond); bad.Kill() }()
	lines, n := floodRun(t, []string{good.Addr(), bad.Addr()}, floodFor, echoCall)
	checkFlood(t, lines, n, 40)
}

func TestLogFloodAllDead(t *testing.T) {
	lines, n := floodRun(t, []string{refusingAddr(t), refusingAddr(t)}, floodFor, arithCall)
	checkFlood(t, lines, n, 100)
}

func TestLogFloodAllFlapping(t *testing.T) {
	var addrs []string
	var ps []*rpctest.Proxy
	for range 2 {
		p := rpctest.NewProxy(t, serveArith(t, &Arith{}))
		ps = append(ps, p)
		addrs = append(addrs, p.Addr())
	}
	stop := flap(15*time.Millisecond, ps...)
	lines, n := floodRun(t, addrs, floodFor, arithCall)
	stop()
	checkFlood(t, lines, n, 80)
}
