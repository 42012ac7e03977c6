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

// valueKeyed implements KeyedArgs with value receivers, as a caller who
// copied IdempotencyKey's receiver to SetIdempotencyKey would: the key it
// is given is set on a copy and lost.
type valueKeyed struct {
	A, B int
	Key  string
}

//lint:ignore SA4005 the caller's slip under test
func (a valueKeyed) SetIdempotencyKey(k string) { a.Key = k }

func (a valueKeyed) IdempotencyKey() string { return a.Key }

// WithIdempotencyKey promises that a non-empty key is always the one sent,
// and the call is then retried after its request may have run, counting on
// the server to recognise the repeat by its key. Args whose
// SetIdempotencyKey does not keep the key would be retried with no key at
// all: the call must fail at once, before anything is sent, saying why.
func TestKeyThatDoesNotStickIsRefused(t *testing.T) {
	a := &Arith{}
	c, _ := newTestClient(t, []string{serveArith(t, a)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, key := range []string{"order-42", ""} {
		var r int
		err := c.Call(ctx, "Arith.Add", valueKeyed{A: 1, B: 2}, &r, WithIdempotencyKey(key))
		var ce *Error
		if err == nil || !errors.As(err, &ce) || ce.Attempts != 0 {
			t.Fatalf("WithIdempotencyKey(%q) with args whose SetIdempotencyKey loses the key: %v (result %d); want an error before any attempt", key, err, r)
		}
		t.Logf("WithIdempotencyKey(%q): %v", key, err)
	}
	if n := a.calls.Load(); n != 0 {
		t.Fatalf("the server ran %d calls sent without their key", n)
	}
}
