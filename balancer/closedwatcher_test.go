package balancer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// A Balancer over a watcher closed before it answered can never get a
// State. Its picks must say so (discovery.ErrClosed), not "discovery has
// not answered yet", on which rpcclient waits for an answer that never
// comes; and must go on saying so after the run goroutine rebuilds.
func TestClosedWatcherBeforeAnyStateIsReported(t *testing.T) {
	w, err := discovery.StaticAddrs("10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	b := New(w, WithService("svc"), WithOutlierDetection(OutlierConfig{Interval: 10 * time.Millisecond}))
	defer b.Close()
	deadline := time.Now().Add(2 * time.Second)
	reported := false
	for time.Now().Before(deadline) {
		_, err := b.Pick(context.Background())
		switch {
		case errors.Is(err, discovery.ErrClosed) && errors.Is(err, ErrNoEndpoints) && !errors.Is(err, ErrNoStateYet):
			reported = true
		case reported:
			t.Fatalf("after the run goroutine rebuilt, Pick: %v; want discovery.ErrClosed still", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !reported {
		_, err := b.Pick(context.Background())
		t.Fatalf("Pick over a watcher closed before any State: %v; want ErrNoEndpoints wrapping discovery.ErrClosed", err)
	}
}
