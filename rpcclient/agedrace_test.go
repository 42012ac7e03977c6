package rpcclient

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var spinSink atomic.Int64

var errTestEnd = errors.New("test over")

// A connection retired by age closes only once nothing is in flight on it:
// a request that its write puts on the wire is either refused (nothing
// sent, and the call goes again on the replacement) or kept until its
// reply. start checked retired before it took the connection's lock to
// enter the request in the pending table, and closeIfRetired counted the
// table under that lock: a request that passed the check just before run
// retired the connection, and entered the table just after the count
// found it empty, was written and then failed with errAged when the
// connection closed under it. The caller got a connection error for a
// request the server may run (ErrOutcomeUnknown for a call that is not
// idempotent), on a node that did nothing wrong.
func TestAgedConnectionClosesWithNothingInFlight(t *testing.T) {
	o := defaultOptions()
	o.heartbeat, o.readTimeout = 0, 0
	var cwg sync.WaitGroup
	lost, sent, refused := 0, 0, 0
	rounds := 0
	for i, end := 0, time.Now().Add(4*time.Second); lost == 0 && i < 100000 && time.Now().Before(end); i++ {
		rounds++
		spin := i % 400 // sweeps the retirement across the request's start
		a, b := net.Pipe()
		go io.Copy(io.Discard, b)
		cn := newConn("pipe", a, &o, nil, nil, &cwg)
		var go_, ready atomic.Bool
		done := make(chan struct{})
		go func() { // the replacement joins the pool: run retires cn
			defer close(done)
			ready.Store(true)
			for !go_.Load() {
			}
			for j := 0; j < spin; j++ {
				spinSink.Add(1)
			}
			cn.markAged()
			cn.closeIfRetired()
		}()
		for !ready.Load() {
		}
		go_.Store(true)
		pc, _, err := cn.start(context.Background(), "Echo.Echo", 1, new(int), waitAsCtxAllows)
		<-done
		cn.close(errTestEnd) // the request, if still pending, gets this
		if err != nil {
			refused++
		}
		if err == nil {
			sent++
			<-pc.done
			if errors.Is(pc.err, errAged) {
				lost++
			}
		}
		b.Close()
	}
	cwg.Wait()
	t.Logf("sent %d, refused %d, lost %d", sent, refused, lost)
	if lost > 0 {
		t.Fatalf("%d of %d requests written on a connection being retired were then failed by its retirement (errAged), with the request sent", lost, rounds)
	}
}
