package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/hashicorp/consul/api"
)

// fakeAgent is an httptest Consul agent for unit tests of one behaviour each.
// It answers /v1/health/service/ with whatever respond returns.
type fakeAgent struct {
	srv     *httptest.Server
	mu      sync.Mutex
	respond func(r *http.Request, n int) (status int, index string, body string)
	reqs    []*http.Request
	n       atomic.Int64
	header  http.Header // added to every answer
	// leaderless, if set, says which answers carry X-Consul-KnownLeader:
	// false, as a server without a leader sends. Set it under mu.
	leaderless func(n int) bool
	// aclFiltered, if set, says which answers carry
	// X-Consul-Results-Filtered-By-ACLs: true. Set it under mu.
	aclFiltered func(n int) bool
}

func newFakeAgent(t *testing.T, respond func(r *http.Request, n int) (int, string, string)) *fakeAgent {
	f := &fakeAgent{respond: respond}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(f.n.Add(1))
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.Background()))
		respond, leaderless, aclFiltered := f.respond, f.leaderless, f.aclFiltered
		f.mu.Unlock()
		status, index, body := respond(r, n)
		if status == -1 { // park like a blocking query until the client goes away
			<-r.Context().Done()
			return
		}
		if index != "" {
			w.Header().Set("X-Consul-Index", index)
		}
		// The api client stops parsing headers at a missing LastContact.
		w.Header().Set("X-Consul-LastContact", "0")
		w.Header().Set("X-Consul-KnownLeader", "true")
		if leaderless != nil && leaderless(n) {
			w.Header().Set("X-Consul-KnownLeader", "false")
		}
		if aclFiltered != nil && aclFiltered(n) {
			w.Header().Set("X-Consul-Results-Filtered-By-ACLs", "true")
		}
		for k, v := range f.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAgent) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeAgent) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

// entriesJSON renders health entries for the given addresses ("host:port").
func entriesJSON(t *testing.T, addrs ...string) string {
	var out []*api.ServiceEntry
	for i, a := range addrs {
		host, port, _ := strings.Cut(a, ":")
		var p int
		fmt.Sscan(port, &p)
		out = append(out, &api.ServiceEntry{
			Node:    &api.Node{Node: "n1", Address: "10.9.9.9"},
			Service: &api.AgentService{ID: fmt.Sprintf("web-%d", i), Service: "web", Address: host, Port: p, Weights: api.AgentWeights{Passing: 1, Warning: 1}},
			Checks:  api.HealthChecks{{Status: api.HealthPassing}},
		})
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// nextWhere calls Next until ok accepts a State, bounded by d.
func nextWhere(t *testing.T, w discovery.Watcher, d time.Duration, what string, ok func(discovery.State) bool) discovery.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var last discovery.State
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v; last state: %+v", what, err, last)
		}
		if ok(s) {
			return s
		}
		last = s
	}
}

func addrsOf(s discovery.State) string {
	var a []string
	for _, e := range s.Endpoints {
		a = append(a, e.Addr)
	}
	return strings.Join(a, ",")
}

// fast makes unit tests quick: tiny backoff and resolve interval.
var fast = []Option{WithErrorBackoff(10*time.Millisecond, 50*time.Millisecond), WithResolveInterval(10 * time.Millisecond)}

func TestGarbageKeepsLastKnownGood(t *testing.T) {
	good := entriesJSON(t, "10.0.0.1:80", "10.0.0.2:80")
	for _, bad := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"html 502", "<html><body>Bad Gateway</body></html>", 502, "502"},
		{"truncated json", good[:len(good)/2], 200, "unexpected EOF"},
		{"html 200", "<html>oops</html>", 200, "invalid character"},
		{"wrong shape", `{"not":"a list"}`, 200, "cannot unmarshal"},
		{"every instance invalid", entriesJSON(t, "0.0.0.0:80", "10.0.0.3:0"), 200, "all 2 instances were rejected"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
				if n == 1 {
					return 200, "10", good
				}
				return bad.status, "11", bad.body
			})
			w, err := New("web", append(fast, WithAddress(f.addr()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			s := nextWhere(t, w, 5*time.Second, "the error", func(s discovery.State) bool { return s.Err != nil })
			if addrsOf(s) != "10.0.0.1:80,10.0.0.2:80" || !strings.Contains(s.Err.Error(), bad.want) || !strings.Contains(s.Err.Error(), `service "web"`) {
				t.Fatalf("after %s: endpoints %q err %v; want the last known good set and an error naming %q", bad.name, addrsOf(s), s.Err, bad.want)
			}
		})
	}
}

