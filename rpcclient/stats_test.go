package rpcclient

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// checkStats fails the test unless c's counters are want.
func checkStats(t *testing.T, c *Client, step string, want Stats) {
	t.Helper()
	if got := c.Stats(); got != want {
		t.Fatalf("%s: stats\n got %+v\nwant %+v", step, got, want)
	}
}

// Stats counts failed calls, calls whose outcome is unknown and retries,
// against a real server whose Slow method outlasts the attempt timeout; a
// successful call counts nowhere.
func TestStatsCountFailuresRetriesAndUnknownOutcomes(t *testing.T) {
	a := Arith{gate: make(chan struct{})} // serveArith opens it at cleanup
	c, _ := newTestClient(t, []string{serveArith(t, &a)}, WithAttemptTimeout(30*time.Millisecond),
		withoutNodeHealth())
	ctx := context.Background()
	var r int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r); err != nil {
		t.Fatal(err)
	}
	checkStats(t, c, "a call that succeeded", Stats{})

	// Not idempotent, timed out after its request left: no retry.
	if err := c.Call(ctx, "Arith.Slow", Pair{1, 0}, &r); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("not idempotent: %v, want ErrOutcomeUnknown", err)
	}
	checkStats(t, c, "a call whose outcome is unknown", Stats{Failed: 1, OutcomeUnknown: 1})

	// Idempotent: three attempts (the default), so two retries.
	err := c.Call(ctx, "Arith.Slow", Pair{1, 0}, &r, Idempotent())
	if e := (*Error)(nil); !errors.As(err, &e) || e.Attempts != 3 {
		t.Fatalf("idempotent: %v, want 3 attempts", err)
	}
	checkStats(t, c, "an idempotent call that timed out 3 times", Stats{Failed: 2, OutcomeUnknown: 1, Retries: 2})

	// The server's own error is the call's outcome: failed, not retried.
	if err := c.Call(ctx, "Arith.Div", Pair{1, 0}, &r, Idempotent()); !errors.As(err, new(rpc.ServerError)) {
		t.Fatalf("division by zero: %v, want the server's error", err)
	}
	// A call refused before anything is sent counts as failed too.
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, r); !errors.Is(err, ErrCodec) {
		t.Fatalf("reply not a pointer: %v, want ErrCodec", err)
	}
	checkStats(t, c, "a server error and a bad reply", Stats{Failed: 4, OutcomeUnknown: 1, Retries: 2})
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r); err != nil || r != 3 {
		t.Fatalf("Add: %d, %v", r, err)
	}
	checkStats(t, c, "another call that succeeded", Stats{Failed: 4, OutcomeUnknown: 1, Retries: 2})
}

// A retry the budget refuses is counted, and is no retry.
func TestStatsCountRetriesTheBudgetRefused(t *testing.T) {
	a := Arith{gate: make(chan struct{})} // serveArith opens it at cleanup
	c, _ := newTestClient(t, []string{serveArith(t, &a)}, WithAttemptTimeout(30*time.Millisecond),
		WithRetryBudget(0, 0), withoutNodeHealth())
	var r int
	if err := c.Call(context.Background(), "Arith.Slow", Pair{1, 0}, &r, Idempotent()); !errors.Is(err, ErrRetryBudget) {
		t.Fatalf("idempotent call with no retry budget: %v, want ErrRetryBudget", err)
	}
	checkStats(t, c, "one retry refused", Stats{Failed: 1, BudgetExhausted: 1})
}

// A failed dial is an attempt that sent nothing: the call moves to the
// other node, and Unsent counts it; the call does not fail.
func TestStatsCountUnsentAttempts(t *testing.T) {
	var a Arith
	live := serveArith(t, &a)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // refused from now on
	c, _ := newTestClient(t, []string{dead, live}, WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	// Round robin picks the dead node within a few calls; its dial fails
	// once, and the backoff and quarantine keep it from a second.
	for i := 0; i < 50 && endpointStatus(c, dead).Dials == 0; i++ {
		var sum int
		if err := c.Call(context.Background(), "Arith.Add", Pair{i, 1}, &sum); err != nil || sum != i+1 {
			t.Fatalf("call %d: %d, %v", i, sum, err)
		}
	}
	if d := endpointStatus(c, dead).Dials; d != 1 {
		t.Fatalf("the dead node was dialled %d times; want 1", d)
	}
	checkStats(t, c, "one failed dial", Stats{Unsent: 1})
}

// When the only node fails to dial, the call waits for discovery's refresh
// (ResolveNow), at most twice, and RefreshWaits counts the waits.
func TestStatsCountRefreshWaits(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	c, _ := newTestClient(t, []string{dead}, WithConnectBackoff(20*time.Millisecond, 1.6, time.Second, 0.2),
		withoutNodeHealth())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sum int
	err = c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum)
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("the only node refuses: %v, want a DialError", err)
	}
	s := c.Stats()
	if s.RefreshWaits != 2 || s.Failed != 1 || s.Retries != 0 {
		t.Fatalf("stats %+v; want 2 refresh waits, 1 failed call, no retry (error: %v)", s, err)
	}
	if s.Unsent < 1 {
		t.Fatalf("stats %+v; the failed dials are attempts that sent nothing", s)
	}
	t.Logf("stats %+v", s)
}

// Backup requests of hedged calls, and those that won, are counted; so are
// backups the retry budget refused.
func TestStatsCountHedges(t *testing.T) {
	c, _, _ := slowAndFast(t, 500*time.Millisecond, WithHedging(20*time.Millisecond),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	const calls = 20
	served := map[string]int{}
	for range calls {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, &r, Idempotent()); err != nil {
			t.Fatal(err)
		}
		served[r.Server]++
	}
	s := c.Stats()
	// Round robin starts half the calls on the slow node, whose backups
	// on the fast node answer first: every reply is the fast node's. The
	// backups do not move round robin's turn: when they did, every call
	// started on the slow node and needed one (20 backups of 20 calls).
	if served["fast"] != calls {
		t.Fatalf("served by %v; the fast node should win every call", served)
	}
	if s.HedgeWins < 1 || s.Hedges < s.HedgeWins || s.Hedges < calls/4 || s.Hedges > calls*3/4 {
		t.Fatalf("stats %+v; want a backup for about half the %d calls (those started on the slow node), at least one of them winning",
			s, calls)
	}
	if s.Failed != 0 || s.Retries != 0 || s.BudgetExhausted != 0 {
		t.Fatalf("stats %+v; no call failed or was retried", s)
	}
	t.Logf("with a budget: stats %+v", s)

	// No budget: the backups are refused, and the slow node answers.
	c, _, _ = slowAndFast(t, 100*time.Millisecond, WithHedging(10*time.Millisecond), WithRetryBudget(0, 0),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	served = map[string]int{}
	for i := 0; i < 10 && served["slow"] == 0; i++ {
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, &r, Idempotent()); err != nil {
			t.Fatal(err)
		}
		served[r.Server]++
	}
	s = c.Stats()
	if served["slow"] == 0 || s.BudgetExhausted < 1 || s.Hedges != 0 || s.HedgeWins != 0 {
		t.Fatalf("served by %v, stats %+v; with no budget, want the slow node's replies and refused backups only",
			served, s)
	}
	t.Logf("without: served by %v, stats %+v", served, s)
}
