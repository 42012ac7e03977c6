package rpcclient

import (
	"context"
	"errors"
	"net/rpc"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// lateCtx is a context whose deadline passes before its Done closes, as a
// timer that fires late does (expired's reason to read the deadline).
type lateCtx struct {
	context.Context // Done, Err, Value
	dl              time.Time
}

func (c lateCtx) Deadline() (time.Time, bool) { return c.dl, true }

// A call that is not idempotent and got the server's error reply knows its
// outcome: the server answered. A deadline that passed after the answer
// came must not make it "outcome unknown".
func TestServerReplyAfterTheDeadlineIsNotOutcomeUnknown(t *testing.T) {
	srv := rpctest.Start(t)
	c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth())
	warmEvery(t, c, 1)
	done, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ctx := lateCtx{done, time.Now().Add(100 * time.Millisecond)}
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: 200 * time.Millisecond, Fail: "refused"}, &r)
	var se rpc.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v; want the server's error", err)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; the server answered, the outcome is known", err)
	}
}

// A call that is not idempotent and got the server's error reply knows its
// outcome also when the client closes as the reply comes in: Close must not
// make it "outcome unknown" (the closed path checked only isNotSent).
func TestServerReplyDuringCloseIsNotOutcomeUnknown(t *testing.T) {
	srv := rpctest.Start(t)
	bad := 0
	for round := 0; round < 40 && bad == 0; round++ {
		c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth(), WithHeartbeat(0, 0))
		warmEvery(t, c, 1)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 8 {
			wg.Go(func() {
				for {
					var r rpctest.EchoReply
					err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Fail: "refused"}, &r)
					var se rpc.ServerError
					if errors.As(err, &se) && errors.Is(err, ErrOutcomeUnknown) {
						mu.Lock()
						if bad == 0 {
							t.Errorf("err = %v; the server answered, the outcome is known", err)
						}
						bad++
						mu.Unlock()
					}
					if errors.Is(err, ErrClosed) {
						return
					}
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		c.Close()
		wg.Wait()
	}
}

// TestAnsweredCallRacingCloseIsNotOutcomeUnknown: a non-idempotent call
// whose server answered with an application error has a known outcome (it
// ran, and failed), whatever Close does meanwhile. A burst of such replies
// is delivered while Close runs: none of the calls that got the server's
// answer may say the outcome is unknown. Before, a call that saw the client
// closed right after its reply reported ErrOutcomeUnknown (and ErrClosed)
// on top of the server's error: Call's closed check tested isNotSent, not
// noAnswer, as its deadline check does.
func TestAnsweredCallRacingCloseIsNotOutcomeUnknown(t *testing.T) {
	bad := 0
	for round := 0; round < 20 && bad == 0; round++ {
		srv := rpctest.Start(t)
		c, _ := newTestClient(t, []string{srv.Addr()}, withoutNodeHealth())
		var r rpctest.EchoReply
		if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{}, &r); err != nil {
			t.Fatal(err) // connect first
		}
		srv.Hang()
		const n = 300
		var wg sync.WaitGroup
		var first sync.Once
		returned := make(chan struct{})
		var answered, unknownToo atomic.Int64
		for range n {
			wg.Go(func() {
				var r rpctest.EchoReply
				err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Fail: "boom"}, &r)
				first.Do(func() { close(returned) })
				var se rpc.ServerError
				if errors.As(err, &se) {
					answered.Add(1)
					if errors.Is(err, ErrOutcomeUnknown) {
						if unknownToo.Add(1) == 1 {
							t.Logf("an answered call says: %v", err)
						}
					}
				}
			})
		}
		for deadline := time.Now().Add(5 * time.Second); endpointStatus(c, srv.Addr()).Pending < n; {
			if time.Now().After(deadline) {
				t.Fatalf("the calls are not all pending: %+v", endpointStatus(c, srv.Addr()))
			}
			time.Sleep(time.Millisecond)
		}
		srv.Unhang()
		<-returned
		c.Close()
		wg.Wait()
		srv.Stop()
		if unknownToo.Load() > 0 {
			bad++
			t.Errorf("round %d: %d of %d calls the server answered with its error say ErrOutcomeUnknown", round, unknownToo.Load(), answered.Load())
		}
	}
}