func TestInvalidAddressesDroppedGoodKept(t *testing.T) {
	body := entriesJSON(t, "10.0.0.1:80", "10.0.0.2:0", "0.0.0.0:80", "224.0.0.1:80", "169.254.1.1:80", "10.0.0.1:80", "10.0.0.3:65535")
	f := newFakeAgent(t, func(*http.Request, int) (int, string, string) { return 200, "7", body })
	var logs bytes.Buffer
	w, err := New("web", append(fast, WithAddress(f.addr()), WithWaitTime(time.Second), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 5*time.Second, "a set", func(discovery.State) bool { return true })
	if addrsOf(s) != "10.0.0.1:80,10.0.0.3:65535" || s.Err != nil {
		t.Fatalf("published %q (err %v), want only the two valid, distinct addresses", addrsOf(s), s.Err)
	}
	if got := w.Stats().Rejected; got < 5 {
		t.Fatalf("Stats.Rejected = %d, want >= 5", got)
	}
	for _, why := range []string{"out of range", "unspecified", "multicast", "link-local", "already used"} {
		if !strings.Contains(logs.String(), why) {
			t.Errorf("log does not give the reason %q:\n%s", why, logs.String())
		}
	}
}

func TestHugeAnswerRejected(t *testing.T) {
	good := entriesJSON(t, "10.0.0.1:80")
	huge := entriesJSON(t, strings.Split(strings.Repeat("10.0.0.5:80,", 200), ",")[:200]...)
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if n == 1 {
			return 200, "10", good
		}
		return 200, "11", huge
	})
	w, err := New("web", append(fast, WithAddress(f.addr()), WithMaxResponse(int64(len(good)+100), 100))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The good set and the error may be coalesced into one State: the
	// error's State carries the good set as the last known good one.
	s := nextWhere(t, w, 5*time.Second, "the error", func(s discovery.State) bool { return s.Err != nil })
	if !errors.Is(s.Err, ErrResponseTooLarge) || addrsOf(s) != "10.0.0.1:80" {
		t.Fatalf("err %v, endpoints %q; want ErrResponseTooLarge and the last known good set", s.Err, addrsOf(s))
	}
	// The entry cap applies even when the body fits.
	w2, err := New("web", append(fast, WithAddress(f.addr()), WithMaxResponse(1<<30, 100))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	s = nextWhere(t, w2, 5*time.Second, "the entry-cap error", func(s discovery.State) bool { return s.Err != nil })
	if !errors.Is(s.Err, ErrResponseTooLarge) || !strings.Contains(s.Err.Error(), "more than 100 entries") {
		t.Fatalf("err %v, want the entry cap named", s.Err)
	}
}

// An instance whose address is 1 MiB (a hostile or broken registration) is
// rejected, and neither State.Err nor a log line carries the whole address
// (review finding: CanonicalAddr quoted it whole).
func TestHugeInstanceAddressErrorIsShort(t *testing.T) {
	good := entriesJSON(t, "10.0.0.1:80")
	huge := entriesJSON(t, strings.Repeat("a", 1<<20)+":80")
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if n == 1 {
			return 200, "10", good
		}
		return 200, "11", huge
	})
	var logs bytes.Buffer
	w, err := New("web", append(fast, WithAddress(f.addr()), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 5*time.Second, "the error", func(s discovery.State) bool { return s.Err != nil })
	w.Close() // its goroutine has exited: logs may be read
	msg := s.Err.Error()
	if !strings.Contains(msg, "all 1 instances were rejected") || !strings.Contains(msg, "too long") || addrsOf(s) != "10.0.0.1:80" {
		t.Fatalf("err %.200q, endpoints %q; want the rejection and the last known good set", msg, addrsOf(s))
	}
	if len(msg) > 2<<10 {
		t.Fatalf("State.Err is %d bytes (starts %.120q); want at most 2 KiB", len(msg), msg)
	}
	if !strings.Contains(logs.String(), "instance rejected") {
		t.Fatalf("the rejection was not logged:\n%.500s", logs.String())
	}
	for line := range strings.Lines(logs.String()) {
		if len(line) > 2<<10 {
			t.Fatalf("a log line of %d bytes (starts %.120q); want at most 2 KiB", len(line), line)
		}
	}
}

