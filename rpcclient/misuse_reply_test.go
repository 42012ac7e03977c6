package rpcclient

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A reply that is not a pointer (a caller's slip: sum instead of &sum)
// cannot receive anything. The call must fail with an error saying so,
// and must not take the connection, and the calls in flight beside it,
// down with it.
func TestNonPointerReplyHarmsNoOtherCall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func() any
	}{
		{"int", func() any { var sum int; return sum }},
		{"nil *int", func() any { var p *int; return p }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Arith{gate: make(chan struct{})}
			c, _ := newTestClient(t, []string{serveArith(t, &a)}, withoutNodeHealth())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			other := make(chan error, 1)
			go func() {
				var r int
				other <- c.Call(ctx, "Arith.Slow", Pair{7, 0}, &r) // not idempotent
			}()
			waitCalls(t, &a, 1)
			err := c.Call(ctx, "Arith.Add", Pair{2, 3}, tc.reply())
			t.Logf("Call with a %s reply: %v", tc.name, err)
			if !errors.Is(err, ErrCodec) {
				t.Fatalf("a %s reply: %v; want ErrCodec", tc.name, err)
			}
			if n := a.calls.Load(); n != 1 {
				t.Fatalf("server saw %d calls; want 1 (a call whose reply cannot be received is not sent)", n)
			}
			close(a.gate)
			if err := <-other; err != nil {
				t.Fatalf("the non-idempotent call beside the bad reply failed: %v", err)
			}
		})
	}
}
