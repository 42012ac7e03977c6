package rpcclient

import (
	"context"
	"errors"
	"net/rpc"
	"testing"
	"time"
)

// BigSlowEnc is an argument of Size bytes whose encoding takes Delay on
// the caller's side (GobEncode sleeps), as a large value does.
type BigSlowEnc struct {
	Delay time.Duration
	Size  int
}

func (s BigSlowEnc) GobEncode() ([]byte, error) {
	time.Sleep(s.Delay)
	return make([]byte, s.Size+1), nil
}
func (s *BigSlowEnc) GobDecode([]byte) error { return nil }

type BigEncSvc struct{}

func (BigEncSvc) Take(a BigSlowEnc, r *int) error     { *r = 7; return nil }
func (BigEncSvc) Sleep(d time.Duration, r *int) error { time.Sleep(d); *r = 1; return nil }

// A caller that cancels its ctx while its request (larger than writeChunk)
// is still being encoded sends nothing, and the calls in flight beside it
// on the connection get their replies, as when its deadline passes during
// the encoding (errEncodedLate). The first 4 KiB (what bufio held) went out
// unwatched, then the watch on the large write fired at once: a truncated
// frame, and the connection closed under a non-idempotent call beside it,
// whose outcome was then unknown.
func TestCancelWhileEncodingALargeRequestSparesTheOtherCalls(t *testing.T) {
	addr := serveRPC(t, func(s *rpc.Server) error {
		if err := s.Register(BigEncSvc{}); err != nil {
			return err
		}
		return RegisterHeartbeat(s)
	}, func() {})
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth())
	var r int
	if err := c.Call(context.Background(), "BigEncSvc.Take", BigSlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		var r int // not idempotent: a cut leaves its outcome unknown
		slow <- c.Call(context.Background(), "BigEncSvc.Sleep", 500*time.Millisecond, &r)
	}()
	waitPending(t, c, addr)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel) // during the 300 ms encoding
	err := c.Call(ctx, "BigEncSvc.Take", BigSlowEnc{Delay: 300 * time.Millisecond, Size: 1 << 20}, &r)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("a request cancelled while it was encoded: %v, want the cancellation, nothing sent", err)
	}
	if err := <-slow; err != nil {
		t.Errorf("the non-idempotent call in flight beside it: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	r = 0
	if err := c.Call(ctx2, "BigEncSvc.Take", BigSlowEnc{Size: 1 << 20}, &r); err != nil || r != 7 {
		t.Fatalf("the next call: %d, %v", r, err)
	}
}

// A small request (it fits the write buffer) whose ctx is cancelled while
// it is encoded is sent whole, as it always was: not sending it would
// retire its connection (the gob stream holds part of it), a redial for
// every such cancellation.
func TestCancelWhileEncodingASmallRequestKeepsTheConnection(t *testing.T) {
	addr := serveRPC(t, func(s *rpc.Server) error {
		if err := s.Register(BigEncSvc{}); err != nil {
			return err
		}
		return RegisterHeartbeat(s)
	}, func() {})
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth())
	var r int
	if err := c.Call(context.Background(), "BigEncSvc.Take", BigSlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	if err := c.Call(ctx, "BigEncSvc.Take", BigSlowEnc{Delay: 100 * time.Millisecond, Size: 100}, &r); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err) // sent whole: its reply may beat the cancel
	}
	if err := c.Call(context.Background(), "BigEncSvc.Take", BigSlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	if st := endpointStatus(c, addr); st.Dials != 1 || st.LastClose != nil {
		t.Fatalf("endpoint %+v: want the one connection kept", st)
	}
}
