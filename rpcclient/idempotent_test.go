package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// WithIdempotentMethods makes the listed methods behave as if every call
// passed Idempotent(): a call whose reply was lost is retried on the other
// node. Without the table, the same call is not retried and reports that
// its outcome is unknown.
func TestIdempotentMethodsTable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		table []string
	}{{"without table", nil}, {"with table", []string{"Echo.Exec"}}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := rpctest.Start(t, rpctest.WithName("a")), rpctest.Start(t, rpctest.WithName("b"))
			px := rpctest.NewProxy(t, a.Addr())
			px.BlackholeResponses() // a executes every request; its replies are lost
			// The attempt timeout is what ends a call's wait on a; b's
			// replies must come well within it, also on a loaded -race run.
			c, _ := newTestClient(t, []string{px.Addr(), b.Addr()}, WithAttemptTimeout(500*time.Millisecond),
				WithIdempotentMethods(tc.table...), WithHeartbeat(0, 0),
				WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
			ran := func(s *rpctest.Server, id string) bool {
				return slices.ContainsFunc(s.Executions(), func(l string) bool { return strings.HasPrefix(l, id+" ") })
			}
			// eventually reports whether id ran on s within 2 s: a lost
			// reply may leave a's execution a moment behind the call.
			eventually := func(s *rpctest.Server, id string) bool {
				for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					if ran(s, id) {
						return true
					}
					if time.Now().After(deadline) {
						return false
					}
				}
			}
			// Call until one call has gone to a first (round robin gets
			// there within a few calls). Where a call went is read from
			// the servers' execution logs, not from its time: a ran a call
			// that went there, long before the client gave up on it after
			// the attempt timeout.
			for i := range 20 {
				id := fmt.Sprintf("op-%d", i)
				var r rpctest.ExecReply
				err := c.Call(context.Background(), "Echo.Exec", &rpctest.ExecArgs{ID: id}, &r)
				if tc.table == nil && err != nil {
					if !errors.Is(err, ErrOutcomeUnknown) {
						t.Fatalf("a call whose reply was lost, not declared idempotent: %v, want ErrOutcomeUnknown", err)
					}
					if !eventually(a, id) {
						t.Fatalf("call %s failed (%v) but never ran on a", id, err)
					}
					if ran(b, id) {
						t.Fatal("a call not declared idempotent ran again on b")
					}
					return
				}
				if err != nil || r.Server != "b" {
					t.Fatalf("call %s: %q, %v; want b's reply", id, r.Server, err)
				}
				if ran(a, id) {
					// It went to a first, and its reply was lost; b's
					// reply means the call was retried.
					if tc.table == nil {
						t.Fatalf("call %s ran on a, lost its reply, and was retried on b without being declared idempotent", id)
					}
					return
				}
			}
			t.Fatal("20 round-robin calls never reached a")
		})
	}
}

// An explicit idempotency key is the one the server sees, even on args
// reused from an earlier call; WithIdempotencyKey("") keeps the key the
// args carry, so that calling again is recognised as a repeat.
func TestExplicitIdempotencyKeyIsSent(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()})
	args := &rpctest.ExecArgs{ID: "first"}
	var r rpctest.ExecReply
	if err := c.Call(context.Background(), "Echo.Exec", args, &r, WithIdempotencyKey("op-1")); err != nil {
		t.Fatal(err)
	}
	args.ID = "second"
	if err := c.Call(context.Background(), "Echo.Exec", args, &r, WithIdempotencyKey("op-2")); err != nil {
		t.Fatal(err)
	}
	args.ID = "again"
	if err := c.Call(context.Background(), "Echo.Exec", args, &r, WithIdempotencyKey("")); err != nil {
		t.Fatal(err)
	}
	want := []string{"first op-1", "second op-2", "again op-2"}
	if got := srv.Executions(); !slices.Equal(got, want) {
		t.Fatalf("the server executed %q, want %q", got, want)
	}
}

// A call that is not idempotent, whose request left and whose context then
// ended, says its outcome is unknown (the server still runs it), and still
// wraps the context's error. The same call made idempotent does not.
func TestDeadlineAfterSendIsOutcomeUnknown(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()})
	warmEvery(t, c, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var r rpctest.ExecReply
	err := c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: "x", Sleep: 300 * time.Millisecond}, &r)
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want ErrOutcomeUnknown and context.DeadlineExceeded", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	err = c.Call(ctx2, "Echo.Exec", &rpctest.ExecArgs{ID: "y", Sleep: 300 * time.Millisecond}, &r, Idempotent())
	if errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("idempotent: err = %v; want context.DeadlineExceeded only", err)
	}
}

// A call that is not idempotent, pending when the client closes, says its
// outcome is unknown, and its message says each reason once.
func TestCloseAfterSendIsOutcomeUnknown(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()})
	warmEvery(t, c, 1)
	before := srv.Calls()
	errc := make(chan error, 1)
	go func() {
		var r rpctest.ExecReply
		errc <- c.Call(context.Background(), "Echo.Exec", &rpctest.ExecArgs{ID: "x", Sleep: 300 * time.Millisecond}, &r)
	}()
	for deadline := time.Now().Add(2 * time.Second); srv.Calls() == before; { // ours reached the handler
		if time.Now().After(deadline) {
			t.Fatal("the call never reached the server")
		}
		time.Sleep(time.Millisecond)
	}
	c.Close()
	err := <-errc
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v; want ErrOutcomeUnknown and ErrClosed", err)
	}
	if msg := err.Error(); strings.Count(msg, ErrClosed.Error()) != 1 || !strings.Contains(msg, ErrOutcomeUnknown.Error()) {
		t.Fatalf("err = %q; want the outcome unknown and the client closed, each said once", msg)
	}
}

// WithMaxAttempts bounds the attempts of an idempotent call whose requests
// left and got no answer (attempt timeouts), and the default is 3: each
// attempt runs on the server, so one attempt too many is one execution too
// many. Four nodes, every one of which swallows replies, so that a fourth
// attempt would have a node to go to.
func TestMaxAttemptsBoundsRetriesThatLeft(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want int
	}{
		{"WithMaxAttempts(2)", []Option{WithMaxAttempts(2)}, 2},
		{"default", nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srvs []*rpctest.Server
			var addrs []string
			for range 4 {
				s := rpctest.Start(t)
				px := rpctest.NewProxy(t, s.Addr())
				px.BlackholeResponses()
				srvs = append(srvs, s)
				addrs = append(addrs, px.Addr())
			}
			opts := append([]Option{WithAttemptTimeout(100 * time.Millisecond), WithHeartbeat(0, 0),
				WithRetryBudget(1, 1000), WithRetryBackoff(time.Millisecond, time.Millisecond), withoutNodeHealth()}, tc.opts...)
			c, _ := newTestClient(t, addrs, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var r rpctest.EchoReply
			err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrAttemptTimeout) {
				t.Fatalf("call to nodes that never answer: %v; want an *Error over ErrAttemptTimeout", err)
			}
			time.Sleep(200 * time.Millisecond) // the requests reach the servers
			var ran int64
			for _, s := range srvs {
				ran += s.Calls()
			}
			if e.Attempts != tc.want || ran != int64(tc.want) {
				t.Fatalf("%d attempts (Tried %v), %d requests reached the servers; want %d of each", e.Attempts, e.Tried, ran, tc.want)
			}
		})
	}
}
