package consul

import (
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// A client calls ResolveNow on every failed dial. While the agent fails,
// those calls must not cut the error backoff short, or a fleet of clients
// hammers an unhealthy agent: the requests stay at what the backoff allows,
// and the read ResolveNow asked for is made when the backoff ends.
func TestResolveNowDoesNotCutTheErrorBackoffShort(t *testing.T) {
	var consistent atomic.Int64
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if r.URL.Query().Has("consistent") {
			consistent.Add(1)
		}
		return 500, "", "rpc error: no path to datacenter"
	})
	const backoff = 250 * time.Millisecond
	// A resolve interval far below the backoff: only the backoff may
	// space the requests out.
	w, err := New("web", WithAddress(f.addr()), WithErrorBackoff(backoff, backoff), WithResolveInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 5*time.Second, "the first error", func(s discovery.State) bool { return s.Err != nil })

	before := f.n.Load()
	start := time.Now()
	calls := 0
	for ; calls < 50_000_000 && time.Since(start) < time.Second; calls++ {
		w.ResolveNow()
		runtime.Gosched()
	}
	elapsed := time.Since(start)
	made := f.n.Load() - before
	// Each retry waits at least the backoff less its 20 % jitter; one more
	// request may be on its way when the loop ends.
	allowed := int64(elapsed/(backoff*8/10)) + 1
	t.Logf("%d ResolveNow calls in %v: %d requests (the backoff allows %d)", calls, elapsed.Round(time.Millisecond), made, allowed)
	if made > allowed {
		t.Fatalf("%d requests to a failing agent in %v while ResolveNow was called %d times; the %v backoff allows at most %d",
			made, elapsed.Round(time.Millisecond), calls, backoff, allowed)
	}
	if made == 0 {
		t.Fatalf("no request in %v of a %v backoff: the watcher stopped retrying", elapsed.Round(time.Millisecond), backoff)
	}
	// The ResolveNow calls were not lost: the reads at the ends of the
	// backoffs were the consistent reads they asked for.
	if consistent.Load() == 0 || w.Stats().ForcedReads == 0 {
		t.Fatalf("%d consistent reads, Stats.ForcedReads %d; want the ResolveNow served after the backoff", consistent.Load(), w.Stats().ForcedReads)
	}
}
