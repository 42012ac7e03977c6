package consul

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync/atomic"
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
	front := agentFront(t, a.Addr(), func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/service/register") {
			// Apply it, then answer too late.
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r.Clone(context.WithoutCancel(r.Context())))
			<-r.Context().Done()
			return
		}
		rp.ServeHTTP(w, r)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	r, err := NewRegistrar(ctx, Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001", Check: Check{TTL: 30 * time.Second}},
		WithAddress(front))
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

// Close while the Registrar registers again (the agent forgot the instance)
// must leave nothing registered. An agent that is slow to apply that
// registration is the case: the old Close cancelled the request in flight
// and sent the deregistration at once, which the agent applied first, and
// the registration it applied next brought the instance back after Close
// returned, with no Registrar left to remove it.
func TestCloseDuringReRegistrationLeavesNothingRegistered(t *testing.T) {
	a := consultest.Start(t)
	var registers atomic.Int32
	held := make(chan struct{})    // closed when the re-registration reached the proxy
	applied := make(chan struct{}) // closed once the agent has applied it
	front := agentFront(t, a.Addr(), func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/service/register") && registers.Add(1) == 2 {
			// The re-registration: the agent applies it 100 ms late,
			// whether or not the client still waits. The body is read
			// first, and the proxy writes to a recorder: a ResponseWriter
			// of a connection the client closed (Close cancelled the
			// request) makes ReverseProxy cancel the forwarded request
			// too, and the agent would never apply it.
			body, err := io.ReadAll(r.Body)
			close(held)
			if err != nil {
				t.Errorf("reading the re-registration: %v", err)
				close(applied)
				return
			}
			time.Sleep(100 * time.Millisecond)
			fwd := r.Clone(context.WithoutCancel(r.Context()))
			fwd.Body = io.NopCloser(bytes.NewReader(body))
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, fwd)
			if rec.Code != http.StatusOK {
				t.Errorf("the agent answered the held re-registration %d: %s", rec.Code, rec.Body)
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			close(applied)
			return
		}
		rp.ServeHTTP(w, r)
	})
	reg, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001",
		Check: Check{TTL: 900 * time.Millisecond}}, WithAddress(front))
	if err != nil {
		t.Fatal(err)
	}
	agent := agentClient(t, a).Agent()
	if err := agent.ServiceDeregister("web-1"); err != nil { // the agent forgets it
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		reg.Close()
		t.Fatal("the Registrar did not register again within 5 s of the agent forgetting the instance")
	}
	if err := reg.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-applied:
	case <-time.After(5 * time.Second):
		t.Fatal("the held registration was never applied")
	}
	svcs, err := agent.Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["web-1"]; ok {
		t.Fatal("after Close returned, the agent has the instance: the re-registration Close cancelled was applied after its deregistration")
	}
}

// An agent that no longer knows the instance (an operator removed it, the
// agent restarted) has nothing for Close to remove: Close succeeds.
func TestCloseAfterTheAgentForgotTheInstanceIsNoError(t *testing.T) {
	a := consultest.Start(t)
	reg, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001",
		Check: Check{TTL: 30 * time.Second}}, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if err := agentClient(t, a).Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatalf("Close with the instance already gone: %v; want nil", err)
	}
}
