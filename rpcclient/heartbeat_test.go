package rpcclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"sync/atomic"
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
	// Pings every 20 ms, each allowed 500 ms: one late answer on a loaded
	// -race run must not close the connection, while a ping that gets
	// no answer closes it well within the idle spell.
	const every, timeout, idle = 20 * time.Millisecond, 500 * time.Millisecond, 1500 * time.Millisecond
	px := rpctest.NewProxy(t, serveArith(t, &Arith{}))
	c, _ := newTestClient(t, []string{px.Addr()}, WithHeartbeat(every, timeout),
		WithReadTimeout(time.Minute), WithMaxAttempts(1))
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{A: 1, B: 2}, &sum); err != nil || sum != 3 {
		t.Fatalf("Add = %d, %v", sum, err)
	}
	time.Sleep(idle) // dozens of heartbeat intervals, idle; three timeouts
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
	// One or two ping timeouts (a ping that times out while bytes still
	// move, or within a backlog's grace, is tried again): 0.5-1.0 s. The
	// call's deadline is 10 s and the read timeout a minute.
	if took > 6*timeout {
		t.Fatalf("the heartbeat took %v to fail the call; interval %v, timeout %v", took, every, timeout)
	}
	t.Logf("pending call failed by the heartbeat after %v", took)
}

// throttled is a proxy in front of addr that passes requests on at about
// up bytes per second and replies at about down (0: full speed).
func throttled(t *testing.T, addr string, up, down int) string {
	px := rpctest.NewProxy(t, addr)
	px.Throttle(up, down)
	return px.Addr()
}

// A request that takes longer to write than the heartbeat timeout, to a
// peer that drains it slowly but steadily, is not mistaken for a hung peer:
// the ping cannot get out while the request holds the connection, but the
// bytes moving say the peer is alive. A peer that drains nothing is still
// caught (TestBlockedWriteIsBounded).
func TestSlowLargeRequestOutlivesTheHeartbeat(t *testing.T) {
	srv := rpctest.Start(t)
	addr := throttled(t, srv.Addr(), 4<<20, 0)
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(100*time.Millisecond, 300*time.Millisecond),
		WithMaxAttempts(1), WithMaxMessageSize(32<<20), withoutNodeHealth())
	warmEvery(t, c, 1)
	msg := strings.Repeat("x", 8<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: msg}, &r); err != nil || r.Msg != msg {
		t.Fatalf("an 8 MiB request at about 4 MiB/s with a 300 ms heartbeat timeout: %v", err)
	}
	took := time.Since(start)
	if took < time.Second {
		t.Fatalf("the request took %v; the test needs it to outlast the heartbeat timeout several times", took)
	}
	t.Logf("8 MiB request in %v", took.Round(time.Millisecond))
}

// A call whose deadline passes while its reply is still arriving returns
// at once: the connection, whose reply stream is blocked behind that reply
// for every call on it, is closed after a short grace, instead of holding
// the caller until the whole reply has been read into its reply value.
func TestDeadlineDuringASlowReplyReturns(t *testing.T) {
	srv := rpctest.Start(t)
	addr := throttled(t, srv.Addr(), 0, 4<<20)
	c, _ := newTestClient(t, []string{addr}, WithMaxAttempts(1), WithMaxMessageSize(32<<20), withoutNodeHealth())
	warmEvery(t, c, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	var r rpctest.EchoReply
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{ReplyBytes: 8 << 20}, &r, Idempotent())
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an 8 MiB reply at about 4 MiB/s with a 300 ms deadline: %v", err)
	}
	if took > time.Second {
		t.Fatalf("Call returned %v after its start, with a 300 ms deadline; want it soon after the deadline", took)
	}
	t.Logf("returned after %v: %v", took.Round(time.Millisecond), err)
	var small rpctest.EchoReply
	if err := c.Call(context.Background(), "Echo.Echo", &rpctest.EchoArgs{Msg: "m"}, &small); err != nil || small.Msg != "m" {
		t.Fatalf("the next call: %v", err)
	}
}

// sidecar is a proxy on loopback in front of target that takes in at once
// whatever its client sends (a sidecar with large buffers: the client's
// kernel sees every byte acknowledged) and passes it on at rate bytes per
// second; replies pass at full speed. While held is set it passes nothing
// on: the application behind it hangs.
type sidecar struct {
	l    net.Listener
	held atomic.Bool
}

