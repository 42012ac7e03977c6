package rpcclient

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// The server side shipped for the heartbeat, RegisterHeartbeat, answers the
// client's pings: an idle connection to it stays up through many heartbeat
// intervals. When its answers stop (here a proxy drops every reply), the
// next unanswered ping closes the connection and fails the pending call
// with ErrHeartbeat, long before any call deadline. (A server without the
// heartbeat would instead be guarded by the read timeout: see
// TestReadTimeoutWithoutHeartbeatService.)
func TestRegisterHeartbeatAnswersPings(t *testing.T) {
	px := rpctest.NewProxy(t, serveArith(t, &Arith{}))
	c, _ := newTestClient(t, []string{px.Addr()}, WithHeartbeat(20*time.Millisecond, 100*time.Millisecond),
		WithReadTimeout(time.Minute), WithMaxAttempts(1))
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{A: 1, B: 2}, &sum); err != nil || sum != 3 {
		t.Fatalf("Add = %d, %v", sum, err)
	}
	time.Sleep(300 * time.Millisecond) // about 15 heartbeat intervals, idle
	if st := endpointStatus(c, px.Addr()); st.State != Ready || st.Dials != 1 {
		t.Fatalf("after an idle spell with answered pings: %+v, want Ready after 1 dial", st)
	}
	px.BlackholeResponses()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := c.Call(ctx, "Arith.Add", Pair{A: 1, B: 2}, &sum)
	took := time.Since(start)
	if !errors.Is(err, ErrHeartbeat) {
		t.Fatalf("call on a connection whose replies stopped: %v, want ErrHeartbeat", err)
	}
	if took > 2*time.Second {
		t.Fatalf("the heartbeat took %v to fail the call; interval 20 ms, timeout 100 ms", took)
	}
	t.Logf("pending call failed by the heartbeat after %v", took)
}