// Instances registered without an ID all get the service's name as their ID,
// one per node. Each endpoint's ID must stay the same while the other node's
// instance leaves the answer (critical) and comes back (review finding: the
// node prefix was added only while the ID occurred twice, so "n1/web"
// became "web" and back). A unique explicit ID is left as it is, and an
// explicit ID repeated on two nodes in one answer gets the prefix.
func TestEndpointIDsStayStableAcrossNodes(t *testing.T) {
	entry := func(node, id, addr string, port int) *api.ServiceEntry {
		return &api.ServiceEntry{
			Node:    &api.Node{Node: node, Address: addr},
			Service: &api.AgentService{ID: id, Service: "web", Address: addr, Port: port},
			Checks:  api.HealthChecks{{Status: api.HealthPassing}},
		}
	}
	both := []*api.ServiceEntry{
		entry("n1", "web", "10.0.0.1", 80), entry("n2", "web", "10.0.0.2", 80),
		entry("n1", "web-x", "10.0.0.1", 81), entry("n1", "dup", "10.0.0.1", 82), entry("n2", "dup", "10.0.0.2", 82),
	}
	onlyN1 := []*api.ServiceEntry{both[0], both[2], both[3], both[4]} // n2's web is critical: filtered by Consul
	answers := [][]*api.ServiceEntry{both, onlyN1, both}
	step := make(chan struct{}) // the test lets each answer after the first go
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if n > len(answers) {
			return -1, "", "" // park until the watcher goes
		}
		if n > 1 {
			select {
			case <-step:
			case <-r.Context().Done():
				return -1, "", ""
			}
		}
		b, err := json.Marshal(answers[n-1])
		if err != nil {
			panic(err)
		}
		return 200, fmt.Sprint(10 + n), string(b)
	})
	w, err := New("web", append(fast, WithAddress(f.addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	idsOf := func(s discovery.State) string {
		var ids []string
		for _, e := range s.Endpoints {
			ids = append(ids, e.ID+"="+e.Addr)
		}
		return strings.Join(ids, " ")
	}
	const wantBoth = "n1/dup=10.0.0.1:82 n1/web=10.0.0.1:80 n2/dup=10.0.0.2:82 n2/web=10.0.0.2:80 web-x=10.0.0.1:81"
	for i, want := range []string{
		wantBoth,
		"n1/dup=10.0.0.1:82 n1/web=10.0.0.1:80 n2/dup=10.0.0.2:82 web-x=10.0.0.1:81",
		wantBoth,
	} {
		if i > 0 {
			select {
			case step <- struct{}{}:
			case <-time.After(5 * time.Second):
				t.Fatalf("the watcher did not ask for answer %d", i+1)
			}
		}
		s := nextWhere(t, w, 5*time.Second, fmt.Sprintf("answer %d", i+1), func(discovery.State) bool { return true })
		if got := idsOf(s); got != want || s.Err != nil {
			t.Fatalf("answer %d published %s (err %v), want %s", i+1, got, s.Err, want)
		}
	}
}

// An error answer's body becomes the text of Consul's client error, which
// is logged and published in State.Err: a proxy's 8 MiB error page is cut
// to maxErrorBody (review finding: an 8 MiB State.Err, 88 MiB allocated per
// attempt).
func TestHugeErrorPageIsCut(t *testing.T) {
	page := "<html>" + strings.Repeat("Bad Gateway ", 8<<20/12) + "</html>"
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if n == 1 {
			return 200, "10", entriesJSON(t, "10.0.0.1:80")
		}
		return 502, "", page
	})
	w, err := New("web", append(fast, WithAddress(f.addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 5*time.Second, "the error", func(s discovery.State) bool { return s.Err != nil })
	msg := s.Err.Error()
	if len(msg) > maxErrorBody+200 || !strings.Contains(msg, "502") || !strings.Contains(msg, "Bad Gateway") || addrsOf(s) != "10.0.0.1:80" {
		t.Fatalf("error of %d bytes (starts %.120q), endpoints %q; want the 502 and the page's start, at most %d bytes, and the last known good set",
			len(msg), msg, addrsOf(s), maxErrorBody+200)
	}
}

// An answer of many tiny entries is refused as soon as its body holds more
// than the entry cap, before any is decoded: FAULTS row 22 bounds the heap
// growth by the body cap + 1 MiB (review finding: 8 MiB of tiny entries
// with caps of 16 MiB and 1000 entries decoded 365,000 entries, 152 MiB,
// before the count was checked). Allocation is counted with TotalAlloc, which
// only grows, so the bound holds for the peak too.
func TestManyTinyEntriesRefusedBeforeDecoding(t *testing.T) {
	const bodyCap = 16 << 20
	huge := "[" + strings.Repeat(`{"Service":{"Port":1}},`, 8<<20/23) + `{"Service":{"Port":1}}]`
	good := entriesJSON(t, "10.0.0.1:80")
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if n == 1 {
			return 200, "10", good
		}
		return 200, "11", huge
	})
	s, grew := allocatedForNext(t, f, bodyCap, 5*time.Second, "the entry-cap error", func(s discovery.State) bool { return s.Err != nil })
	if !errors.Is(s.Err, ErrResponseTooLarge) || addrsOf(s) != "10.0.0.1:80" {
		t.Fatalf("err %v, endpoints %q; want ErrResponseTooLarge and the last known good set", s.Err, addrsOf(s))
	}
	if grew > bodyCap+1<<20 {
		t.Fatalf("%d MiB allocated reading one answer; want at most the body cap + 1 MiB (%d MiB)", grew>>20, (bodyCap+1<<20)>>20)
	} else {
		t.Logf("%d KiB allocated reading an 8 MiB answer of tiny entries", grew>>10)
	}
}

func TestTokenNeverLeaksAndACLFilteredEmptyIsError(t *testing.T) {
	const token = "s3cr3t-token-value"
	var sawToken atomic.Bool
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if r.Header.Get("X-Consul-Token") == token {
			sawToken.Store(true)
		}
		if strings.Contains(r.URL.RawQuery, token) {
			return 500, "", "token in the URL"
		}
		if n == 1 {
			return 200, "3", entriesJSON(t, "10.0.0.1:80")
		}
		return 403, "", "ACL not found"
	})
	var logs bytes.Buffer
	w, err := New("web", append(fast, WithAddress(f.addr()), WithToken(token), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 5*time.Second, "the 403", func(s discovery.State) bool { return s.Err != nil })
	if !strings.Contains(s.Err.Error(), "403") || addrsOf(s) != "10.0.0.1:80" {
		t.Fatalf("err %v endpoints %q", s.Err, addrsOf(s))
	}
	w.Close()
	if !sawToken.Load() {
		t.Fatal("the token was not sent in X-Consul-Token")
	}
	if strings.Contains(s.Err.Error(), token) || strings.Contains(logs.String(), token) {
		t.Fatalf("the token leaked into an error or log:\n%v\n%s", s.Err, logs.String())
	}

	f2 := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		return 200, "4", "[]"
	})
	f2.header = http.Header{"X-Consul-Results-Filtered-By-Acls": {"true"}}
	w2, err := New("web", append(fast, WithAddress(f2.addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	s = nextWhere(t, w2, 5*time.Second, "the ACL error", func(discovery.State) bool { return true })
	if s.Err == nil || !strings.Contains(s.Err.Error(), "ACL") {
		t.Fatalf("an answer emptied by ACLs was published as %+v, want an error", s)
	}

	// After a good set (FAULTS row 13: the last known good set is kept):
	// an answer the ACLs emptied later is an error that keeps the set.
	f3 := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if n == 1 {
			return 200, "5", entriesJSON(t, "10.0.0.1:80")
		}
		return 200, "6", "[]"
	})
	f3.mu.Lock()
	f3.aclFiltered = func(n int) bool { return n > 1 }
	f3.mu.Unlock()
	w3, err := New("web", append(fast, WithAddress(f3.addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Close()
	s = nextWhere(t, w3, 5*time.Second, "the ACL error after a good set", func(s discovery.State) bool { return s.Err != nil })
	if !strings.Contains(s.Err.Error(), "ACL") || addrsOf(s) != "10.0.0.1:80" {
		t.Fatalf("an answer emptied by ACLs after a good set: err %v, endpoints %q; want the ACL error and the last known good set", s.Err, addrsOf(s))
	}
}

func TestRedirectRefusedTokenNotForwarded(t *testing.T) {
	target := newRedirectTarget(t)
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) { return 200, "1", "" })
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.url+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	})
	wantRedirectRefused(t, f.addr())
	if target.token.Load() {
		t.Fatal("the token was forwarded to the redirect target")
	}
}

