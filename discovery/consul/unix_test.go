package consul

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// unixAgent serves h on a unix socket in t.TempDir() and returns the
// address to give WithAddress: unix:///path.
func unixAgent(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "unix://" + path
}

// answer writes a health answer as an agent does.
func answer(w http.ResponseWriter, index, body string) {
	w.Header().Set("X-Consul-Index", index)
	w.Header().Set("X-Consul-LastContact", "0")
	w.Header().Set("X-Consul-KnownLeader", "true")
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, body)
}

// An agent reached through a unix socket (unix:///path, as in
// CONSUL_HTTP_ADDR) gets the same protections as one over TCP: redirects
// are refused, so the token never follows them, and bodies are capped.
func TestUnixSocketKeepsRedirectRefusalAndCap(t *testing.T) {
	t.Run("redirect", func(t *testing.T) {
		target := newRedirectTarget(t)
		var followed atomic.Int64
		addr := unixAgent(t, func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/followed") {
				followed.Add(1) // a redirect that came back through the socket
			}
			http.Redirect(w, r, target.url+"/followed"+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		})
		wantRedirectRefused(t, addr)
		if target.reached.Load() || followed.Load() != 0 {
			t.Fatalf("the redirect was followed (to the target: %v, back through the socket: %d times)", target.reached.Load(), followed.Load())
		}
	})
	t.Run("no path", func(t *testing.T) {
		if w, err := New("web", WithAddress("unix://")); err == nil || !strings.Contains(err.Error(), "no socket path") {
			if w != nil {
				w.Close()
			}
			t.Fatalf("New with unix:// = %v, want an error naming the missing socket path", err)
		}
	})
	t.Run("oversized body", func(t *testing.T) {
		good := entriesJSON(t, "10.0.0.1:80")
		huge := entriesJSON(t, strings.Split(strings.Repeat("10.0.0.5:80,", 50), ",")[:50]...)
		var n atomic.Int64
		addr := unixAgent(t, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				answer(w, "10", good)
				return
			}
			answer(w, "11", huge)
		})
		w, err := New("web", append(fast, WithAddress(addr), WithMaxResponse(int64(len(good)+100), 1000))...)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		s := nextWhere(t, w, 5*time.Second, "the error", func(s discovery.State) bool { return s.Err != nil })
		if !errors.Is(s.Err, ErrResponseTooLarge) || addrsOf(s) != "10.0.0.1:80" {
			t.Fatalf("err %v, endpoints %q; want ErrResponseTooLarge and the last known good set 10.0.0.1:80", s.Err, addrsOf(s))
		}
	})
}
