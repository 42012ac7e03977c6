package consultest

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// HoldProxy sits in front of an agent's HTTP API and holds every blocking
// query (a request with an index) for a fixed time before forwarding it, as a
// long wait time would; plain reads pass at once. Behind it, only a watcher's
// ResolveNow (a consistent plain read) can deliver a change quickly, which is
// what tests of ResolveNow need to prove.
type HoldProxy struct {
	srv        *httptest.Server
	consistent atomic.Int64
}

// Hold starts a HoldProxy to agent (host:port) that holds blocking queries
// for hold. It is closed by t.Cleanup.
func Hold(t testing.TB, agent string, hold time.Duration) *HoldProxy {
	t.Helper()
	target, err := url.Parse("http://" + agent)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &HoldProxy{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("index") != "" {
			select {
			case <-time.After(hold):
			case <-r.Context().Done():
				return
			}
		} else if r.URL.Query().Has("consistent") {
			p.consistent.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// Addr returns the proxy's host:port, to use as the agent address.
func (p *HoldProxy) Addr() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// ConsistentReads returns how many consistent reads went through.
func (p *HoldProxy) ConsistentReads() int64 { return p.consistent.Load() }
