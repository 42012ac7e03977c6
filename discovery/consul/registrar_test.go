package consul

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/hashicorp/consul/api"
)

// holdDeregister is a proxy to a real agent that holds the deregistration
// request until release is closed (and then forwards it, or fails it with
// 500 if fail is set). held is closed when it arrives.
func holdDeregister(t *testing.T, agent string, fail bool) (addr string, held, release chan struct{}) {
	t.Helper()
	target, err := url.Parse("http://" + agent)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	held, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/service/deregister/") {
			once.Do(func() { close(held) })
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			if fail {
				http.Error(w, "agent is shutting down", http.StatusInternalServerError)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), held, release
}

// Close waits for the shutdown, whoever started it: a second Close called
// while the first is still deregistering returns only once the instance is
// gone from the agent, with the first one's error.
func TestRegistrarConcurrentCloseWaitsForTheDeregistration(t *testing.T) {
	a := consultest.Start(t)
	for _, fail := range []bool{false, true} {
		name := "deregistered"
		if fail {
			name = "deregistration fails"
		}
		t.Run(name, func(t *testing.T) {
			addr, held, release := holdDeregister(t, a.Addr(), fail)
			r, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001",
				Check: Check{TTL: 10 * time.Second}}, WithAddress(addr))
			if err != nil {
				t.Fatal(err)
			}
			if fail {
				// Clean up behind the failed deregistration.
				defer agentClient(t, a).Agent().ServiceDeregister("web-1")
			}
			errs := make(chan error, 2)
			go func() { errs <- r.Close() }()
			select {
			case <-held:
			case <-time.After(10 * time.Second):
				t.Fatal("the first Close sent no deregistration within 10 s")
			}
			go func() { errs <- r.Close() }()
			// Let the deregistration through a little later: a Close that
			// returns before that has not waited for it.
			letGo := sync.OnceFunc(func() { close(release) })
			defer letGo()
			time.AfterFunc(200*time.Millisecond, letGo)

			var got []error
			for range 2 {
				select {
				case err := <-errs:
					got = append(got, err)
					svcs, qerr := agentClient(t, a).Agent().Services()
					if qerr != nil {
						t.Fatal(qerr)
					}
					if _, ok := svcs["web-1"]; ok && !fail {
						t.Fatalf("a Close returned (err %v) while the agent still had the instance: it did not wait for the deregistration", err)
					}
				case <-time.After(15 * time.Second):
					t.Fatal("Close did not return within 15 s")
				}
			}
			if got[0] != got[1] {
				t.Fatalf("the two Close calls returned %v and %v; want the same error", got[0], got[1])
			}
			if fail && (got[0] == nil || !strings.Contains(got[0].Error(), "deregister")) {
				t.Fatalf("Close = %v; want the deregistration's error", got[0])
			}
			if !fail && got[0] != nil {
				t.Fatal(got[0])
			}
			if err := r.Close(); !errors.Is(err, got[0]) {
				t.Fatalf("a third Close returned %v, want %v", err, got[0])
			}
		})
	}
}

// A keep-alive update that read the old status and reaches the agent after
// SetStatus's must not overwrite it: SetStatus waits for the update in
// flight, so the status it set is the last the agent applies (review
// finding: the agent applied [critical passing] while SetStatus returned
// nil, and a draining node stayed passing until the next keep-alive).
func TestSetStatusIsNotOverwrittenByAKeepAliveInFlight(t *testing.T) {
	a := consultest.Start(t)
	target, err := url.Parse("http://" + a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	held, release, forwarded := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/check/update/") && first.CompareAndSwap(false, true) {
			close(held) // the first keep-alive: passing
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			defer close(forwarded)
		}
		rp.ServeHTTP(w, r)
	}))
	defer srv.Close()
	r, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001", Check: Check{TTL: 3 * time.Second}},
		WithAddress(strings.TrimPrefix(srv.URL, "http://")))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	<-held // one second in: the keep-alive's passing is on its way
	set := make(chan error, 1)
	go func() { set <- r.SetStatus(context.Background(), api.HealthCritical) }()
	select {
	case err := <-set: // the old code sent critical at once, ahead of passing
		set <- err
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	<-forwarded
	if err := <-set; err != nil {
		t.Fatal(err)
	}
	// Read before the next keep-alive (two seconds in) would correct it.
	checks, err := agentClient(t, a).Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if c := checks["service:web-1"]; c == nil || c.Status != api.HealthCritical {
		t.Fatalf("the agent's check is %+v after SetStatus(critical) returned; want critical", c)
	}
}

// agentFront starts an HTTP server in front of the agent at agent
// (host:port) that hands every request to handle, with a reverse proxy to
// the agent for the requests handle passes on, and returns its host:port.
// It closes when the test ends.
func agentFront(t *testing.T, agent string, handle func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy)) string {
	t.Helper()
	target, err := url.Parse("http://" + agent)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handle(w, r, rp) }))
	t.Cleanup(front.Close)
	return strings.TrimPrefix(front.URL, "http://")
}

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

