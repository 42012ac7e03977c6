package rpcclient

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
)

// A call waiting for a refreshed endpoint set after its dial failed and the
// pick that followed found nothing (the node quarantined, no panic mode)
// fails with ErrClosed when the client closes meanwhile, as Close promises
// the calls pending.
func TestCloseDuringRefreshAfterAFailedPickIsErrClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // dials are refused
	c, _ := newTestClient(t, []string{dead}, WithDialTimeout(10*time.Second),
		withoutNodeHealth(balancer.WithPanicThreshold(0)))
	errc := make(chan error, 1)
	go func() {
		var r int
		errc <- c.Call(context.Background(), "Arith.Add", Pair{1, 2}, &r, Idempotent())
	}()
	// The dial fails at once; the call then waits for discovery.
	time.Sleep(300 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v; want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call did not end at Close")
	}
}
