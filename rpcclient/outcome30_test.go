package rpcclient

import (
	"context"
	"errors"
	"net/rpc"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

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
			for i := 0; i < 20; i++ {
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
		{"reply of the wrong type", breaker.Failure, func(t *testing.T, c *Client, _ *rpctest.Proxy) error {
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
