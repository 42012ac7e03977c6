package rpcclient

import (
	"context"
	"errors"
	"net/rpc"
	"testing"
	"time"
)

// SlowEnc is an argument whose encoding takes Delay on the caller's side
// (GobEncode sleeps), as a large or intricate value does: gob encodes a
// whole message before it writes a byte of it.
type SlowEnc struct{ Delay time.Duration }

func (s SlowEnc) GobEncode() ([]byte, error) {
	time.Sleep(s.Delay)
	return []byte{1}, nil
}
func (s *SlowEnc) GobDecode([]byte) error { return nil }

type SlowEncSvc struct{}

func (SlowEncSvc) Take(a SlowEnc, r *int) error { *r = 7; return nil }

// A request that takes this side longer than the heartbeat timeout to
// encode holds the write slot without a byte leaving: the ping waiting
// behind it is behind this process, not a silent peer. It closed the
// connection with ErrHeartbeat (and every call on it), and since each
// attempt encodes anew on a silent connection, such a request could never
// be sent.
func TestSlowEncodingDoesNotFailTheHeartbeat(t *testing.T) {
	addr := serveRPC(t, func(s *rpc.Server) error {
		if err := s.Register(SlowEncSvc{}); err != nil {
			return err
		}
		return RegisterHeartbeat(s)
	}, func() {})
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth(), WithHeartbeat(100*time.Millisecond, 200*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r int
	if err := c.Call(ctx, "SlowEncSvc.Take", SlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // silent: the heartbeat pings
	r = 0
	if err := c.Call(ctx, "SlowEncSvc.Take", SlowEnc{Delay: 800 * time.Millisecond}, &r); err != nil || r != 7 {
		t.Fatalf("a request that takes 800 ms to encode, heartbeat 100 ms / 200 ms: %d, %v", r, err)
	}
	if st := endpointStatus(c, addr); st.Dials != 1 || st.LastClose != nil {
		t.Fatalf("endpoint %+v: want the one connection kept", st)
	}
}

func (SlowEncSvc) Sleep(d time.Duration, r *int) error { time.Sleep(d); *r = 1; return nil }

// A caller whose deadline passes while its request is still being encoded
// sends nothing, and the calls in flight beside it on the connection get
// their replies. The write, attempted with the deadline past, timed out
// before a byte left and closed the connection: every call on it failed
// for the one caller's lateness, a non-idempotent one with its outcome
// unknown.
func TestDeadlinePassedWhileEncodingSparesTheOtherCalls(t *testing.T) {
	addr := serveRPC(t, func(s *rpc.Server) error {
		if err := s.Register(SlowEncSvc{}); err != nil {
			return err
		}
		return RegisterHeartbeat(s)
	}, func() {})
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth())
	var r int
	if err := c.Call(context.Background(), "SlowEncSvc.Take", SlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		var r int // not idempotent: a cut would leave its outcome unknown
		slow <- c.Call(context.Background(), "SlowEncSvc.Sleep", time.Second, &r)
	}()
	waitPending(t, c, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Call(ctx, "SlowEncSvc.Take", SlowEnc{Delay: 300 * time.Millisecond}, &r)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a request whose deadline passed while it was encoded: %v, want the deadline, nothing sent", err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("the call in flight beside it: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := c.Call(ctx2, "SlowEncSvc.Take", SlowEnc{}, &r); err != nil || r != 7 {
		t.Fatalf("the next call: %d, %v", r, err)
	}
}
