package rpcclient

import (
	"context"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// FAULTS.md row 3's figure, with the default reconnect backoff: redials to
// an address whose dials fail follow 1 s x1.6 +-20 %. TestDialBlackhole
// counts dials in a window (2-5 in 2 s), which a backoff that does not grow
// also meets (4 dials); this test times each redial. The address refuses
// (a closed port), so each dial fails at once and the time between two dials
// is the pool's backoff plus the time the next call takes to come. The
// lower bounds are the backoff's, minus 50 ms for the poller that sees the
// dials: the pool never redials early, on any box. The upper bounds add
// 500 ms of slack for a busy box.
func TestRedialsFollowTheDefaultBackoff(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // dials to addr are refused
	c, _ := newTestClient(t, []string{addr}, WithHeartbeat(0, 0), withoutNodeHealth())

	const dials = 4 // 3 intervals: about 1 + 1.6 + 2.56 s
	var (
		mu    sync.Mutex
		times []time.Time
	)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { // the poller: when each dial starts
		var seen uint64
		for ctx.Err() == nil {
			if n := endpointStatus(c, addr).Dials; n > seen {
				mu.Lock()
				for ; seen < n; seen++ {
					times = append(times, time.Now())
				}
				mu.Unlock()
			}
			time.Sleep(time.Millisecond)
		}
	})
	for {
		mu.Lock()
		n := len(times)
		mu.Unlock()
		if n >= dials {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d dials in 15 s, want %d", n, dials)
		}
		cctx, ccancel := context.WithTimeout(ctx, 200*time.Millisecond)
		var r rpctest.EchoReply
		if err := c.Call(cctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent()); err == nil {
			t.Fatal("a call to a refused address succeeded")
		}
		ccancel()
	}
	cancel()
	wg.Wait()
	want := time.Second
	for i := 1; i < dials; i++ {
		got := times[i].Sub(times[i-1])
		lo := time.Duration(0.8*float64(want)) - 50*time.Millisecond
		hi := time.Duration(1.2*float64(want)) + 500*time.Millisecond
		t.Logf("redial %d came %v after the previous dial; backoff %v +-20 %%", i, got.Round(time.Millisecond), want)
		if got < lo || got > hi {
			t.Errorf("redial %d came %v after the previous dial; want the backoff %v +-20 %% (%v to %v with the slack)",
				i, got.Round(time.Millisecond), want, lo, hi)
		}
		want = time.Duration(math.Round(float64(want) * 1.6))
	}
}
