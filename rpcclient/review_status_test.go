package rpcclient

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// An endpoint whose only connection was retired (another caller's args did
// not encode) while a slow call drains on it has no connection that takes
// calls: the next call dials (see liveLocked, and run: "a retired
// connection takes no calls: it does not count"). Its status said Ready
// ("at least one connection is up") until that next call came, for as long
// as the slow call took.
func TestRetiredOnlyConnectionIsNotReady(t *testing.T) {
	a := &Arith{gate: make(chan struct{})}
	addr := serveArith(t, a)
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0), withoutNodeHealth())
	t.Cleanup(func() { close(a.gate) })
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &sum); err != nil {
		t.Fatal(err)
	}
	go func() {
		var r int
		c.Call(context.Background(), "Arith.Slow", Pair{1, 2}, &r)
	}()
	waitCalls(t, a, 2)
	var r int
	if err := c.Call(context.Background(), "Arith.Add", badArgs{V: unregistered{1}}, &r); !errors.Is(err, ErrCodec) {
		t.Fatalf("a call whose args do not encode: %v", err)
	}
	st := endpointStatus(c, addr)
	if st.Pending != 1 {
		t.Fatalf("%+v: want the slow call pending on the retired connection", st)
	}
	if st.State != Idle {
		t.Fatalf("the only connection retired, draining a call, no dial: the endpoint reports %v, want %v (the next call dials)", st.State, Idle)
	}
	// The next call dials and gets a connection that takes calls.
	if err := c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r); err != nil {
		t.Fatal(err)
	}
	if st := endpointStatus(c, addr); st.State != Ready || st.Dials != 2 {
		t.Fatalf("after the redial: %+v, want Ready after 2 dials", st)
	}
}

// LastClose says why the connection closed: one retired because a
// caller's deadline passed while its request was encoded (nothing of it
// was sent) did not close because a request "could not be encoded".
func TestLastCloseOfAConnectionRetiredForALateRequest(t *testing.T) {
	addr := serveSlowEnc(t)
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth())
	var r int
	if err := c.Call(context.Background(), "SlowEncSvc.Take", SlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Call(ctx, "SlowEncSvc.Take", SlowEnc{Delay: 150 * time.Millisecond}, &r); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the late request: %v", err)
	}
	st := endpointStatus(c, addr)
	if st.LastClose == nil || !isRetired(st.LastClose) {
		t.Fatalf("%+v: want the connection retired and closed", st)
	}
	if msg := st.LastClose.Error(); strings.Contains(msg, "could not be encoded") && !strings.Contains(msg, "ctx") {
		t.Fatalf("LastClose %q: the request encoded fine; its deadline passed meanwhile", msg)
	}
}