// redirectTarget is where a hostile or misconfigured agent redirects to.
type redirectTarget struct {
	url     string
	reached atomic.Bool // a request arrived
	token   atomic.Bool // a request arrived with the token
}

func newRedirectTarget(t *testing.T) *redirectTarget {
	rt := &redirectTarget{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt.reached.Store(true)
		if r.Header.Get("X-Consul-Token") != "" {
			rt.token.Store(true)
		}
		fmt.Fprint(w, "[]")
	}))
	t.Cleanup(srv.Close)
	rt.url = srv.URL
	return rt
}

// wantRedirectRefused watches "web" with a token at the agent addr, whose
// answers redirect, and wants the first State to carry ErrRedirect.
func wantRedirectRefused(t *testing.T, addr string) {
	t.Helper()
	w, err := New("web", append(fast, WithAddress(addr), WithToken("redirect-token"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 5*time.Second, "the redirect error", func(discovery.State) bool { return true })
	if !errors.Is(s.Err, ErrRedirect) {
		t.Fatalf("err = %v, want ErrRedirect", s.Err)
	}
}

func TestIndexRules(t *testing.T) {
	// An answer at a lower index than the last one published (10.0.0.2) may
	// be a new leader's stale view: it is never published; the consistent
	// read that follows it is. The second case has an error in between (the
	// old leader's death makes the follower answer 500): the watcher must
	// not forget the index it last published, because the plain read after
	// the error may reach a newly elected leader that has not caught up, as
	// TestClusterLeaderLoss once saw under load.
	type answer struct {
		status       int
		index, entry string
	}
	for _, c := range []struct {
		name    string
		answers []answer
		// the requests' index parameters, "" for a plain read; the last
		// one must be consistent
		indexes []string
	}{
		{"backwards is read again consistently",
			[]answer{{200, "100", "10.0.0.1:80"}, {200, "5", "10.0.0.2:80"}, {200, "6", "10.0.0.3:80"}},
			[]string{"", "100", ""}},
		{"backwards after an error is read again consistently",
			[]answer{{200, "100", "10.0.0.1:80"}, {500, "", ""}, {200, "5", "10.0.0.2:80"}, {200, "101", "10.0.0.3:80"}},
			[]string{"", "100", "", ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
				if n > len(c.answers) {
					return -1, "", ""
				}
				a := c.answers[n-1]
				if a.status != 200 {
					return a.status, "", "rpc error getting client: connection refused"
				}
				return 200, a.index, entriesJSON(t, a.entry)
			})
			w, err := New("web", append(fast, WithAddress(f.addr()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			nextWhere(t, w, 5*time.Second, "10.0.0.3", func(s discovery.State) bool {
				if addrsOf(s) == "10.0.0.2:80" {
					t.Errorf("the answer whose index went backwards was published")
				}
				return addrsOf(s) == "10.0.0.3:80"
			})
			reqs := f.requests()
			if len(reqs) < len(c.indexes) {
				t.Fatalf("%d requests, want at least %d", len(reqs), len(c.indexes))
			}
			for i, want := range c.indexes {
				q := reqs[i].URL.Query()
				if got := q.Get("index"); got != want {
					t.Fatalf("request %d has index %q, want %q (\"\" is a plain read)", i+1, got, want)
				}
				if want != "" && q.Get("wait") == "" {
					t.Fatal("blocking query sent without an explicit wait")
				}
				if last := i == len(c.indexes)-1; q.Has("consistent") != last {
					t.Fatalf("request %d: consistent is %v, want %v: %s", i+1, q.Has("consistent"), last, reqs[i].URL.RawQuery)
				}
			}
			if got := w.Stats().IndexResets; got != 1 {
				t.Fatalf("IndexResets = %d, want 1", got)
			}
		})
	}
	t.Run("zero or missing index is clamped and rate-limited", func(t *testing.T) {
		f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
			if n%2 == 0 {
				return 200, "", entriesJSON(t, "10.0.0.1:80")
			}
			return 200, "0", entriesJSON(t, "10.0.0.1:80")
		})
		w, err := New("web", append(fast, WithAddress(f.addr()))...)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond) // observe the request rate over a fixed window
		w.Close()
		reqs := f.requests()
		if len(reqs) > 4 {
			t.Fatalf("%d requests in 2.5 s with a zero index, want at most 1/s", len(reqs))
		}
		for _, r := range reqs[1:] {
			if r.URL.Query().Get("index") != "1" {
				t.Fatalf("sent index %q after a zero index, want 1", r.URL.Query().Get("index"))
			}
		}
	})
	t.Run("errors back off", func(t *testing.T) {
		f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) { return 500, "", "boom" })
		w, err := New("web", WithAddress(f.addr()), WithErrorBackoff(100*time.Millisecond, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // observe the request rate over a fixed window
		w.Close()
		// 0, ~0.1, ~0.3, ~0.7, ~1.5 s: at most 5 (6 with jitter), never a busy loop.
		if n := len(f.requests()); n < 2 || n > 6 {
			t.Fatalf("%d requests in 1.5 s of errors, want 2-6 (exponential backoff)", n)
		}
	})
}

