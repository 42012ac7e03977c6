package rpcclient

import (
	"context"
	"errors"
	"net/rpc"
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
