package rpcclient

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// A Client over a watcher that can never answer (closed before New, as a
// caller that got the ownership backwards does) must not leave its calls
// waiting for a first State that cannot come: a call with no deadline
// would hang for ever.
func TestCallOverAClosedWatcherFails(t *testing.T) {
	w, err := discovery.StaticAddrs(serveArith(t, &Arith{}))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	c, err := New(w)
	if err != nil {
		t.Logf("New over a closed watcher: %v", err)
		return
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		var r int
		done <- c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Call over a closed watcher: %v; want it to wrap discovery.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		c.Close() // releases the call
		<-done
		t.Fatalf("Call (no deadline) over a closed watcher still waiting after 3 s")
	}
}