func TestCloseAbortsParkedQuery(t *testing.T) {
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if n == 1 {
			return 200, "10", entriesJSON(t, "10.0.0.1:80")
		}
		return -1, "", ""
	})
	w, err := New("web", WithAddress(f.addr()), WithWaitTime(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	nextWhere(t, w, 5*time.Second, "the first set", func(discovery.State) bool { return true })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for f.n.Load() < 2 && ctx.Err() == nil { // until the blocking query is parked
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	w.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v with a query parked, want well under 1 s", d)
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	w.Close()
}

func TestTargets(t *testing.T) {
	for _, tc := range []struct{ target, want string }{
		{"consul://127.0.0.1:8500/", "path"},
		{"consul://127.0.0.1:8500/a/b", "path"},
		{"consul://127.0.0.1:8500,127.0.0.2:8500/web", "one agent"},
		{"consul://127.0.0.1:8500/web?token=x", "never read from the target"},
		{"consul://127.0.0.1:8500/web?healthy=critical", "passing or warning"},
		{"consul://127.0.0.1:8500/web?bogus=1", `unknown option "bogus"`},
		{"consul://127.0.0.1:8500/web?dc=", "dc"},
		{"consul://127.0.0.1:8500/web?dc=a&dc=b", "dc takes one"},
		{"consul://127.0.0.1:8500/web?near=a&near=b", "near takes one"},
		{"consul://127.0.0.1:8500/web?tag=a&tag=", "empty tag"},
		{"consul://127.0.0.1:8500/web?healthy=passing&healthy=warning", "healthy takes one"},
	} {
		w, err := discovery.Watch(context.Background(), tc.target)
		if err == nil {
			w.Close()
			t.Errorf("Watch(%q) succeeded", tc.target)
			continue
		}
		if !errors.Is(err, discovery.ErrBadTarget) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Watch(%q) = %v, want ErrBadTarget naming %q", tc.target, err, tc.want)
		}
	}
	w, err := discovery.Watch(context.Background(), "consul://127.0.0.1:1/web?tag=a&tag=b&dc=dc1&near=_agent&filter=Service.Port%20%3E%200&healthy=warning")
	if err != nil {
		t.Fatal(err)
	}
	cw := w.(*Watcher)
	if cw.opts.datacenter != "dc1" || len(cw.opts.tags) != 2 || cw.opts.near != "_agent" || cw.opts.filter != "Service.Port > 0" || !cw.opts.allowWarning {
		t.Fatalf("options from target: %+v", cw.opts)
	}
	w.Close()
	// healthy=passing is the default: instances at warning are not served.
	w, err = discovery.Watch(context.Background(), "consul://127.0.0.1:1/web?healthy=passing")
	if err != nil {
		t.Fatal(err)
	}
	if w.(*Watcher).opts.allowWarning {
		t.Errorf("healthy=passing: allowWarning = true, want false")
	}
	w.Close()
}

// FAULTS row 30 (plaintext fallbacks = 0): the agent's TLS certificate
// fails verification; the watcher must report the error and never send a
// request unverified or in plaintext instead. A plaintext request to the
// TLS port never reaches the handler (the server answers it with a 400 of
// its own), so the handler's count cannot see one: the listener also
// counts the connections whose first byte is not a TLS handshake.
func TestTLSVerifyFailureIsAnErrorNeverADowngrade(t *testing.T) {
	var served atomic.Int64
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprint(w, "[]")
	}))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	fl := &firstByteListener{Listener: tlsSrv.Listener}
	tlsSrv.Listener = fl
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	w, err := New("web", append(fast, WithAddress(tlsSrv.URL), WithToken("downgrade-token"), WithAPIConfig(func(c *api.Config) {
		c.TLSConfig.CAFile = "" // the test server's certificate is self-signed: not trusted
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 5*time.Second, "the TLS error", func(discovery.State) bool { return true })
	if s.Err == nil || !strings.Contains(s.Err.Error(), "certificate") {
		t.Fatalf("state %+v, want a certificate verification error", s)
	}
	// Nothing was served: no request went through without verification,
	// and none fell back to plaintext.
	if served.Load() != 0 || len(s.Endpoints) != 0 {
		t.Fatalf("%d requests served despite the failed verification; endpoints %v", served.Load(), s.Endpoints)
	}
	time.Sleep(300 * time.Millisecond) // several retries at the test's 10-50 ms backoff
	w.Close()
	if fl.conns.Load() == 0 {
		t.Fatal("no connection reached the TLS port: the test proved nothing")
	}
	if n := fl.plain.Load(); n != 0 {
		t.Fatalf("%d of %d connections to the TLS port sent plaintext; want 0 (no downgrade)", n, fl.conns.Load())
	}
}

// CONSUL_HTTP_SSL_VERIFY=false (or a value that is not a boolean, which
// Consul's client also reads as false) is refused with an error naming the
// variable, by New, by the consul:// target and by NewRegistrar, before any
// request; true is accepted.
func TestSSLVerifyOffInEnvironmentIsRefused(t *testing.T) {
	f := newFakeAgent(t, func(*http.Request, int) (int, string, string) { return 200, "1", "[]" })
	for _, tc := range []struct{ value, want string }{
		{"false", "is refused"},
		{"0", "is refused"},
		{"nope", "not a boolean"},
	} {
		t.Setenv("CONSUL_HTTP_SSL_VERIFY", tc.value)
		check := func(what string, err error) {
			t.Helper()
			if err == nil || !strings.Contains(err.Error(), "CONSUL_HTTP_SSL_VERIFY") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s with CONSUL_HTTP_SSL_VERIFY=%s = %v, want an error naming the variable and saying %q", what, tc.value, err, tc.want)
			}
		}
		err := tryConstructors(t, f.addr(), 0, check)
		if tc.want == "is refused" && !errors.Is(err, errInsecureSkipVerify) {
			t.Errorf("NewRegistrar with CONSUL_HTTP_SSL_VERIFY=%s = %v, want errInsecureSkipVerify", tc.value, err)
		}
	}
	if n := f.n.Load(); n != 0 {
		t.Errorf("%d requests reached the agent while verification was asked off", n)
	}
	t.Setenv("CONSUL_HTTP_SSL_VERIFY", "true")
	w, err := New("web", WithAddress(f.addr()))
	if err != nil {
		t.Fatalf("New with CONSUL_HTTP_SSL_VERIFY=true = %v", err)
	}
	w.Close()
}

// An answer without a known leader (a server cut off from its quorum answers
// blocking queries from its own copy) is not published: ErrNoLeader is
// reported with the last known good set, until a leader answers again.
func TestNoKnownLeaderKeepsLastKnownGood(t *testing.T) {
	// The leaderless answers wait until the test has seen the first set:
	// Next returns only the newest state, so an error published before the
	// test looked would hide the first set.
	seen := make(chan struct{})
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		switch {
		case n == 1:
			return 200, "10", entriesJSON(t, "10.0.0.1:80")
		case n <= 3:
			select {
			case <-seen:
			case <-time.After(5 * time.Second):
			}
			return 200, "11", entriesJSON(t, "10.0.0.2:80") // leaderless: must not be published
		case n == 4:
			return 200, "12", entriesJSON(t, "10.0.0.3:80")
		default:
			return -1, "", ""
		}
	})
	f.mu.Lock()
	f.leaderless = func(n int) bool { return n == 2 || n == 3 }
	f.mu.Unlock()
	w, err := New("web", append(fast, WithAddress(f.addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := nextWhere(t, w, 5*time.Second, "the first set", func(s discovery.State) bool { return s.Err == nil })
	close(seen)
	s := nextWhere(t, w, 5*time.Second, "the error", func(s discovery.State) bool { return s.Err != nil })
	if !errors.Is(s.Err, ErrNoLeader) || addrsOf(s) != "10.0.0.1:80" || !s.Synced.Equal(first.Synced) {
		t.Fatalf("leaderless answer: %+v; want ErrNoLeader with the last known good set 10.0.0.1:80 and Synced unchanged", s)
	}
	nextWhere(t, w, 5*time.Second, "the leader's answer", func(s discovery.State) bool {
		if addrsOf(s) == "10.0.0.2:80" {
			t.Errorf("a leaderless answer was published")
		}
		return s.Err == nil && addrsOf(s) == "10.0.0.3:80"
	})
}

// An answer from the agent's streaming view always says there is no known
// leader (hashicorp/consul#9776): the watcher asks the agent for the leader
// instead, publishing the answer when there is one and ErrNoLeader when
// there is none.
func TestStreamingAnswerAsksForTheLeader(t *testing.T) {
	var leader atomic.Value
	leader.Store(`"127.0.0.1:8300"`)
	var health atomic.Int64
	lost := make(chan struct{}) // closed once the leader is gone
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if r.URL.Path == "/v1/status/leader" {
			return 200, "", leader.Load().(string)
		}
		switch health.Add(1) {
		case 1:
			return 200, "10", entriesJSON(t, "10.0.0.1:80")
		case 2:
			select { // the second answer comes after the leader is gone
			case <-lost:
			case <-r.Context().Done():
				return -1, "", ""
			}
			return 200, "11", entriesJSON(t, "10.0.0.2:80")
		default:
			return -1, "", ""
		}
	})
	f.header = http.Header{"X-Consul-Query-Backend": {"streaming"}}
	f.mu.Lock()
	f.leaderless = func(int) bool { return true }
	f.mu.Unlock()
	w, err := New("web", append(fast, WithAddress(f.addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 5*time.Second, "the first set", func(s discovery.State) bool {
		if s.Err != nil {
			t.Fatalf("streaming answer with a leader published as %v", s.Err)
		}
		return addrsOf(s) == "10.0.0.1:80"
	})
	leader.Store(`""`)
	close(lost)
	s := nextWhere(t, w, 5*time.Second, "the error", func(s discovery.State) bool { return s.Err != nil })
	if !errors.Is(s.Err, ErrNoLeader) || addrsOf(s) != "10.0.0.1:80" {
		t.Fatalf("streaming answer without a leader: %+v; want ErrNoLeader with 10.0.0.1:80 kept", s)
	}
	var asked int
	for _, r := range f.requests() {
		if r.URL.Path == "/v1/status/leader" {
			asked++
		}
	}
	if asked != 2 {
		t.Fatalf("asked for the leader %d times; want 2, once per streaming answer", asked)
	}
}

// Consul hides X-Consul-Results-Filtered-By-ACLs from requests without a
// token: an empty answer to one, while ACLs default to deny, may be one the
// ACLs emptied. The watcher says so, once; with a token it has no reason to.
func TestAnonymousEmptyAnswerUnderDenyWarnsOnce(t *testing.T) {
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	for _, tc := range []struct {
		name string
		opts []Option
		want int
	}{
		{"anonymous", nil, 1},
		{"token", []Option{WithToken("t0k")}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
				if n > 4 {
					return -1, "", ""
				}
				return 200, fmt.Sprint(10 + n), "[]"
			})
			f.header = http.Header{"X-Consul-Default-Acl-Policy": {"deny"}}
			var logs bytes.Buffer // read after Close, which waits for the goroutine
			opts := append(append(fast, WithAddress(f.addr()), WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))), tc.opts...)
			w, err := New("web", opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			deadline := time.Now().Add(5 * time.Second)
			for f.n.Load() < 5 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			w.Close()
			if n := strings.Count(logs.String(), "empty answer without an ACL token"); n != tc.want {
				t.Fatalf("%d warnings after 4 empty answers; want %d:\n%s", n, tc.want, logs.String())
			}
		})
	}
}

