package rpcclient

import (
	"context"
	"errors"
	"testing"
	"time"
)

// valueKeyed implements KeyedArgs with value receivers, as a caller who
// copied IdempotencyKey's receiver to SetIdempotencyKey would: the key it
// is given is set on a copy and lost.
type valueKeyed struct {
	A, B int
	Key  string
}

func (a valueKeyed) SetIdempotencyKey(k string) { a.Key = k } //nolint:staticcheck // the caller's slip under test
func (a valueKeyed) IdempotencyKey() string     { return a.Key }

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