func startSidecar(t *testing.T, target string, rate int) *sidecar {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sidecar{l: l}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			cc, err := l.Accept()
			if err != nil {
				return
			}
			sc, err := net.Dial("tcp", target)
			if err != nil {
				cc.Close()
				continue
			}
			chunks := make(chan []byte, 4096) // 4096 reads of up to 32 KiB: more than any test sends
			wg.Go(func() {                    // take in
				defer close(chunks)
				for {
					b := make([]byte, 32<<10)
					n, err := cc.Read(b)
					if n > 0 {
						chunks <- b[:n]
					}
					if err != nil {
						return
					}
				}
			})
			wg.Go(func() { // pass on, at rate
				defer sc.Close()
				step := rate / 50 // every 20 ms
				for b := range chunks {
					for len(b) > 0 {
						for s.held.Load() {
							select {
							case <-done:
								return
							case <-time.After(10 * time.Millisecond):
							}
						}
						n := min(step, len(b))
						if _, err := sc.Write(b[:n]); err != nil {
							return
						}
						b = b[n:]
						select {
						case <-done:
							return
						case <-time.After(20 * time.Millisecond):
						}
					}
				}
			})
			wg.Go(func() { // replies
				io.Copy(cc, sc)
				cc.Close()
			})
			wg.Go(func() {
				<-done
				cc.Close()
				sc.Close()
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		close(done)
		wg.Wait()
	})
	return s
}

// behindSidecar returns a client, with a 200 ms heartbeat timeout and one
// connection up, to a server with the heartbeat behind a sidecar passing
// 2 MiB/s on.
func behindSidecar(t *testing.T) (*Client, *sidecar) {
	t.Helper()
	srv := rpctest.Start(t, rpctest.WithHeartbeat())
	sc := startSidecar(t, srv.Addr(), 2<<20)
	c, _ := newTestClient(t, []string{sc.l.Addr().String()}, WithHeartbeat(100*time.Millisecond, 200*time.Millisecond),
		WithMaxAttempts(1), WithMaxMessageSize(32<<20), withoutNodeHealth())
	warmEvery(t, c, 1)
	return c, sc
}

// A peer that takes a large request into its buffers at once and reads it
// slowly (a sidecar forwarding at 2 MiB/s) shows nothing moving while the
// ping waits behind the request: every byte is acknowledged and no reply
// comes. The heartbeat gives it time to read what it took (1 s per MiB,
// minDigestRate) before it calls it hung, so the call succeeds (review
// finding: the connection was closed with ErrHeartbeat). A peer that
// stops reading is still caught, once that time is up.
func TestBufferedLargeRequestOutlivesTheHeartbeat(t *testing.T) {
	c, sc := behindSidecar(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	msg := strings.Repeat("x", 3<<20)
	start := time.Now()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: msg}, &r); err != nil || r.Msg != msg {
		t.Fatalf("a 3 MiB request through a sidecar passing 2 MiB/s, heartbeat timeout 200 ms: %v", err)
	}
	took := time.Since(start)
	if took < time.Second {
		t.Fatalf("the request took %v; the test needs it to outlast the heartbeat timeout several times", took)
	}
	t.Logf("3 MiB request through the sidecar in %v", took.Round(time.Millisecond))

	// The application behind the sidecar hangs: 2 MiB buy 2 s of patience.
	sc.held.Store(true)
	start = time.Now()
	err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: msg[:2<<20]}, &r)
	took = time.Since(start)
	if !errors.Is(err, ErrHeartbeat) {
		t.Fatalf("a call to a hung peer behind a sidecar: %v after %v; want ErrHeartbeat", err, took)
	}
	if took > 5*time.Second {
		t.Errorf("the heartbeat took %v to find the hung peer; want about 2 s (backlog) + 300 ms", took)
	}
	t.Logf("hung peer behind the sidecar found after %v", took.Round(time.Millisecond))
}

// The grace is for bytes the peer has not vouched for: a reply to a call
// written before a large request does not vouch for the request (review
// finding: such a reply ended the grace, and the heartbeat closed the
// connection under the large request).
func TestGraceSurvivesAReplyToAnEarlierCall(t *testing.T) {
	c, _ := behindSidecar(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	early := make(chan error, 1)
	go func() {
		var r rpctest.EchoReply
		early <- c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Sleep: 350 * time.Millisecond}, &r)
	}()
	time.Sleep(20 * time.Millisecond) // the small call is written first
	msg := strings.Repeat("x", 3<<20)
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: msg}, &r); err != nil {
		t.Errorf("a 3 MiB request through the 2 MiB/s sidecar, beside a small call answered after 350 ms: %v", err)
	}
	if err := <-early; err != nil {
		t.Errorf("the small call: %v", err)
	}
}