// The plain re-read after an empty answer from the agent's streaming view
// is a re-query like any other: WithQueryRate bounds it. A streaming view
// that keeps answering empty while plain reads list the service (a service
// flapping to empty and back, a view that disagrees) made the watcher send
// two health queries per token of the limiter, twice the documented rate.
func TestStreamingEmptyReReadIsRateLimited(t *testing.T) {
	var idx, health atomic.Int64
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		if r.URL.Path == "/v1/status/leader" {
			return 200, "", `"127.0.0.1:8300"`
		}
		health.Add(1)
		i := fmt.Sprint(idx.Add(1))
		if r.URL.Query().Get("index") != "" { // a blocking query: the streaming view
			return 200, i, "[]"
		}
		return 200, i, entriesJSON(t, "10.0.0.1:80")
	})
	f.header = http.Header{"X-Consul-Query-Backend": {"streaming"}}
	const rate = 5
	w, err := New("web", append(fast, WithAddress(f.addr()), WithQueryRate(rate, 1))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 5*time.Second, "the first set", func(s discovery.State) bool { return addrsOf(s) == "10.0.0.1:80" })
	start, base := time.Now(), health.Load()
	time.Sleep(2 * time.Second)
	n := health.Load() - base
	allowed := int64(rate*time.Since(start).Seconds()) + 2
	t.Logf("%d health queries in %v (rate %d/s, burst 1)", n, time.Since(start).Round(time.Millisecond), rate)
	if n > allowed {
		t.Fatalf("%d health queries in %v with WithQueryRate(%d, 1): at most %d allowed", n, time.Since(start).Round(time.Millisecond), rate, allowed)
	}
}

