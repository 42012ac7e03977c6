package consul

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/consultest"
)

// Close lets the keep-alive request in flight finish and then stops: it
// must not start another one. run's select, with stop closed and a tick
// waiting (a refresh that ran to its timeout always leaves one), picks
// either, so half the time a new refresh went out after Close. Eight
// Registrars in a row: all eight escape with probability 1/256.
func TestCloseStartsNoNewKeepAlive(t *testing.T) {
	a := consultest.Start(t)
	var (
		mu      sync.Mutex
		closing = map[string]bool{} // check ID -> Close called
		late    = map[string]int{}  // check ID -> TTL updates that arrived after Close was called
		arrived = make(chan string, 64)
	)
	front := agentFront(t, a.Addr(), func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
		if id, ok := strings.CutPrefix(r.URL.Path, "/v1/agent/check/update/"); ok {
			mu.Lock()
			if closing[id] {
				late[id]++
			}
			mu.Unlock()
			select {
			case arrived <- id:
			default:
			}
			// The agent hangs: the refresh runs to its timeout. (The body is
			// read first: net/http notices a client gone only after that.)
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
				t.Logf("check update for %s: the client did not give up within 3 s", id)
			}
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	})
	for i := range 8 {
		id := fmt.Sprintf("web-%d", i)
		reg, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: id, Addr: "127.0.0.1:9001",
			Check: Check{TTL: 600 * time.Millisecond}}, WithAddress(front))
		if err != nil {
			t.Fatal(err)
		}
		for got := ""; got != "service:"+id; {
			select {
			case got = <-arrived:
			case <-time.After(5 * time.Second):
				t.Fatal("no keep-alive within 5 s")
			}
		}
		mu.Lock()
		closing["service:"+id] = true
		mu.Unlock()
		if err := reg.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		mu.Lock()
		n := late["service:"+id]
		mu.Unlock()
		if n > 0 {
			t.Fatalf("Registrar %d: %d keep-alive request(s) started after Close was called; want Close to stop after the one in flight", i, n)
		}
	}
}
