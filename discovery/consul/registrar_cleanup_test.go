package consul

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/consultest"
)

// A first registration that reaches the agent but whose answer comes after
// ctx ends (a slow agent, a deadline too short) makes NewRegistrar fail:
// the caller has no Registrar to Close, so NewRegistrar must not leave the
// instance registered, serving as passing, behind it.
func TestNewRegistrarFailingLeavesNothingRegistered(t *testing.T) {
	a := consultest.Start(t)
	target, err := url.Parse("http://" + a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/service/register") {
			// Apply it, then answer too late.
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r.Clone(context.WithoutCancel(r.Context())))
			<-r.Context().Done()
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	r, err := NewRegistrar(ctx, Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001", Check: Check{TTL: 30 * time.Second}},
		WithAddress(strings.TrimPrefix(front.URL, "http://")))
	if err == nil {
		r.Close()
		t.Fatal("NewRegistrar succeeded; want the deadline's error")
	}
	svcs, err := agentClient(t, a).Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["web-1"]; ok {
		entries, _, _ := agentClient(t, a).Health().Service("web", "", true, nil)
		t.Fatalf("NewRegistrar failed, yet the agent has the instance (%d passing): left behind for the caller that cannot Close it", len(entries))
	}
}

// A NewRegistrar whose ctx is already done sends nothing, so its cleanup
// must not deregister the ID: it removed a live Registrar's instance
// registered under the same ID (a restarted process's default
// Name-host-port ID, while the old one still drains).
func TestCancelledNewRegistrarLeavesAnInstanceOfTheSameID(t *testing.T) {
	a := consultest.Start(t)
	reg := Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001", Check: Check{TTL: 30 * time.Second}}
	live, err := NewRegistrar(context.Background(), reg, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r, err := NewRegistrar(ctx, reg, WithAddress(a.Addr())); err == nil {
		r.Close()
		t.Fatal("NewRegistrar with a cancelled ctx succeeded")
	}
	svcs, err := agentClient(t, a).Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["web-1"]; !ok {
		t.Fatal("a NewRegistrar that sent nothing deregistered the live instance registered under the same ID")
	}
}
