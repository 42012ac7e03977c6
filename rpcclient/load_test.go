package rpcclient

import (
	"context"
	"sync"
	"time"
)

// outcome is one call of a load run.
type outcome struct {
	worker, i int           // the call's worker and its index in the worker's loop
	start     time.Time     // when the call began
	at        time.Duration // start, since the run began
	latency   time.Duration
	err       error
}

// runLoad runs workers closed-loop callers of call for d (and at most
// perWorker calls each), and returns every outcome. Every loop is bounded in
// count and time.
func runLoad(workers, perWorker int, d time.Duration, call func(ctx context.Context, worker, i int) error) []outcome {
	start := time.Now()
	stop := start.Add(d)
	var mu sync.Mutex
	var out []outcome
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var local []outcome
			for i := 0; i < perWorker && time.Now().Before(stop); i++ {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := call(ctx, w, i)
				cancel()
				local = append(local, outcome{worker: w, i: i, start: t0, at: t0.Sub(start), latency: time.Since(t0), err: err})
			}
			mu.Lock()
			out = append(out, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func failures(out []outcome) (n int, first error) {
	for _, o := range out {
		if o.err != nil {
			if n == 0 {
				first = o.err
			}
			n++
		}
	}
	return n, first
}
