package consul

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
)

// FAULTS.md row 9: "The watcher backs off with jitter" while the agent is
// down. TestAgentRestartKeepsLastKnownGoodAndResumes passes with the jitter
// gone (it only needs the watcher to come back), and so does every other
// test of the package. Here 8 watchers follow one real agent, each through
// its own pass-through front that notes when each request arrives; the agent
// is stopped, and the fronts answer 502 from then on. The gaps between a
// watcher's retries, each divided by the backoff it should be (100 ms x2:
// 200, 400, 800 ms), must spread over the +-20 % jitter: a backoff without
// jitter sends the whole fleet back in lock-step, and the ratios bunch at 1.
func TestAgentOutageBackoffIsJittered(t *testing.T) {
	a := consultest.Start(t)
	register(t, agentClient(t, a), "a", "127.0.0.1:7001", nil, nil)
	const watchers = 8
	var (
		mu      sync.Mutex
		stopped time.Time
		events  [watchers][]event
	)
	for i := range watchers {
		front := agentFront(t, a.Addr(), func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
			start := time.Now()
			rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			rp.ServeHTTP(rec, r)
			mu.Lock()
			if end := time.Now(); !stopped.IsZero() && end.After(stopped) { // the parked query too
				events[i] = append(events[i], event{start, end, rec.status >= 500})
			}
			mu.Unlock()
		})
		w, err := New("web", WithAddress(front), WithWaitTime(10*time.Second), WithErrorBackoff(100*time.Millisecond, 2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		nextWhere(t, w, 10*time.Second, fmt.Sprintf("watcher %d's set", i), func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	}
	mu.Lock()
	stopped = time.Now()
	mu.Unlock()
	a.Stop()
	time.Sleep(2 * time.Second)

	mu.Lock()
	defer mu.Unlock()
	lo, hi := 10.0, 0.0
	var n int
	for i := range watchers {
		// The k-th failed answer in a row (from 0) is followed by a
		// backoff of 100 ms x 2^k before the next request.
		evs, k := events[i], 0
		for j := 0; j+1 < len(evs); j++ {
			if !evs[j].failed {
				k = 0
				continue
			}
			nominal := 100 * time.Millisecond << k
			k++
			if nominal < 200*time.Millisecond {
				continue // 100 ms: too short to tell jitter from scheduling
			}
			r := float64(evs[j+1].start.Sub(evs[j].end)) / float64(nominal)
			lo, hi = min(lo, r), max(hi, r)
			n++
		}
	}
	t.Logf("%d retry gaps of %d watchers, as a share of their backoff: %.3f to %.3f", n, watchers, lo, hi)
	if n < watchers*2 {
		t.Fatalf("only %d retry gaps in 2 s of outage from %d watchers; want about %d", n, watchers, watchers*3)
	}
	if lo < 0.8-0.05 {
		t.Errorf("a retry came %.2f of its backoff after the previous one: sooner than the backoff less its 20 %% jitter", lo)
	}
	if hi-lo < 0.15 {
		t.Errorf("the retry gaps of %d watchers span %.3f to %.3f of their backoffs: no jitter (want them spread over +-20 %%)", watchers, lo, hi)
	}
}

type event struct {
	start, end time.Time
	failed     bool
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
