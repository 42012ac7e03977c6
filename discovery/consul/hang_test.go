package consul

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/returns"
)

// A plain read (the first one, the one after an error, ResolveNow's
// consistent read) that the agent never answers must cost one request
// timeout, reported in State.Err, not freeze the watcher.
func TestHungPlainReadIsBoundedByTheRequestTimeout(t *testing.T) {
	t.Run("first read", func(t *testing.T) {
		f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
			if n == 1 {
				return -1, "", "" // never answered
			}
			return 200, "10", entriesJSON(t, "10.0.0.1:80")
		})
		w, err := New("web", append(fast, WithAddress(f.addr()), WithWaitTime(time.Second), WithRequestTimeout(300*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		s := nextWhere(t, w, 5*time.Second, "the timeout reported", func(s discovery.State) bool { return s.Err != nil })
		if !strings.Contains(s.Err.Error(), "did not answer within 300ms") {
			t.Errorf("State.Err = %v; want it to say the agent did not answer within the request timeout", s.Err)
		}
		nextWhere(t, w, 5*time.Second, "the set after the hung read", func(s discovery.State) bool {
			return s.Err == nil && len(s.Endpoints) == 1
		})
	})
	t.Run("ResolveNow's consistent read", func(t *testing.T) {
		var hung atomic.Bool
		f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
			switch {
			case n == 1:
				return 200, "10", entriesJSON(t, "10.0.0.1:80")
			case r.URL.Query().Has("consistent") && hung.CompareAndSwap(false, true):
				return -1, "", "" // the first forced read is never answered
			case r.URL.Query().Get("index") != "":
				return -1, "", "" // blocking queries wait out their time
			}
			return 200, "11", entriesJSON(t, "10.0.0.2:80")
		})
		w, err := New("web", append(fast, WithAddress(f.addr()), WithWaitTime(time.Minute), WithRequestTimeout(300*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		nextWhere(t, w, 5*time.Second, "the first set", func(discovery.State) bool { return true })
		asked := time.Now()
		w.ResolveNow()
		nextWhere(t, w, 5*time.Second, "the new set after a hung forced read", func(s discovery.State) bool {
			return len(s.Endpoints) == 1 && s.Endpoints[0].Addr == "10.0.0.2:80"
		})
		if !hung.Load() {
			t.Fatal("the forced read was never made")
		}
		t.Logf("new set published %v after ResolveNow, whose first read hung", time.Since(asked).Round(time.Millisecond))
	})
}

// connCounter is an agent whose open connections are counted, to check that
// Close leaves no keep-alive connection behind.
func connCounter(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var open atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &open
}

func waitClosed(t *testing.T, what string, open *atomic.Int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); open.Load() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d connections to the agent still open 5 s after Close", what, open.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCloseLeavesNoIdleConnections(t *testing.T) {
	t.Run("Registrar", func(t *testing.T) {
		srv, open := connCounter(t, func(w http.ResponseWriter, r *http.Request) {})
		r, err := NewRegistrar(context.Background(), Registration{Name: "web", Addr: "10.0.0.1:80", Check: Check{TTL: 10 * time.Second}},
			WithAddress(strings.TrimPrefix(srv.URL, "http://")))
		if err != nil {
			t.Fatal(err)
		}
		if open.Load() == 0 {
			t.Fatal("the registration opened no connection")
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, "Registrar", open)
	})
	t.Run("Watcher in its error backoff", func(t *testing.T) {
		var calls atomic.Int64
		srv, open := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			http.Error(w, "boom", http.StatusInternalServerError)
		})
		w, err := New("web", WithAddress(strings.TrimPrefix(srv.URL, "http://")), WithErrorBackoff(time.Minute, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		nextWhere(t, w, 5*time.Second, "the error", func(s discovery.State) bool { return s.Err != nil })
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, "Watcher", open)
	})
}

func TestOptionsThatWouldSpinAreRefused(t *testing.T) {
	for name, opt := range map[string]Option{
		"WithErrorBackoff(0, 1s)":  WithErrorBackoff(0, time.Second),
		"WithErrorBackoff(2s, 1s)": WithErrorBackoff(2*time.Second, time.Second),
		"WithResolveInterval(0)":   WithResolveInterval(0),
		"WithRequestTimeout(0)":    WithRequestTimeout(0),
	} {
		w, err := New("web", WithAddress("127.0.0.1:1"), opt)
		if err == nil {
			w.Close()
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), strings.SplitN(name, "(", 2)[0]) {
			t.Errorf("%s: error %q does not name the option", name, err)
		}
		if errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// WithMaxResponse needs two positive caps, as the other numeric options
// need positive values: a zero body cap used to turn the cap off, and a zero
// entry cap to reject every answer that is not empty.
func TestMaxResponseMustBePositive(t *testing.T) {
	for _, tc := range []struct {
		body    int64
		entries int
	}{{0, 100}, {-1, 100}, {1 << 20, 0}, {1 << 20, -5}, {0, 0}} {
		w, err := New("web", WithAddress("127.0.0.1:1"), WithMaxResponse(tc.body, tc.entries))
		if err == nil {
			w.Close()
			t.Errorf("WithMaxResponse(%d, %d): accepted", tc.body, tc.entries)
			continue
		}
		if !strings.Contains(err.Error(), "WithMaxResponse") {
			t.Errorf("WithMaxResponse(%d, %d): error %q does not name the option", tc.body, tc.entries, err)
		}
	}
	w, err := New("web", WithAddress("127.0.0.1:1"), WithMaxResponse(1, 1))
	if err != nil {
		t.Fatalf("WithMaxResponse(1, 1): %v", err)
	}
	w.Close()
}

// ResolveNow never blocks, even while the agent hangs every request (the
// first read, then the forced reads it asks for), and from many goroutines
// at once; Close, called from two goroutines while they call it, aborts the
// hung read and returns once the watcher's goroutine has exited; Next then
// returns discovery.ErrClosed, and ResolveNow after Close still returns.
func TestResolveNowNeverBlocksOnAHungAgentAndCloseRacesIt(t *testing.T) {
	f := newFakeAgent(t, func(*http.Request, int) (int, string, string) { return -1, "", "" })
	w, err := New("web", WithAddress(f.addr()), WithResolveInterval(time.Millisecond), WithRequestTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	bounded := func(what string, fn func()) { t.Helper(); returns.Within(t, 2*time.Second, what, fn) }
	for deadline := time.Now().Add(5 * time.Second); f.n.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher made no request")
		}
	}
	stopCallers := returns.Loop(4, w.ResolveNow)
	bounded("ResolveNow", w.ResolveNow)
	time.Sleep(50 * time.Millisecond)
	bounded("two concurrent Closes", func() {
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); w.Close() }()
		}
		wg.Wait()
	})
	stopCallers()
	bounded("ResolveNow after Close", w.ResolveNow)
	bounded("a third Close", func() { w.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Next after Close = %v; want discovery.ErrClosed", err)
	}
}