// A reply this side takes long to decode (or a reader starved of CPU)
// holds the ping's answer unread in the socket; the heartbeat must not take
// that for a hung peer. It used to close the connection after the ping's
// timeout, failing the call beside the slow one: outcome unknown.
func TestHeartbeatSparesAConnectionBusyDecoding(t *testing.T) {
	a := Arith{gate: make(chan struct{})}
	c, _ := newTestClient(t, []string{serveArith(t, &a)}, withoutNodeHealth(),
		WithHeartbeat(100*time.Millisecond, 300*time.Millisecond))
	beside := make(chan error, 1)
	go func() {
		var r int
		beside <- c.Call(context.Background(), "Arith.Slow", Pair{7, 0}, &r) // not idempotent
	}()
	waitCalls(t, &a, 1)
	// Its reply decodes for 1.5 s: five heartbeat timeouts.
	if err := c.Call(context.Background(), "Arith.Blob", Pair{}, &Blob{Delay: 1500 * time.Millisecond}); err != nil {
		t.Fatalf("the slow-decoding call: %v", err)
	}
	close(a.gate)
	if err := <-beside; err != nil {
		t.Fatalf("the call beside the slow-decoding one failed: %v", err)
	}
}

// SlowEnc is an argument of Size bytes (and one more) whose encoding takes
// Delay on the caller's side (GobEncode sleeps), as a large or intricate
// value does: gob encodes a whole message before it writes a byte of it.
type SlowEnc struct {
	Delay time.Duration
	Size  int
}

func (s SlowEnc) GobEncode() ([]byte, error) {
	time.Sleep(s.Delay)
	return make([]byte, s.Size+1), nil
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
	addr := serveSlowEnc(t)
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
	encodeUntilCtxEnds(t, 0, context.DeadlineExceeded, func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 100*time.Millisecond)
	})
}

// encodeUntilCtxEnds makes a call whose request of size bytes takes 300 ms
// to encode, with the ctx start returns, which must end (with want) 100 ms
// in, while a non-idempotent call is in flight beside it on the one
// connection, and checks that the request was not sent, that the call
// beside it got its reply, and that the next call succeeds.
func encodeUntilCtxEnds(t *testing.T, size int, want error, start func() (context.Context, context.CancelFunc)) {
	t.Helper()
	addr := serveSlowEnc(t)
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth())
	var r int
	if err := c.Call(context.Background(), "SlowEncSvc.Take", SlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		var r int // not idempotent: a cut would leave its outcome unknown
		slow <- c.Call(context.Background(), "SlowEncSvc.Sleep", 500*time.Millisecond, &r)
	}()
	waitPending(t, c, addr)
	ctx, cancel := start()
	defer cancel()
	err := c.Call(ctx, "SlowEncSvc.Take", SlowEnc{Delay: 300 * time.Millisecond, Size: size}, &r)
	if !errors.Is(err, want) || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("a request whose ctx ended while it was encoded: %v, want %v, nothing sent", err, want)
	}
	if err := <-slow; err != nil {
		t.Errorf("the non-idempotent call in flight beside it: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	r = 0
	if err := c.Call(ctx2, "SlowEncSvc.Take", SlowEnc{Size: size}, &r); err != nil || r != 7 {
		t.Fatalf("the next call: %d, %v", r, err)
	}
}

// serveSlowEnc serves SlowEncSvc and the heartbeat on loopback.
func serveSlowEnc(t *testing.T) string {
	return serveRPC(t, func(s *rpc.Server) error {
		if err := s.Register(SlowEncSvc{}); err != nil {
			return err
		}
		return RegisterHeartbeat(s)
	}, func() {})
}

// A caller that cancels its ctx while its request (larger than writeChunk)
// is still being encoded sends nothing, and the calls in flight beside it
// on the connection get their replies, as when its deadline passes during
// the encoding (errEncodedLate). The first 4 KiB (what bufio held) went out
// unwatched, then the watch on the large write fired at once: a truncated
// frame, and the connection closed under a non-idempotent call beside it,
// whose outcome was then unknown.
func TestCancelWhileEncodingALargeRequestSparesTheOtherCalls(t *testing.T) {
	encodeUntilCtxEnds(t, 1<<20, context.Canceled, func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel) // during the 300 ms encoding
		return ctx, cancel
	})
}

