package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// A hedged leg whose connection this side closed for another caller's sake
// (a *localCloseError) is no outcome of its node, as on the unhedged path
// (nodeOutcome): the node did nothing wrong. The hedged path told the
// balancer the raw error, so one such close tripped the node's breaker.
func TestHedgedLegOnALocallyClosedConnectionIsNoOutcome(t *testing.T) {
	for _, hedged := range []bool{false, true} {
		t.Run(fmt.Sprintf("hedged=%v", hedged), func(t *testing.T) {
			srv := rpctest.Start(t)
			c, _ := newTestClient(t, []string{srv.Addr()}, WithBalancer(
				balancer.WithBreakers(breaker.Config{ConsecutiveFailures: 1, OpenTimeout: time.Minute, MaxOpenTimeout: time.Minute}),
				balancer.WithOutlierDetection(balancer.OutlierConfig{Disabled: true})))
			warmEvery(t, c, 1)
			cn := c.endpoint(srv.Addr()).ready()
			opts := []CallOption{Idempotent()}
			if hedged {
				opts = append(opts, Hedge(time.Hour)) // one node: no backup, but the hedged path
			}
			errc := make(chan error, 1)
			go func() {
				var r rpctest.EchoReply
				errc <- c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Sleep: 300 * time.Millisecond}, &r, opts...)
			}()
			for deadline := time.Now().Add(5 * time.Second); cn.inflight() == 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the call never went out")
				}
			}
			// What a write deadline of another caller's does to the connection.
			cn.fail(&localCloseError{fmt.Errorf("%w: another caller's write deadline", ErrConnClosed)})
			if err := <-errc; err != nil {
				t.Fatalf("the call, retried after the local close: %v", err)
			}
			for _, s := range c.Balancer().Status() {
				if s.Breaker != breaker.Closed {
					t.Fatalf("a connection closed on this side was held against the node: breaker %v", s.Breaker)
				}
			}
		})
	}
}

// A call made retryable by an idempotency key is still not idempotent
// (see call's keyed): WithHedging's doc says such calls are never hedged,
// and WithIdempotencyKey's that the key makes them retryable, not that two
// requests of one call may run at once on two nodes. A keyed call on a
// slow node ran there and, hedged, on the fast node too.
func TestKeyedCallIsNotHedged(t *testing.T) {
	c, slow, fast := slowAndFast(t, 300*time.Millisecond, WithHedging(20*time.Millisecond),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	onSlow := 0
	for i := 0; i < 20 && onSlow < 2; i++ {
		var r rpctest.ExecReply
		args := &rpctest.ExecArgs{ID: fmt.Sprintf("op-%d", i)}
		if err := c.Call(context.Background(), "Echo.Exec", args, &r, WithIdempotencyKey("")); err != nil {
			t.Fatal(err)
		}
		if r.Server == "slow" {
			onSlow++
		}
		if len(slow.Executions()) > 0 {
			break // one went to the slow node first
		}
	}
	time.Sleep(400 * time.Millisecond) // a request sent to the slow node lands
	if d := rpctest.Duplicates(slow.Executions(), fast.Executions()); len(d) != 0 {
		t.Fatalf("keyed calls ran on two nodes at once (hedged): %v", d)
	}
	if len(slow.Executions()) == 0 {
		t.Fatal("no keyed call started on the slow node, so none could have been hedged")
	}
}

// An idempotent call with a nil reply (Call: "nil to discard the reply") is
// hedged like any other, as WithHedging says of idempotent calls. hedged
// returned at once for a nil reply, so such a call started on a slow node
// waited for it whatever the hedge delay.
func TestNilReplyCallIsHedged(t *testing.T) {
	c, slow, _ := slowAndFast(t, 500*time.Millisecond, WithHedging(20*time.Millisecond),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	before := slow.Calls()
	var worst time.Duration
	for range 6 {
		t0 := time.Now()
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, nil, Idempotent()); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(t0))
	}
	if worst > 400*time.Millisecond {
		t.Fatalf("slowest idempotent call with a nil reply took %v: not hedged (delay 20 ms, slow node 500 ms)", worst)
	}
	time.Sleep(600 * time.Millisecond) // a request sent to the slow node lands
	if slow.Calls() == before {
		t.Fatal("no call started on the slow node, so none needed a backup")
	}
	nothingInFlight(t, c)
}

// When a hedged call's winner comes in while the losing leg's reply is still
// arriving (a large reply on a slow link: the very node hedging steers
// around), the loser is dropped: its reply is the leg's own, so nothing
// waits for it and its connection stays up for the other calls on it.
// withdraw went through abandon, which waited 10 ms and then closed the
// loser's connection: every other call on it failed (a non-idempotent one
// with ErrOutcomeUnknown), and the winner came back 10-20 ms late.
func TestHedgeLoserWithAReplyArrivingKeepsItsConnection(t *testing.T) {
	a := rpctest.Start(t, rpctest.WithName("a"))
	b := rpctest.Start(t, rpctest.WithName("b"))
	pa := rpctest.NewProxy(t, a.Addr())
	pb := rpctest.NewProxy(t, b.Addr())
	pb.Throttle(0, 1<<20) // b's replies trickle at 1 MiB/s
	c, _ := newTestClient(t, []string{pa.Addr(), pb.Addr()}, WithHedging(20*time.Millisecond),
		WithHeartbeat(time.Minute, time.Minute), withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())))
	warmEvery(t, c, 2)
	pa.Latency(60 * time.Millisecond)
	cnB := c.endpoint(pb.Addr()).ready()
	// Another caller's non-idempotent request in flight on b's connection.
	other := make(chan error, 1)
	go func() {
		var r rpctest.ExecReply
		other <- cnB.do(context.Background(), "Echo.Exec", &rpctest.ExecArgs{ID: "other", Sleep: 100 * time.Millisecond}, &r)
	}()
	time.Sleep(10 * time.Millisecond)
	var r rpctest.EchoReply
	t0 := time.Now()
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: "m", ReplyBytes: 512 << 10}, &r, Idempotent()); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	t.Logf("won by %s after %v", r.Server, took)
	if r.Server != "a" {
		t.Fatalf("b won (%s) with its reply trickling", r.Server)
	}
	if err := <-other; err != nil {
		t.Fatalf("the other caller's request on b's connection failed: %v", err)
	}
	if !cnB.alive() {
		t.Fatalf("b's connection was closed: %v", cnB.failure())
	}
}

// A hedged call that the caller's own deadline ends is not an attempt
// timeout (attemptTimedOut: only when ctx has not ended), even with a
// per-attempt timeout set: the *Error must not claim ErrAttemptTimeout,
// which says the node was slow and is what callers count as its fault.
func TestHedgedCallEndedByTheCallersDeadlineIsNoAttemptTimeout(t *testing.T) {
	a, b := rpctest.Start(t), rpctest.Start(t)
	c, _ := newTestClient(t, []string{a.Addr(), b.Addr()}, WithHeartbeat(0, 0), withoutNodeHealth())
	warm, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	for range 4 { // a connection to each node, for the backup
		var r rpctest.EchoReply
		if err := c.Call(warm, "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: time.Second}, &r, Idempotent(),
		Hedge(20*time.Millisecond), AttemptTimeout(5*time.Second))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hedged call past the caller's deadline: %v; want context.DeadlineExceeded", err)
	}
	if errors.Is(err, ErrAttemptTimeout) {
		t.Fatalf("hedged call ended by the caller's 150ms deadline, attempt timeout 5s: %v; want no ErrAttemptTimeout", err)
	}
}
