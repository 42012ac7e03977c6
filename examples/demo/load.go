package main

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-go/dialtone/rpcclient"
)

// sample is the outcome of one call.
type sample struct {
	end time.Duration // when it returned, since the load started
	lat time.Duration
	ok  bool
}

// failure is a call that failed, kept for the report.
type failure struct {
	at    time.Duration
	phase string
	err   error
}

// maxKeptFailures bounds how many failures the report keeps in full.
const maxKeptFailures = 20

// recorder collects every call's outcome. Its methods are safe from any
// goroutine.
type recorder struct {
	start time.Time
	phase func() string // the current phase, for failures

	calls, fails, cancelled atomic.Int64
	perBackend              map[string]*atomic.Int64 // successes by backend name; fixed keys
	unknown                 atomic.Int64             // successes from a name not in perBackend

	mu       sync.Mutex
	samples  []sample
	failures []failure // the first maxKeptFailures
}

func newRecorder(start time.Time, names []string, phase func() string) *recorder {
	r := &recorder{start: start, phase: phase, perBackend: map[string]*atomic.Int64{}}
	for _, n := range names {
		r.perBackend[n] = new(atomic.Int64)
	}
	return r
}

// record adds one call. A call cut short by the demo's own cancellation
// (Ctrl-C) is counted apart: it is neither a success nor a failure.
func (r *recorder) record(started time.Time, lat time.Duration, backend string, err error, cancelled bool) {
	if err != nil && cancelled {
		r.cancelled.Add(1)
		return
	}
	r.calls.Add(1)
	s := sample{end: started.Add(lat).Sub(r.start), lat: lat, ok: err == nil}
	if err == nil {
		if c := r.perBackend[backend]; c != nil {
			c.Add(1)
		} else {
			r.unknown.Add(1)
		}
	} else {
		r.fails.Add(1)
	}
	r.mu.Lock()
	r.samples = append(r.samples, s)
	if err != nil && len(r.failures) < maxKeptFailures {
		r.failures = append(r.failures, failure{at: s.end, phase: r.phase(), err: err})
	}
	r.mu.Unlock()
}

// snapshot returns the samples so far, sorted by end time, and the kept
// failures.
func (r *recorder) snapshot() ([]sample, []failure) {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	f := slices.Clone(r.failures)
	r.mu.Unlock()
	slices.SortFunc(s, func(a, b sample) int { return int(a.end - b.end) })
	return s, f
}

// load is the closed-loop load: each worker makes one idempotent call at a
// time, back to back, until stop.
type load struct {
	stopCh chan struct{}
	wg     sync.WaitGroup
}

// startLoad starts workers calling "Echo.Echo" on c. Every call has its own
// deadline (callTimeout) derived from ctx; cancelling ctx (Ctrl-C) cuts the
// calls in flight short, stop lets them finish.
func startLoad(ctx context.Context, c *rpcclient.Client, workers int, callTimeout time.Duration, rec *recorder) *load {
	l := &load{stopCh: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go l.worker(ctx, c, w, callTimeout, rec)
	}
	return l
}

func (l *load) worker(ctx context.Context, c *rpcclient.Client, w int, callTimeout time.Duration, rec *recorder) {
	defer l.wg.Done()
	msg := "hello from worker " + strconv.Itoa(w)
	for {
		select {
		case <-l.stopCh:
			return
		case <-ctx.Done():
			return
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		var reply EchoReply
		t0 := time.Now()
		err := c.Call(cctx, "Echo.Echo", &EchoArgs{Msg: msg}, &reply, rpcclient.Idempotent())
		lat := time.Since(t0)
		cancel()
		if err == nil && reply.Msg != msg {
			err = errors.New("demo: reply does not echo the message")
		}
		rec.record(t0, lat, reply.Backend, err, ctx.Err() != nil)
		if err != nil {
			// A failing client may fail fast: don't spin on it.
			select {
			case <-l.stopCh:
				return
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// stop ends the load and waits for the calls in flight.
func (l *load) stop() {
	close(l.stopCh)
	l.wg.Wait()
}

// phaseStat sums up the calls that returned during one phase.
type phaseStat struct {
	name          string
	from, to      time.Duration
	calls, fails  int
	p50, p99, max time.Duration
}

// phaseStats splits samples (sorted by end time) by phase and adds a total
// row. Calls that returned after the last phase ended (they were in flight
// when the load stopped) count in the last phase.
func phaseStats(samples []sample, phaseLen time.Duration) []phaseStat {
	n := len(phaseNames)
	lats := make([][]time.Duration, n+1)
	out := make([]phaseStat, n+1)
	for i, name := range phaseNames {
		out[i] = phaseStat{name: name, from: time.Duration(i) * phaseLen, to: time.Duration(i+1) * phaseLen}
	}
	out[n] = phaseStat{name: "all", to: time.Duration(n) * phaseLen}
	for _, s := range samples {
		i := min(int(s.end/phaseLen), n-1)
		for _, j := range []int{i, n} {
			out[j].calls++
			if !s.ok {
				out[j].fails++
			}
			lats[j] = append(lats[j], s.lat)
		}
	}
	for i := range out {
		slices.Sort(lats[i])
		out[i].p50 = percentile(lats[i], 50)
		out[i].p99 = percentile(lats[i], 99)
		out[i].max = percentile(lats[i], 100)
	}
	return out
}

// percentile returns the p-th percentile (0-100) of sorted by the
// nearest-rank method; 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}
