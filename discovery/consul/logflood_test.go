package consul

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/logbuf"
)

// An invalid instance that stays in the service is logged once, not on
// every answer: a service whose other instances churn (health checks
// flapping, deploys) answers blocking queries up to the query rate, and
// clients call ResolveNow on every failed dial, so logging per answer
// repeated the same line up to 20 times a second per bad instance for as
// long as it stayed registered (the etcd watcher logs each once). A new
// reason for the same instance is logged again.
func TestRejectedInstanceLoggedOnce(t *testing.T) {
	stable := entriesJSON(t, "10.0.0.1:80", "0.0.0.0:80")               // web-1 is invalid
	churn := entriesJSON(t, "10.0.0.1:80", "0.0.0.0:80", "10.0.0.3:80") // plus web-2, flapping
	later := entriesJSON(t, "10.0.0.1:80", "10.0.0.2:0")                // web-1 invalid for another reason
	stop := time.Now().Add(1500 * time.Millisecond)
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		idx := strconv.Itoa(10 + n)
		switch {
		case time.Now().After(stop):
			return 200, idx, later
		case n%2 == 0:
			return 200, idx, churn
		}
		return 200, idx, stable
	})
	var logs logbuf.Buffer
	w, err := New("web", WithAddress(f.addr()), WithResolveInterval(10*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// ResolveNow as a client calls it on failed dials, in a bounded loop.
	for i := 0; i < 1000 && time.Now().Before(stop.Add(300*time.Millisecond)); i++ {
		w.ResolveNow()
		time.Sleep(2 * time.Millisecond)
	}
	w.Close()
	answers := w.Stats().Requests
	out := logs.String()
	first := strings.Count(out, "id=web-1 reason=\"")
	zero := strings.Count(out, "0.0.0.0")
	port := strings.Count(out, "10.0.0.2:0")
	t.Logf("%d requests; web-1 rejection lines: %d (0.0.0.0: %d, port 0: %d)", answers, first, zero, port)
	if answers < 10 {
		t.Fatalf("only %d requests: the test did not churn", answers)
	}
	if zero != 1 || port != 1 {
		t.Fatalf("%d requests: the invalid instance was logged %d times for 0.0.0.0 and %d for port 0; want once per reason:\n%.2000s",
			answers, zero, port, out)
	}
}