// tryConstructors makes a Watcher with New (with opts), one through the
// consul:// target and a Registrar, all against the agent at addr, and
// hands each one's error to check. A watcher made anyway is closed after
// linger (time for a first request to go out), a Registrar at once. It
// returns NewRegistrar's error.
func tryConstructors(t *testing.T, addr string, linger time.Duration, check func(what string, err error), opts ...Option) error {
	t.Helper()
	w, err := New("web", append([]Option{WithAddress(addr)}, opts...)...)
	if err == nil {
		time.Sleep(linger)
		w.Close()
	}
	check("New", err)
	dw, err := discovery.Watch(t.Context(), "consul://"+addr+"/web")
	if err == nil {
		time.Sleep(linger)
		dw.Close()
	}
	check("Watch", err)
	r, err := NewRegistrar(t.Context(), Registration{Name: "web", Addr: "127.0.0.1:9001", Check: Check{TTL: 10 * time.Second}}, WithAddress(addr))
	if err == nil {
		r.Close()
	}
	check("NewRegistrar", err)
	return err
}

// firstByteListener counts the connections whose first byte is not a TLS
// handshake record (0x16): plaintext sent to a TLS port.
type firstByteListener struct {
	net.Listener
	plain, conns atomic.Int64
}

func (l *firstByteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.conns.Add(1)
	return &firstByteConn{Conn: c, l: l}, nil
}

type firstByteConn struct {
	net.Conn
	l    *firstByteListener
	seen bool
}

func (c *firstByteConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.seen {
		c.seen = true
		if p[0] != 0x16 {
			c.l.plain.Add(1)
		}
	}
	return n, err
}

// FAULTS row 22 for the body cap itself: an answer longer than the body
// cap, sent chunked (no Content-Length to refuse it by), made of a single
// entry (so the entry cap does not cut it short). Heap growth while it is
// read and refused must stay within the body cap + 1 MiB.
func TestOversizedChunkedBodyHeapGrowthIsBoundedByTheCap(t *testing.T) {
	const bodyCap = 16 << 20
	huge := `[{"Service":{"Port":1,"Address":"10.0.0.7","Tags":["` + strings.Repeat("x", 64<<20) + `"]}}]`
	good := entriesJSON(t, "10.0.0.1:80")
	hugeBytes := []byte(huge)
	huge = ""
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) { return 200, "10", good })
	var n atomic.Int64
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Consul-LastContact", "0")
		w.Header().Set("X-Consul-KnownLeader", "true")
		w.Header().Set("Content-Type", "application/json")
		if n.Add(1) == 1 {
			w.Header().Set("X-Consul-Index", "10")
			io.WriteString(w, good)
			return
		}
		w.Header().Set("X-Consul-Index", "11")
		// Written from one buffer in 1 MiB pieces, chunked: the server
		// allocates nothing per answer, so what is counted is the client's.
		for b := hugeBytes; len(b) > 0; {
			k := min(len(b), 1<<20)
			if _, err := w.Write(b[:k]); err != nil {
				return
			}
			b = b[k:]
		}
	})
	s, grew := allocatedForNext(t, f, bodyCap, 10*time.Second, "the body-cap error", func(s discovery.State) bool { return s.Err != nil })
	if !errors.Is(s.Err, ErrResponseTooLarge) || addrsOf(s) != "10.0.0.1:80" {
		t.Fatalf("err %v, endpoints %q; want ErrResponseTooLarge and the last known good set", s.Err, addrsOf(s))
	}
	t.Logf("%d KiB allocated reading a 64 MiB answer with a %d MiB body cap", grew>>10, bodyCap>>20)
	if grew > bodyCap+1<<20 {
		t.Fatalf("%d MiB allocated reading one answer; want at most the body cap + 1 MiB (%d MiB)", grew>>20, (bodyCap+1<<20)>>20)
	}
}