// A small request (it fits the write buffer) whose ctx is cancelled while
// it is encoded is sent whole, as it always was: not sending it would
// retire its connection (the gob stream holds part of it), a redial for
// every such cancellation.
func TestCancelWhileEncodingASmallRequestKeepsTheConnection(t *testing.T) {
	addr := serveSlowEnc(t)
	c, _ := newTestClient(t, []string{addr}, withoutNodeHealth())
	var r int
	if err := c.Call(context.Background(), "SlowEncSvc.Take", SlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	if err := c.Call(ctx, "SlowEncSvc.Take", SlowEnc{Delay: 100 * time.Millisecond, Size: 100}, &r); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err) // sent whole: its reply may beat the cancel
	}
	if err := c.Call(context.Background(), "SlowEncSvc.Take", SlowEnc{}, &r); err != nil {
		t.Fatal(err)
	}
	if st := endpointStatus(c, addr); st.Dials != 1 || st.LastClose != nil {
		t.Fatalf("endpoint %+v: want the one connection kept", st)
	}
}

type bufRWC struct{ bytes.Buffer }

func (*bufRWC) Close() error { return nil }

// A request that fits the write buffer exactly (4096 bytes with its header)
// is written whole by its one write, bufio's Flush: errEncodedCancelled's
// doc and Write's comment say such a request "is sent whole, as before",
// only one that outgrew the buffer is refused. The test len(p) >= bufSize
// refused it, and its connection was retired.
func TestCancelledRequestOfExactlyTheBufferSizeIsSent(t *testing.T) {
	size := func(k int, ctx context.Context) (int, error) {
		var b bufRWC
		c := newCodec(&b, 1<<20)
		_, err := c.write(ctx, &rpc.Request{ServiceMethod: "S.M", Seq: 1}, make([]byte, k))
		return b.Len(), err
	}
	k := -1
	for i := 3900; i < 4096; i++ {
		if n, _ := size(i, context.Background()); n == 4096 {
			k = i
			break
		}
	}
	if k < 0 {
		t.Skip("no args size makes a request of exactly 4096 bytes")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := size(k, ctx)
	if err != nil || n != 4096 {
		t.Fatalf("a cancelled request of exactly 4096 bytes (it fits the buffer): %d bytes sent, %v; want it sent whole, as one of 4095 is", n, err)
	}
	if n, err := size(k-1, ctx); err != nil || n != 4095 {
		t.Fatalf("4095 bytes: %d sent, %v", n, err)
	}
}

// slowPing is a heartbeat service whose answers take delay.
type slowPing struct{ delay time.Duration }

func (p slowPing) Ping(args int, reply *int) error {
	time.Sleep(p.delay)
	*reply = args
	return nil
}

// WithHeartbeat(interval, timeout) gives each ping the timeout, not the
// interval: pings every 20 ms to a server whose answers take 150 ms, each
// allowed 600 ms, keep an idle connection up (mutation review: the two
// swapped, the defaults being 1 s and 1 s, passed every test). Swapped, the
// second 600 ms tick (the first sees the call's reply) sends a ping allowed
// 20 ms, and the connection closes.
func TestPingGetsTheHeartbeatTimeoutNotTheInterval(t *testing.T) {
	const every, timeout, answer = 20 * time.Millisecond, 600 * time.Millisecond, 150 * time.Millisecond
	addr := serveRPC(t, func(s *rpc.Server) error {
		if err := s.Register(&Arith{}); err != nil {
			return err
		}
		return s.RegisterName(HeartbeatService, slowPing{answer})
	}, func() {})
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(every, timeout), WithReadTimeout(time.Minute), WithMaxAttempts(1))
	var sum int
	if err := c.Call(context.Background(), "Arith.Add", Pair{A: 1, B: 2}, &sum); err != nil || sum != 3 {
		t.Fatalf("Add = %d, %v", sum, err)
	}
	time.Sleep(1500 * time.Millisecond) // many pings, each answered within its timeout
	if st := endpointStatus(c, addr); st.State != Ready || st.Dials != 1 || st.LastClose != nil {
		t.Fatalf("pings answered in %v with a %v timeout: %+v, want Ready after 1 dial, no connection closed",
			answer, timeout, st)
	}
}
