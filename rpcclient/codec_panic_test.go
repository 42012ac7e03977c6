package rpcclient

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// panicArgs are args whose encoding panics (a bug in a caller's GobEncode).
type panicArgs struct{}

func (panicArgs) GobEncode() ([]byte, error) { panic("GobEncode bug") }

// A caller's GobEncode that panics (recovered further up, as net/http does
// for a handler) must not leave the connection's write slot held, nor the
// pick's Done uncalled: the next call on the connection goes through, and
// the node's in-flight count is back to zero.
func TestPanicInArgsEncodingLeavesConnectionUsable(t *testing.T) {
	var a Arith
	addr := serveArith(t, &a)
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var sum int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { recover() }()
		var r int
		err := c.Call(ctx, "Arith.Add", panicArgs{}, &r)
		if err == nil || !errors.Is(err, ErrCodec) {
			t.Errorf("a panicking GobEncode: err = %v, want an ErrCodec", err)
		}
	}()
	for _, st := range c.Balancer().Status() {
		if st.InFlight != 0 {
			t.Errorf("node %s: %d in flight after the panicking call; its Done was never called", st.Endpoint.Addr, st.InFlight)
		}
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if err := c.Call(ctx2, "Arith.Add", Pair{3, 4}, &sum); err != nil || sum != 7 {
		t.Fatalf("the next call after a panicking GobEncode: %d, %v", sum, err)
	}
}

// panicReply is a reply whose decoding panics (a bug in a caller's
// GobDecode).
type panicReply struct{}

func (*panicReply) GobDecode([]byte) error { panic("GobDecode bug") }

// A reply whose GobDecode panics is decoded on the connection's reader
// goroutine, where the caller cannot recover the panic: it must fail that
// call with an ErrCodec (as a reply that does not decode does), not crash
// the process. Run in a child process, since before the fix the whole
// process dies.
func TestPanicInReplyDecodingFailsTheCall(t *testing.T) {
	if os.Getenv("REVCALLS_READPANIC_CHILD") != "" {
		var a Arith
		c, _ := newTestClient(t, []string{serveArith(t, &a)})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := c.Call(ctx, "Arith.Blob", Pair{}, &panicReply{})
		if !errors.Is(err, ErrCodec) {
			t.Fatalf("err = %v; want ErrCodec", err)
		}
		var sum int
		if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum); err != nil || sum != 3 {
			t.Fatalf("the next call: %d, %v", sum, err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicInReplyDecodingFailsTheCall$", "-test.count=1")
	cmd.Env = append(os.Environ(), "REVCALLS_READPANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the child failed (%v):\n%s", err, out)
	}
}
