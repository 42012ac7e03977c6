package consul

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/logbuf"
	"github.com/hashicorp/consul/api"
)

// Integration tests: a real consul agent -dev on loopback.

func agentClient(t testing.TB, a *consultest.Agent) *api.Client { return a.API(t, "") }

func register(t testing.TB, c *api.Client, id, addr string, tags []string, meta map[string]string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	var p int
	for _, ch := range port {
		p = p*10 + int(ch-'0')
	}
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "web", Address: host, Port: p, Tags: tags, Meta: meta,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAgentRegisterCheckCriticalRecoverDeregister(t *testing.T) {
	a := consultest.Start(t)
	w, err := New("web", WithAddress(a.Addr()), WithWarning(true))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 10*time.Second, "the empty set", func(s discovery.State) bool { return s.Err == nil })
	if len(s.Endpoints) != 0 {
		t.Fatalf("fresh agent: %q", addrsOf(s))
	}

	ctx := context.Background()
	r, err := NewRegistrar(ctx, Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001", Weight: 5, WarningWeight: 2,
		Meta:  map[string]string{"zone": "z1"},
		Check: Check{TTL: 2 * time.Second}}, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s = nextWhere(t, w, 10*time.Second, "the registration", func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	if e := s.Endpoints[0]; e.ID != "web-1" || e.Addr != "127.0.0.1:9001" || e.Weight != 5 || e.Zone != "z1" || e.Health != discovery.Healthy {
		t.Fatalf("registered endpoint published as %+v", e)
	}

	if err := r.SetStatus(ctx, api.HealthWarning); err != nil {
		t.Fatal(err)
	}
	s = nextWhere(t, w, 10*time.Second, "warning", func(s discovery.State) bool {
		return len(s.Endpoints) == 1 && s.Endpoints[0].Health == discovery.Degraded
	})
	if s.Endpoints[0].Weight != 2 {
		t.Fatalf("degraded weight %d, want the warning weight 2", s.Endpoints[0].Weight)
	}
	if err := r.SetStatus(ctx, api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	nextWhere(t, w, 10*time.Second, "critical removes it", func(s discovery.State) bool { return s.Err == nil && len(s.Endpoints) == 0 })
	if err := r.SetStatus(ctx, api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	nextWhere(t, w, 10*time.Second, "recovery", func(s discovery.State) bool {
		return len(s.Endpoints) == 1 && s.Endpoints[0].Health == discovery.Healthy
	})

	// The Registrar keeps the TTL check passing: after several TTLs it is still there.
	time.Sleep(5 * time.Second)
	svc, _, err := agentClient(t, a).Health().Service("web", "", true, nil)
	if err != nil || len(svc) != 1 {
		t.Fatalf("after 2.5 TTLs: %d passing instances, err %v; the TTL was not kept alive", len(svc), err)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	nextWhere(t, w, 10*time.Second, "deregistration", func(s discovery.State) bool { return s.Err == nil && len(s.Endpoints) == 0 })
	services, err := agentClient(t, a).Agent().Services()
	if err != nil || len(services) != 0 {
		t.Fatalf("after Close the agent still has %v (err %v)", services, err)
	}
}

func TestAgentTCPAndHTTPChecks(t *testing.T) {
	a := consultest.Start(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	httpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer httpSrv.Close()
	ctx := context.Background()
	r1, err := NewRegistrar(ctx, Registration{Name: "web", ID: "tcp", Addr: tcp.Addr().String(),
		Check: Check{TCP: tcp.Addr().String(), Interval: 200 * time.Millisecond, Timeout: time.Second}}, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := NewRegistrar(ctx, Registration{Name: "web", ID: "http", Addr: strings.TrimPrefix(httpSrv.URL, "http://"),
		Check: Check{HTTP: httpSrv.URL + "/health", Interval: 200 * time.Millisecond}}, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	w, err := New("web", WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 15*time.Second, "both checks passing", func(s discovery.State) bool { return len(s.Endpoints) == 2 })
	tcp.Close() // the TCP check goes critical
	s := nextWhere(t, w, 15*time.Second, "the TCP instance dropped", func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	if s.Endpoints[0].ID != "http" {
		t.Fatalf("left %+v, want the http instance", s.Endpoints)
	}
}

func TestAgentTagsDatacenterFilter(t *testing.T) {
	a := consultest.Start(t)
	c := agentClient(t, a)
	register(t, c, "a", "127.0.0.1:7001", []string{"v1", "blue"}, map[string]string{"version": "1"})
	register(t, c, "b", "127.0.0.1:7002", []string{"v2", "blue"}, map[string]string{"version": "2"})
	register(t, c, "c", "127.0.0.1:7003", []string{"v2", "green"}, map[string]string{"version": "2"})
	for _, tc := range []struct {
		target, want string
	}{
		{"consul://" + a.Addr() + "/web", "a,b,c"},
		{"consul://" + a.Addr() + "/web?tag=blue", "a,b"},
		{"consul://" + a.Addr() + "/web?tag=v2&tag=blue", "b"},
		{"consul://" + a.Addr() + "/web?dc=dc1&tag=green", "c"},
		{"consul://" + a.Addr() + "/web?filter=" + url.QueryEscape(`Service.Meta.version == "2"`), "b,c"},
		{"consul://" + a.Addr() + "/nosuch", ""},
	} {
		w, err := discovery.Watch(context.Background(), tc.target)
		if err != nil {
			t.Fatal(err)
		}
		s := nextWhere(t, w, 10*time.Second, tc.target, func(s discovery.State) bool { return true })
		w.Close()
		var ids []string
		for _, e := range s.Endpoints {
			ids = append(ids, e.ID)
		}
		if got := strings.Join(ids, ","); got != tc.want || s.Err != nil {
			t.Errorf("%s: got %q (err %v), want %q", tc.target, got, s.Err, tc.want)
		}
	}
	w, err := discovery.Watch(context.Background(), "consul://"+a.Addr()+"/web?dc=nowhere")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 10*time.Second, "an unknown dc", func(s discovery.State) bool { return true })
	if s.Err == nil || !strings.Contains(s.Err.Error(), "datacenter") {
		t.Fatalf("unknown dc: %+v, want an error naming the datacenter", s)
	}
}

func TestAgentRestartKeepsLastKnownGoodAndResumes(t *testing.T) {
	a := consultest.Start(t)
	c := agentClient(t, a)
	for i, addr := range []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"} {
		register(t, c, string(rune('a'+i)), addr, nil, nil)
	}
	// Make the index climb well above what the fresh agent will have.
	for i := range 30 {
		register(t, c, "churn", "127.0.0.1:7999", []string{string(rune('a' + i%26))}, nil)
	}
	c.Agent().ServiceDeregister("churn")
	w, err := New("web", WithAddress(a.Addr()), WithErrorBackoff(50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 10*time.Second, "three", func(s discovery.State) bool { return len(s.Endpoints) == 3 })
	before := s.Synced

	a.Stop()
	s = nextWhere(t, w, 10*time.Second, "the outage", func(s discovery.State) bool { return s.Err != nil })
	if addrsOf(s) != "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003" {
		t.Fatalf("during the outage: %q, want the last known good set", addrsOf(s))
	}
	if s.Synced != before {
		t.Fatalf("Synced moved during the outage: %v -> %v", before, s.Synced)
	}

	a.Restart() // fresh catalog: the index starts over, lower than before
	c = agentClient(t, a)
	register(t, c, "b", "127.0.0.1:7002", nil, nil)
	register(t, c, "d", "127.0.0.1:7004", nil, nil)
	registered := time.Now()
	s = nextWhere(t, w, 15*time.Second, "the new set", func(s discovery.State) bool {
		return s.Err == nil && addrsOf(s) == "127.0.0.1:7002,127.0.0.1:7004"
	})
	// FAULTS row 9's figure, staleness after the restart: the agent is up
	// (Restart waited for its leader) and the set registered; the watcher
	// may still be in its error backoff (at most 500 ms here), then reads
	// (a plain read, and the consistent read its lower index calls for).
	// Not a blocking query's wait: 500 ms of slack for a busy box.
	if stale := time.Since(registered); stale > 500*time.Millisecond+500*time.Millisecond {
		t.Errorf("the new set arrived %v after it was registered on the restarted agent; want within the 500 ms backoff cap and a round trip", stale)
	} else {
		t.Logf("staleness after the restart: %v", stale.Round(time.Millisecond))
	}
	// And it keeps following changes from the new, lower index.
	c.Agent().ServiceDeregister("b")
	register(t, c, "e", "127.0.0.1:7005", nil, nil)
	nextWhere(t, w, 10*time.Second, "changes after the restart", func(s discovery.State) bool {
		return s.Err == nil && addrsOf(s) == "127.0.0.1:7004,127.0.0.1:7005"
	})
}

func TestAgentResolveNowBeatsParkedQuery(t *testing.T) {
	a := consultest.Start(t)
	c := agentClient(t, a)
	register(t, c, "a", "127.0.0.1:7001", nil, nil)
	proxy := consultest.Hold(t, a.Addr(), 30*time.Second)
	w, err := New("web", WithAddress(proxy.Addr()), WithWaitTime(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 10*time.Second, "the first set", func(s discovery.State) bool { return len(s.Endpoints) == 1 })

	// The blocking query is parked (held by the proxy): the change below
	// would reach us only after 30 s without ResolveNow.
	register(t, c, "b", "127.0.0.1:7002", nil, nil)
	start := time.Now()
	for range 50 {
		w.ResolveNow() // coalesced into one read
	}
	s := nextWhere(t, w, 5*time.Second, "the fresh set", func(s discovery.State) bool { return len(s.Endpoints) == 2 })
	took := time.Since(start)
	if took > 3*time.Second {
		t.Fatalf("ResolveNow took %v against a 30 s wait", took)
	}
	if n := proxy.ConsistentReads(); n != 1 {
		t.Fatalf("%d consistent reads for 50 coalesced ResolveNow calls, want 1", n)
	}
	if w.Stats().ForcedReads != 1 {
		t.Fatalf("Stats.ForcedReads = %d, want 1", w.Stats().ForcedReads)
	}
	t.Logf("ResolveNow to fresh set: %v (wait time 30 s), version %d", took, s.Version)

	// Rate limit: a second burst within the resolve interval waits for it
	// and is again a single read.
	register(t, c, "c", "127.0.0.1:7003", nil, nil)
	for range 50 {
		w.ResolveNow()
	}
	nextWhere(t, w, 5*time.Second, "the third", func(s discovery.State) bool { return len(s.Endpoints) == 3 })
	if n := proxy.ConsistentReads(); n != 2 {
		t.Fatalf("%d consistent reads after two bursts, want 2", n)
	}
}

func TestAgentRegistrarSurvivesAgentRestart(t *testing.T) {
	a := consultest.Start(t)
	r, err := NewRegistrar(context.Background(), Registration{Name: "web", Addr: "127.0.0.1:9009", Check: Check{TTL: time.Second}},
		WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a.Restart()
	w, err := New("web", WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 15*time.Second, "registered again", func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	if s.Endpoints[0].ID != r.ID() {
		t.Fatalf("got %+v", s.Endpoints)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	services, err := agentClient(t, a).Agent().Services()
	if err != nil || len(services) != 0 {
		t.Fatalf("after Close: %v, %v", services, err)
	}
}

func TestRegistrarRejectsBadRegistrations(t *testing.T) {
	for _, tc := range []struct {
		r    Registration
		want string
	}{
		{Registration{Name: "", Addr: "127.0.0.1:1", Check: Check{TTL: time.Second}}, "empty service name"},
		{Registration{Name: "web", Addr: "0.0.0.0:80", Check: Check{TTL: time.Second}}, "unspecified"},
		{Registration{Name: "web", Addr: "127.0.0.1:80"}, "exactly one"},
		{Registration{Name: "web", Addr: "127.0.0.1:80", Check: Check{TTL: time.Second, TCP: "127.0.0.1:80"}}, "exactly one"},
	} {
		_, err := NewRegistrar(context.Background(), tc.r, WithAddress("127.0.0.1:1"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewRegistrar(%+v) = %v, want an error naming %q", tc.r, err, tc.want)
		}
	}
	_, err := NewRegistrar(context.Background(), Registration{Name: "web", Addr: "127.0.0.1:80", Check: Check{TTL: time.Second}}, WithAddress("127.0.0.1:1"))
	if err == nil || !strings.Contains(err.Error(), `consul: register "web-127.0.0.1-80"`) {
		t.Fatalf("registering with no agent: %v", err)
	}
}

// Two instances registered at two spellings of one address (a non-canonical
// IPv6, an upper-case host name) are one endpoint, at the canonical
// address.
func TestAgentSpellingsOfOneAddressAreOneEndpoint(t *testing.T) {
	a := consultest.Start(t)
	c := agentClient(t, a)
	register(t, c, "a", "[2001:db8::1]:80", nil, nil)
	register(t, c, "b", "[2001:DB8:0:0::1]:80", nil, nil)
	register(t, c, "c", "Web.Example:8080", nil, nil)
	register(t, c, "d", "web.example:8080", nil, nil)
	w, err := New("web", WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 10*time.Second, "the set", func(s discovery.State) bool { return len(s.Endpoints) > 0 })
	var got []string
	for _, e := range s.Endpoints {
		got = append(got, e.ID+"="+e.Addr)
	}
	if g := strings.Join(got, " "); g != "a=[2001:db8::1]:80 c=web.example:8080" || s.Err != nil {
		t.Fatalf("published %s (err %v); want a=[2001:db8::1]:80 c=web.example:8080", g, s.Err)
	}
	if n := w.Stats().Rejected; n != 2 {
		t.Fatalf("Stats.Rejected = %d, want 2 (the second spelling of each address)", n)
	}
}

// An answer whose every instance is invalid keeps the last good value of
// each instance it still lists, but not of one deregistered: the agent said
// for certain that it is gone (review finding: a deregistered instance
// stayed published for as long as an invalid one remained).
func TestAgentAllInvalidKeepsOnlyInstancesStillListed(t *testing.T) {
	a := consultest.Start(t)
	c := agentClient(t, a)
	register(t, c, "web-a", "127.0.0.1:9001", nil, nil)
	register(t, c, "web-x", "224.0.0.1:9002", nil, nil) // multicast: rejected
	w, err := New("web", WithAddress(a.Addr()), WithErrorBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 10*time.Second, "web-a alone", func(s discovery.State) bool {
		return s.Err == nil && addrsOf(s) == "127.0.0.1:9001"
	})
	// web-a's entry turns invalid: its last good value stays.
	register(t, c, "web-a", "224.0.0.2:9001", nil, nil)
	s := nextWhere(t, w, 10*time.Second, "the error keeping web-a", func(s discovery.State) bool { return s.Err != nil })
	if addrsOf(s) != "127.0.0.1:9001" || !strings.Contains(s.Err.Error(), "all 2 instances were rejected") {
		t.Fatalf("endpoints %q err %v; want web-a kept and an error saying all were rejected", addrsOf(s), s.Err)
	}
	// web-a deregistered: nothing is left, though web-x is still listed.
	if err := c.Agent().ServiceDeregister("web-a"); err != nil {
		t.Fatal(err)
	}
	s = nextWhere(t, w, 10*time.Second, "web-a gone", func(s discovery.State) bool { return len(s.Endpoints) == 0 })
	if s.Err == nil || !strings.Contains(s.Err.Error(), "all 1 instances were rejected") {
		t.Fatalf("after deregistering web-a: err %v; want the rejection error still reported", s.Err)
	}
	register(t, c, "web-b", "127.0.0.1:9003", nil, nil)
	nextWhere(t, w, 10*time.Second, "web-b", func(s discovery.State) bool {
		return s.Err == nil && addrsOf(s) == "127.0.0.1:9003"
	})
}

// A Consul agent answers blocking queries from its streaming view (the
// default in -dev), and marks every such answer X-Consul-KnownLeader:
// false (hashicorp/consul#9776). Those answers are published as they come,
// not as ErrNoLeader first and the set a backoff later (review finding:
// every change took the ErrNoLeader detour, 167-243 ms per registration).
func TestAgentStreamingAnswersAreNotLeaderless(t *testing.T) {
	a := consultest.Start(t)
	c := agentClient(t, a)
	w, err := New("web", WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 10*time.Second, "the empty set", func(s discovery.State) bool { return s.Err == nil })
	var addrs []string
	for i := range 5 {
		addr := fmt.Sprintf("127.0.0.1:%d", 9001+i)
		register(t, c, fmt.Sprintf("web-%d", i), addr, nil, nil)
		addrs = append(addrs, addr)
		want := strings.Join(addrs, ",")
		nextWhere(t, w, 10*time.Second, want, func(s discovery.State) bool {
			if s.Err != nil {
				t.Fatalf("registration %d: State %d carries %v", i, s.Version, s.Err)
			}
			return addrsOf(s) == want
		})
	}
	if st := w.Stats(); st.Errors != 0 {
		t.Fatalf("Stats.Errors = %d after 5 registrations; want 0", st.Errors)
	}
}

// An agent that forgot the instance (a restart; or its reaper, after the
// check stayed critical past DeregisterCriticalServiceAfter) gets it back
// at the status SetStatus keeps. The Registrar used to register it as
// passing and send the status in a second request: a node set critical to
// drain was served as passing in between, and until the next keep-alive if
// that request failed.
func TestRegistrarRegistersAgainAtItsStatus(t *testing.T) {
	a := consultest.Start(t)
	direct := agentClient(t, a)
	var registers atomic.Int32
	seen := make(chan string, 10)
	front := agentFront(t, a.Addr(), func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
		rp.ServeHTTP(w, r)
		if strings.HasPrefix(r.URL.Path, "/v1/agent/service/register") && registers.Add(1) > 1 {
			// The registration again is applied; what does the agent serve?
			entries, _, err := direct.Health().Service("web", "", true, nil)
			if err != nil {
				seen <- "error: " + err.Error()
				return
			}
			seen <- fmt.Sprintf("%d passing", len(entries))
		}
	})
	r, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001",
		Check: Check{TTL: 3 * time.Second}}, WithAddress(front))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.SetStatus(context.Background(), api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	a.Restart()
	select {
	case got := <-seen:
		if got != "0 passing" {
			t.Fatalf("right after registering again, the agent serves %s; want 0 passing (the status is critical)", got)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the Registrar did not register again within 15 s of the agent's restart")
	}
}

// WithLogger(nil) keeps the default (nothing logged). It used to be stored
// as given, and the Registrar's first failed keep-alive (or the Watcher's
// first registry error) crashed the process from its goroutine: a nil
// *slog.Logger.
func TestWithLoggerNilKeepsTheDefault(t *testing.T) {
	o := defaultOptions()
	WithLogger(nil)(&o)
	if o.logger == nil {
		t.Fatal("WithLogger(nil) left no logger")
	}
	o.logger.Warn("consul: the default logger takes this") // would panic on nil
}

// An answer emptied by ACL filtering is an error (DESIGN.md), also when the
// blocking query is served from the agent's streaming view, which never
// sends X-Consul-Results-Filtered-By-ACLs: a token that loses service:read
// while the watcher is parked must not empty the published set.
func TestAgentACLEmptiedStreamingAnswerIsAnError(t *testing.T) {
	a, admin, pol, tok := webReadAgent(t, "127.0.0.1:9001")

	w, err := New("web", WithAddress(a.Addr()), WithToken(tok.SecretID), WithWaitTime(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 10*time.Second, "web-1", func(s discovery.State) bool { return s.Err == nil && len(s.Endpoints) == 1 })
	time.Sleep(500 * time.Millisecond) // parked on a blocking (streaming) query

	// The token loses service:read.
	pol.Rules = `node_prefix "" { policy = "read" }`
	if _, _, err := admin.ACL().PolicyUpdate(pol, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("no ACL error within 8 s: %v", err)
		}
		if len(s.Endpoints) == 0 {
			t.Fatalf("the ACL-emptied answer emptied the set: %+v", s)
		}
		if s.Err != nil && strings.Contains(s.Err.Error(), "ACL") {
			break // reported as an error, last known good set kept
		}
	}

	// The right comes back, and a truly empty service is still published
	// as empty.
	pol.Rules = `service "web" { policy = "read" } node_prefix "" { policy = "read" }`
	if _, _, err := admin.ACL().PolicyUpdate(pol, nil); err != nil {
		t.Fatal(err)
	}
	nextWhere(t, w, 10*time.Second, "web-1 again", func(s discovery.State) bool { return s.Err == nil && len(s.Endpoints) == 1 })
	time.Sleep(500 * time.Millisecond)
	if err := admin.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}

	nextWhere(t, w, 10*time.Second, "the authoritative empty set", func(s discovery.State) bool { return s.Err == nil && len(s.Endpoints) == 0 })
}

// catalogRegister registers instance id of web at port on an external node
// (not the agent's: the agent's anti-entropy would put its own services
// back in the catalog after a restore).
func catalogRegister(t *testing.T, c *api.Client, id string, port int) {
	t.Helper()
	_, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext", Address: "127.0.0.1",
		Service: &api.AgentService{ID: id, Service: "web", Address: "127.0.0.1", Port: port}}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

func catalogDeregister(t *testing.T, c *api.Client, id string) {
	t.Helper()
	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "ext", ServiceID: id}, nil); err != nil {
		t.Fatal(err)
	}
}

// FAULTS.md row 11 against a real agent: a snapshot restore sends the
// registry's index backwards. TestIndexRules proves the rules against a
// fake, and the agent restart test against a fresh, empty catalog; this one
// restores a snapshot, through the streaming backend and the RPC one.
//
// What the agent does (Consul 1.22): a blocking query parked at the newer
// index is not answered by the restore. The streaming view answers only
// when the wait ends (with the restored set, at the lower index); the RPC
// path answers once at once with the set from before the restore, at the
// same index, and then parks again. Either way the watcher learns of the
// restore when its wait ends, so the set is stale for up to WithWaitTime
// (60 s by default) unless a ResolveNow comes first. The test uses a 2 s
// wait. After it: exactly the restored set ("missed updates = 0"), and
// changes made after the restore arrive at once, from the lower index.
func TestAgentSnapshotRestoreIndexGoesBackwards(t *testing.T) {
	for _, streaming := range []bool{true, false} {
		t.Run(map[bool]string{true: "streaming", false: "rpc"}[streaming], func(t *testing.T) { snapshotRestore(t, streaming) })
	}
}

func snapshotRestore(t *testing.T, streaming bool) {
	a := consultest.StartWithHCL(t, fmt.Sprintf("use_streaming_backend = %v", streaming))
	c := agentClient(t, a)
	catalogRegister(t, c, "a", 7001)
	catalogRegister(t, c, "b", 7002)
	rc, _, err := c.Snapshot().Save(nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The index climbs well past the snapshot's, and the set moves on.
	for range 30 {
		catalogRegister(t, c, "churn", 7999)
		catalogDeregister(t, c, "churn")
	}
	catalogDeregister(t, c, "b")
	catalogRegister(t, c, "c", 7003)

	const wait = 2 * time.Second
	w, err := New("web", WithAddress(a.Addr()), WithWaitTime(wait), WithErrorBackoff(50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 10*time.Second, "a and c", func(s discovery.State) bool {
		return s.Err == nil && addrsOf(s) == "127.0.0.1:7001,127.0.0.1:7003"
	})
	time.Sleep(300 * time.Millisecond) // parked on a blocking query at the high index

	if err := c.Snapshot().Restore(nil, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	nextWhere(t, w, wait+3*time.Second, "the restored set", func(s discovery.State) bool {
		if s.Err == nil && addrsOf(s) != "127.0.0.1:7001,127.0.0.1:7003" && addrsOf(s) != "127.0.0.1:7001,127.0.0.1:7002" {
			t.Errorf("published %q after the restore; want the set from before it or the restored one", addrsOf(s))
		}
		return s.Err == nil && addrsOf(s) == "127.0.0.1:7001,127.0.0.1:7002"
	})
	t.Logf("restored set published %v after the restore; %d index resets", time.Since(restored).Round(time.Millisecond), w.Stats().IndexResets)
	// Still following, from the lower index: a change after the restore
	// arrives before the wait would end.
	catalogRegister(t, c, "d", 7004)
	changed := time.Now()
	nextWhere(t, w, 10*time.Second, "a change after the restore", func(s discovery.State) bool {
		return s.Err == nil && addrsOf(s) == "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7004"
	})
	if d := time.Since(changed); d > wait/2 {
		t.Errorf("a change after the restore took %v to arrive: the watcher blocked at an index from before the restore", d)
	}
}

// FAULTS.md row 13 against a real agent with ACLs: the watcher's token is
// deleted while it watches, and the agent answers 403 ("ACL not found").
// The figure: "last known good kept 100 %; token found in logs = 0". Every
// State published after the deletion must carry the set, the error must be
// reported, and neither errors nor logs (debug level) may hold the token's
// secret. TestTokenNeverLeaksAndACLFilteredEmptyIsError proves it against
// a fake's 403.
func TestAgentDeletedTokenKeepsLastKnownGoodAndNeverLeaks(t *testing.T) {
	a, admin, _, tok := webReadAgent(t, "127.0.0.1:9001", "127.0.0.1:9002")
	logs := &logbuf.Buffer{}
	w, err := New("web", WithAddress(a.Addr()), WithToken(tok.SecretID), WithWaitTime(time.Second),
		WithErrorBackoff(50*time.Millisecond, 200*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const good = "127.0.0.1:9001,127.0.0.1:9002"
	nextWhere(t, w, 10*time.Second, "the set", func(s discovery.State) bool { return s.Err == nil && addrsOf(s) == good })

	if _, err := admin.ACL().TokenDelete(tok.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	// Every State for 2 s after the deletion: the set, and the error.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var states, errs int
	var lastErr error
	for {
		s, err := w.Next(ctx)
		if err != nil {
			break
		}
		states++
		if addrsOf(s) != good {
			t.Errorf("State %d after the token's deletion has %q (err %v); want the last known good set", states, addrsOf(s), s.Err)
		}
		if s.Err != nil {
			errs++
			lastErr = s.Err
			if strings.Contains(s.Err.Error(), tok.SecretID) {
				t.Errorf("the token's secret is in the error: %v", s.Err)
			}
		}
	}
	w.Close()
	if errs == 0 {
		t.Fatalf("no error reported in 2 s after the watcher's token was deleted (%d States)", states)
	}
	if strings.Contains(logs.String(), tok.SecretID) {
		t.Errorf("the token's secret is in the logs:\n%s", logs.String())
	}
	t.Logf("%d States after the deletion; %d with an error, the last: %v", states, errs, lastErr)
}

// FAULTS.md row 9: "The watcher backs off with jitter" while the agent is
// down. TestAgentRestartKeepsLastKnownGoodAndResumes passes with the jitter
// gone (it only needs the watcher to come back), and so does every other
// test of the package. Here 8 watchers follow one real agent, each through
// its own pass-through front that notes when each request arrives; the agent
// is stopped, and the fronts answer 502 from then on. The gaps between a
// watcher's retries, each divided by the backoff it should be (100 ms x2:
// 200, 400, 800 ms), must spread over the +-20 % jitter: a backoff without
// jitter sends the whole fleet back in lock-step, and the ratios bunch at 1.
func TestAgentOutageBackoffIsJittered(t *testing.T) {
	a := consultest.Start(t)
	register(t, agentClient(t, a), "a", "127.0.0.1:7001", nil, nil)
	const watchers = 8
	var (
		mu      sync.Mutex
		stopped time.Time
		events  [watchers][]event
	)
	for i := range watchers {
		front := agentFront(t, a.Addr(), func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
			start := time.Now()
			rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			rp.ServeHTTP(rec, r)
			mu.Lock()
			if end := time.Now(); !stopped.IsZero() && end.After(stopped) { // the parked query too
				events[i] = append(events[i], event{start, end, rec.status >= 500})
			}
			mu.Unlock()
		})
		w, err := New("web", WithAddress(front), WithWaitTime(10*time.Second), WithErrorBackoff(100*time.Millisecond, 2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		nextWhere(t, w, 10*time.Second, fmt.Sprintf("watcher %d's set", i), func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	}
	mu.Lock()
	stopped = time.Now()
	mu.Unlock()
	a.Stop()
	time.Sleep(2 * time.Second)

	mu.Lock()
	defer mu.Unlock()
	lo, hi := 10.0, 0.0
	var n int
	for i := range watchers {
		// The k-th failed answer in a row (from 0) is followed by a
		// backoff of 100 ms x 2^k before the next request.
		evs, k := events[i], 0
		for j := 0; j+1 < len(evs); j++ {
			if !evs[j].failed {
				k = 0
				continue
			}
			nominal := 100 * time.Millisecond << k
			k++
			if nominal < 200*time.Millisecond {
				continue // 100 ms: too short to tell jitter from scheduling
			}
			r := float64(evs[j+1].start.Sub(evs[j].end)) / float64(nominal)
			lo, hi = min(lo, r), max(hi, r)
			n++
		}
	}
	t.Logf("%d retry gaps of %d watchers, as a share of their backoff: %.3f to %.3f", n, watchers, lo, hi)
	if n < watchers*2 {
		t.Fatalf("only %d retry gaps in 2 s of outage from %d watchers; want about %d", n, watchers, watchers*3)
	}
	if lo < 0.8-0.05 {
		t.Errorf("a retry came %.2f of its backoff after the previous one: sooner than the backoff less its 20 %% jitter", lo)
	}
	if hi-lo < 0.15 {
		t.Errorf("the retry gaps of %d watchers span %.3f to %.3f of their backoffs: no jitter (want them spread over +-20 %%)", watchers, lo, hi)
	}
}

type event struct {
	start, end time.Time
	failed     bool
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// webReadAgent starts a real agent with ACLs on (default deny), registers
// web-N at each of addrs through a management client (admin), and makes a
// token (tok) whose policy (pol) reads the web service and the nodes.
func webReadAgent(t *testing.T, addrs ...string) (a *consultest.Agent, admin *api.Client, pol *api.ACLPolicy, tok *api.ACLToken) {
	t.Helper()
	const root = "3f2a7c1e-5b1d-4e1a-9c55-1f6a0e6f4d21"
	a = consultest.StartWithHCL(t, `acl { enabled = true
		default_policy = "deny"
		tokens { initial_management = "`+root+`"
			agent = "`+root+`" } }`)
	admin = a.API(t, root)
	// The agent has a leader before the leader has made the management
	// token: until then every request with it is refused ("ACL system
	// must be bootstrapped"), which a busy box made a failed test.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := admin.ACL().TokenReadSelf(nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the management token was not usable within 20 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var err error
	for i, addr := range addrs {
		register(t, admin, fmt.Sprintf("web-%d", i+1), addr, nil, nil)
	}
	pol, _, err = admin.ACL().PolicyCreate(&api.ACLPolicy{Name: "web-read",
		Rules: `service "web" { policy = "read" } node_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err = admin.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, admin, pol, tok
}
