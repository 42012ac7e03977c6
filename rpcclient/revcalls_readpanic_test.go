package rpcclient

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

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