// allocatedForNext watches web through f with a body cap of bodyCap (and
// 1,000 entries) until the good set, then until the next State that want
// accepts (within timeout; what names it), and returns that State and the
// bytes the process allocated meanwhile: what reading the answer cost.
func allocatedForNext(t *testing.T, f *fakeAgent, bodyCap int64, timeout time.Duration, what string, want func(discovery.State) bool) (discovery.State, uint64) {
	t.Helper()
	w, err := New("web", append(fast, WithAddress(f.addr()), WithMaxResponse(bodyCap, 1000))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 5*time.Second, "the good set", func(s discovery.State) bool { return s.Err == nil })
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s := nextWhere(t, w, timeout, what, want)
	w.Close()
	runtime.ReadMemStats(&after)
	return s, after.TotalAlloc - before.TotalAlloc
}

// An agent that stays unreachable fails every read the same way. The
// Publisher publishes a repeated error without a new Version, so that the
// consumer is not woken on every attempt; the error must then read the
// same whether the read was plain, blocking or ResolveNow's consistent one.
// A client calls ResolveNow on failed dials, so during an outage both
// kinds of read alternate.
func TestUnreachableAgentIsOneErrorVersionWhateverTheRead(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there: every read fails with "connection refused"
	w, err := New("web", WithAddress(addr), WithErrorBackoff(50*time.Millisecond, 50*time.Millisecond), WithResolveInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			if i%3 == 0 {
				w.ResolveNow() // some reads are forced, some are not
			}
			time.Sleep(35 * time.Millisecond)
		}
	}()
	var texts []string
	for {
		s, err := w.Next(ctx)
		if err != nil {
			break
		}
		texts = append(texts, s.Err.Error())
	}
	st := w.Stats()
	if st.ForcedReads < 3 || st.Errors-st.ForcedReads < 3 {
		t.Fatalf("stats %+v: want several forced and several plain reads", st)
	}
	if len(texts) > 1 {
		t.Fatalf("%d Versions for %d failed reads of one unreachable agent, want 1; the error text changed:\n%s",
			len(texts), st.Errors, strings.Join(texts[:min(len(texts), 3)], "\n"))
	}
	if !strings.Contains(texts[0], addr) || !strings.Contains(texts[0], "connection refused") {
		t.Fatalf("error %q does not name the agent and the cause", texts[0])
	}
}

// Consul's order of the instances is not fixed: with near (WithNear, or
// ?near= in the target) it sorts them by round-trip time, which moves. An
// answer whose every instance is rejected, the same instances for the same
// reasons, must read the same in whatever order they come, or the
// Publisher takes each answer for a new error and wakes the consumer.
func TestAllRejectedInAnyOrderIsOneErrorVersion(t *testing.T) {
	entries := func(idAddr ...string) string {
		var out []*api.ServiceEntry
		for i := 0; i < len(idAddr); i += 2 {
			host, port, _ := net.SplitHostPort(idAddr[i+1])
			p, _ := strconv.Atoi(port)
			out = append(out, &api.ServiceEntry{
				Node:    &api.Node{Node: "n-" + idAddr[i], Address: "10.9.9.9"},
				Service: &api.AgentService{ID: idAddr[i], Service: "web", Address: host, Port: p, Weights: api.AgentWeights{Passing: 1, Warning: 1}},
				Checks:  api.HealthChecks{{Status: api.HealthPassing}},
			})
		}
		b, err := json.Marshal(out)
		if err != nil {
			t.Error(err)
		}
		return string(b)
	}
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		switch {
		case n == 1:
			return 200, "10", entries("a", "10.0.0.1:80", "b", "10.0.0.2:80")
		case n%2 == 0: // a bad deploy: both rejected, in one order...
			return 200, "11", entries("a", "0.0.0.0:80", "b", "10.0.0.2:0")
		default: // ...or the other
			return 200, "11", entries("b", "10.0.0.2:0", "a", "0.0.0.0:80")
		}
	})
	w, err := New("web", append(fast, WithAddress(f.addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := nextWhere(t, w, 5*time.Second, "the all-rejected error", func(s discovery.State) bool { return s.Err != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var later []discovery.State
	for {
		s, err := w.Next(ctx)
		if err != nil {
			break
		}
		later = append(later, s)
	}
	if n := w.Stats().Errors; n < 5 {
		t.Fatalf("only %d rejected answers", n)
	}
	if len(later) > 0 {
		t.Fatalf("%d more Versions for %d answers that reject the same instances in another order; the error changed from\n%v\nto\n%v",
			len(later), w.Stats().Errors, first.Err, later[0].Err)
	}
}