// SetStatus with a ctx already cancelled fails and leaves the status the
// Registrar keeps as it was. takeSlot's select, with the slot free and ctx
// done, picked either at random: 13 of 20 such calls changed the kept
// status, which the next keep-alive then sent, though SetStatus had failed.
func TestSetStatusWithCancelledCtxIsDeterministic(t *testing.T) {
	a := consultest.Start(t)
	reg, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001",
		Check: Check{TTL: 30 * time.Second}}, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	changed := 0
	for i := range 20 {
		want := api.HealthCritical
		if i%2 == 1 {
			want = api.HealthWarning
		}
		if err := reg.SetStatus(ctx, want); err == nil {
			t.Fatal("SetStatus with a cancelled ctx succeeded")
		}
		reg.mu.Lock()
		if reg.status == want {
			changed++
		}
		reg.mu.Unlock()
	}
	if changed != 0 {
		t.Fatalf("of 20 SetStatus calls with a cancelled ctx, all failing, %d changed the status the Registrar keeps", changed)
	}
}

// Close returns within its documented bounds when the agent hangs every
// request after the registration: the keep-alive in flight gets its 2 s
// grace, the deregistration its 5 s, and Close reports the failure, from
// both of two concurrent calls; the keep-alive goroutine is gone (goleak).
func TestCloseWithAHungAgentIsBounded(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 && strings.HasPrefix(r.URL.Path, "/v1/agent/service/register") {
			return // 200: registered
		}
		io.Copy(io.Discard, r.Body) // so that the server notices the client going away
		<-r.Context().Done()        // hung from now on
	}))
	defer srv.Close()
	reg, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001",
		Check: Check{TTL: 300 * time.Millisecond}}, WithAddress(strings.TrimPrefix(srv.URL, "http://")))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); n.Load() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no keep-alive request within 5 s")
		}
	}
	start := time.Now()
	var errs [2]error
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = reg.Close() })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeGrace + 5*time.Second + 3*time.Second):
		t.Fatalf("Close has not returned %v after it was called on a hung agent", time.Since(start).Round(time.Millisecond))
	}
	t.Logf("Close returned after %v", time.Since(start).Round(time.Millisecond))
	for i, err := range errs {
		if err == nil || err != errs[0] {
			t.Errorf("Close %d = %v; want the deregistration's failure, the same from both calls", i, err)
		}
	}
}

// A SetStatus whose keep-alive slot it got keeps the new status even when
// sending it fails: the next keep-alive sends it (SetStatus's doc).
func TestSetStatusKeepsTheStatusWhenSendingItFails(t *testing.T) {
	a := consultest.Start(t)
	var fail atomic.Bool
	front := agentFront(t, a.Addr(), func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/check/update/") && fail.Load() {
			http.Error(w, "agent busy", http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	})
	reg, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001",
		Check: Check{TTL: 600 * time.Millisecond}}, WithAddress(front))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	fail.Store(true)
	if err := reg.SetStatus(context.Background(), api.HealthCritical); err == nil {
		t.Fatal("SetStatus succeeded with the agent failing the update")
	}
	fail.Store(false)
	agent := agentClient(t, a).Agent()
	deadline := time.Now().Add(5 * time.Second)
	for {
		checks, err := agent.Checks()
		if err != nil {
			t.Fatal(err)
		}
		c := checks["service:web-1"]
		if c != nil && c.Status == api.HealthCritical {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after a SetStatus(critical) whose send failed, the agent's check is %+v; want the keep-alives to send critical", c)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The defaults Registration and Check document: weights 1 and 1, a
// critical instance removed after 1 minute, TCP and HTTP checks every 10 s.
func TestRegistrationDefaults(t *testing.T) {
	for _, c := range []Check{{TTL: time.Second}, {TCP: "127.0.0.1:9001"}, {HTTP: "http://127.0.0.1:9001/health"}} {
		reg, _, err := agentRegistration(Registration{Name: "web", Addr: "127.0.0.1:9001", Check: c})
		if err != nil {
			t.Fatal(err)
		}
		if reg.ID != "web-127.0.0.1-9001" {
			t.Errorf("default ID %q, want web-127.0.0.1-9001", reg.ID)
		}
		if reg.Weights == nil || reg.Weights.Passing != 1 || reg.Weights.Warning != 1 {
			t.Errorf("default weights %+v, want passing 1, warning 1", reg.Weights)
		}
		if d := reg.Check.DeregisterCriticalServiceAfter; d != time.Minute.String() {
			t.Errorf("default DeregisterCriticalServiceAfter %q, want %q", d, time.Minute.String())
		}
		if c.TTL == 0 && reg.Check.Interval != (10*time.Second).String() {
			t.Errorf("default interval %q, want 10s", reg.Check.Interval)
		}
	}
}
