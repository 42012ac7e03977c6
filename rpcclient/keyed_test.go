package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// A call made retryable by WithIdempotencyKey is still a call that is not
// idempotent: when it fails after its request may have reached the server,
// its error says the outcome is unknown (Call's doc), so that the caller
// knows to call again with the same args (WithIdempotencyKey's doc) rather
// than report a failure of something that ran.
func TestKeyedCallThatMayHaveRunIsOutcomeUnknown(t *testing.T) {
	srv := rpctest.Start(t)
	px := rpctest.NewProxy(t, srv.Addr())
	c, _ := newTestClient(t, []string{px.Addr()}, withoutNodeHealth(), WithHeartbeat(0, 0),
		WithMaxAttempts(2), WithRetryBackoff(time.Millisecond, time.Millisecond))
	warmEvery(t, c, 1)
	px.BlackholeResponses() // requests reach the server, replies are dropped

	// Every attempt timed out.
	args := &rpctest.ExecArgs{ID: "attempts"}
	var r rpctest.ExecReply
	err := c.Call(context.Background(), "Echo.Exec", args, &r, WithIdempotencyKey(""), AttemptTimeout(100*time.Millisecond))
	if err == nil || !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("keyed call whose attempts all timed out: err = %v; want ErrOutcomeUnknown", err)
	}
	// The deadline ended the only attempt.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	err = c.Call(ctx, "Echo.Exec", &rpctest.ExecArgs{ID: "deadline"}, &r, WithIdempotencyKey(""))
	if err == nil || !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("keyed call whose deadline passed after sending: err = %v; want ErrOutcomeUnknown and DeadlineExceeded", err)
	}
	ran := map[string]int{}
	for _, line := range srv.Executions() {
		ran[line]++
	}
	t.Logf("server executions: %v", ran)
}

// A keyed call whose reply arrived but does not decode ran on the server,
// which answered: like a plain call's, its error is no ErrOutcomeUnknown.
func TestKeyedCallWithAnUndecodableReplyIsNotOutcomeUnknown(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth())
	var wrong int // Echo.Exec replies with a struct
	err := c.Call(context.Background(), "Echo.Exec", &rpctest.ExecArgs{ID: "undecodable"}, &wrong, WithIdempotencyKey(""))
	if !errors.Is(err, ErrCodec) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("keyed call whose reply does not decode: err = %v; want ErrCodec and no ErrOutcomeUnknown", err)
	}
	err = c.Call(context.Background(), "Echo.Exec", &rpctest.ExecArgs{ID: "undecodable-plain"}, &wrong)
	if !errors.Is(err, ErrCodec) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("plain call whose reply does not decode: err = %v; want ErrCodec and no ErrOutcomeUnknown", err)
	}
}

// A call idempotent on its own (Idempotent(), or the method table) that also
// carries a key is hedged like any idempotent call: the key does not make
// it a keyed call, which is not hedged (TestKeyedCallIsNotHedged).
func TestIdempotentCallWithAKeyIsHedged(t *testing.T) {
	c, _, _ := slowAndFast(t, 500*time.Millisecond, WithHedging(20*time.Millisecond),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	for i := range 4 { // round robin: at least one starts on the slow node
		var r rpctest.ExecReply
		t0 := time.Now()
		err := c.Call(context.Background(), "Echo.Exec", &rpctest.ExecArgs{ID: fmt.Sprint("k", i)}, &r, WithIdempotencyKey(""), Idempotent())
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(t0); took > 400*time.Millisecond {
			t.Fatalf("an idempotent keyed call took %v with hedging at 20 ms and a fast node; want it hedged", took)
		}
	}
}
