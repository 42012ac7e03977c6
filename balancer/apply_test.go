package balancer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

// TestApplyKeepsOneNodePerAddressAcrossUpdates drives apply with 300 seeded
// random States over a pool of 40 addresses: endpoints come, go, move to
// other IDs (so the order by ID changes), and sometimes share an address,
// as a Watcher other than ours might send. After each State, every address
// it lists has exactly one node, the same node as long as the address
// stayed, in the State's order; no other address has one; and the index
// that Quarantine and Status read agrees.
func TestApplyKeepsOneNodePerAddressAcrossUpdates(t *testing.T) {
	w := discoverytest.New()
	b := New(w, WithService("svc"), WithPolicy(P2C()))
	// Stop the run goroutine: this test calls apply itself, as run does.
	b.Close()
	w.Close()
	pool := addrs(40)
	rnd := rand.New(rand.NewPCG(7, 11))
	prev := map[string]*node{}
	for step := range 300 {
		var s discovery.State
		s.Version = uint64(step + 1)
		for i, a := range pool {
			if rnd.IntN(4) == 0 {
				continue // absent from this State
			}
			id := fmt.Sprintf("id-%02d", (i+step*rnd.IntN(3))%len(pool))
			if rnd.IntN(30) == 0 {
				a = pool[rnd.IntN(len(pool))] // shares another endpoint's address
			}
			// Weights change now and then, in place.
			s.Endpoints = append(s.Endpoints, discovery.Endpoint{ID: id + "-" + a, Addr: a, Weight: 1 + rnd.IntN(8)/7})
		}
		slices.SortFunc(s.Endpoints, func(x, y discovery.Endpoint) int { return strings.Compare(x.ID, y.ID) })
		b.apply(s)

		want := map[string]bool{}
		for i, ep := range s.Endpoints {
			if !want[ep.Addr] { // the first listing: the node's Result carries it
				if got := b.nodes[ep.Addr].res.Load().Endpoint; !got.Equal(ep) {
					t.Fatalf("step %d: the node of %s carries %+v, want %+v", step, ep.Addr, got, ep)
				}
			}
			want[ep.Addr] = true
			n := b.order[i]
			if n.addr != ep.Addr {
				t.Fatalf("step %d: order[%d] is %s, want %s", step, i, n.addr, ep.Addr)
			}
			if set := b.set.Load(); set.nodes[i] != n || set.eps[i].ID != ep.ID {
				t.Fatalf("step %d: the published set lists %s with endpoint %+v, want %+v", step, set.nodes[i].addr, set.eps[i], ep)
			}
			if b.nodes[ep.Addr] != n {
				t.Fatalf("step %d: two nodes for %s", step, ep.Addr)
			}
			if old := prev[ep.Addr]; old != nil && old != n {
				t.Fatalf("step %d: node of %s replaced although the address stayed: its statistics are lost", step, ep.Addr)
			}
		}
		if len(b.nodes) != len(want) {
			t.Fatalf("step %d: %d nodes for %d addresses", step, len(b.nodes), len(want))
		}
		index := b.set.Load().byAddr()
		if len(index) != len(want) {
			t.Fatalf("step %d: the index has %d addresses, want %d", step, len(index), len(want))
		}
		for a := range want {
			if index[a] != b.nodes[a] {
				t.Fatalf("step %d: the index and the nodes disagree on %s", step, a)
			}
		}
		for _, a := range pool {
			if b.Listed(a) != want[a] {
				t.Fatalf("step %d: Listed(%s) = %v, want %v", step, a, b.Listed(a), want[a])
			}
		}
		prev = maps.Clone(b.nodes)
	}
}

// A pick returns the endpoint as the latest State lists it: when discovery
// changes an endpoint's metadata, picks of its unchanged address carry the
// new metadata at once, on every path a pick takes (no breakers, a shared
// closed-breaker Result, a sampled request's own Result).
func TestPickCarriesTheLatestEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"round robin", []Option{WithPolicy(RoundRobin()), WithoutBreakers()}},
		{"round robin with breakers", []Option{WithPolicy(RoundRobin())}},
		{"p2c, sampled and not", []Option{WithPolicy(P2C())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := addrs(3)
			b, w := newTest(t, as, tc.opts...)
			set := func(v string) {
				eps := make([]discovery.Endpoint, len(as))
				for i, a := range as {
					eps[i] = discovery.Endpoint{ID: a, Addr: a, Weight: 1, Meta: map[string]string{"v": v}}
				}
				before := b.StateVersion()
				w.Set(eps...)
				waitFor(t, b, "the new State", func(*picker) bool { return b.StateVersion() > before })
			}
			for _, v := range []string{"1", "2", "3"} {
				set(v)
				for i := range 300 { // several sampling periods of P2C
					r, err := b.Pick(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					if got := r.Endpoint.Meta["v"]; got != v {
						t.Fatalf("pick %d after the update to v=%s carries v=%q (%s)", i, v, got, r.Endpoint.Addr)
					}
					r.Done(nil)
				}
			}
		})
	}
}

// apply makes a node a new Result only when its endpoint really changed:
// equal endpoints with their own Tags and Meta (compared entry by entry),
// or sharing the previous State's (compared by identity), keep the Result;
// and a State listing one address twice gives the node the first listing
// every time, instead of a new Result per listing and update.
func TestApplyKeepsTheResultOfAnUnchangedEndpoint(t *testing.T) {
	w := discoverytest.New()
	b := New(w, WithService("svc"))
	// Stop the run goroutine: this test calls apply itself, as run does.
	b.Close()
	w.Close()
	mk := func(meta map[string]string) discovery.State {
		return discovery.State{Version: 1, Endpoints: []discovery.Endpoint{
			{ID: "a", Addr: "10.0.0.1:80", Weight: 1, Zone: "z1", Tags: []string{"t"}, Meta: meta},
			{ID: "b", Addr: "10.0.0.1:80", Weight: 1, Zone: "z2"},
			{ID: "c", Addr: "10.0.0.2:80", Weight: 1, Tags: []string{"t"}, Meta: meta},
		}}
	}
	shared := map[string]string{"k": "v"}
	b.apply(mk(shared))
	n := b.nodes["10.0.0.1:80"]
	first := n.res.Load()
	if first.Endpoint.ID != "a" || first.Endpoint.Zone != "z1" {
		t.Fatalf("the node of an address listed twice carries %+v; want the first listing, a", first.Endpoint)
	}
	for i, s := range []discovery.State{mk(shared), mk(map[string]string{"k": "v"}), mk(shared)} {
		b.apply(s)
		if got := n.res.Load(); got != first {
			t.Fatalf("update %d: a new Result for an unchanged endpoint: %+v", i, got.Endpoint)
		}
	}
	b.apply(mk(map[string]string{"k": "w"}))
	if got := n.res.Load(); got == first || got.Endpoint.Meta["k"] != "w" {
		t.Fatalf("a changed endpoint kept its Result: %+v", got.Endpoint)
	}
}

// A registry answer that lists only invalid instances, and none of the last
// known good set, says for certain the set's nodes are gone: the watchers
// publish an error State whose last known good set is empty
// (SetErrorKeeping). The balancer must drop those nodes, as it drops the
// gone ones when some remain, and say why Pick finds nothing; it kept
// every node instead, and a deregistered node stayed in rotation.
func TestErrorStateThatDropsEveryNode(t *testing.T) {
	as := addrs(2)
	b, w := newTest(t, as)
	boom := errors.New("all 1 instances were rejected")
	w.SetErrorKeeping(boom, func(e discovery.Endpoint) bool { return e.Addr == as[1] })
	waitFor(t, b, "the first node gone", func(p *picker) bool { return len(p.ready) == 1 })
	w.SetErrorKeeping(boom, func(discovery.Endpoint) bool { return false })
	waitFor(t, b, "every node gone", func(p *picker) bool { return len(p.ready) == 0 })
	r, err := b.Pick(context.Background())
	if err == nil {
		r.Done(nil)
		t.Fatalf("Pick after the watcher dropped every node: picked %s", r.Endpoint.Addr)
	}
	if !errors.Is(err, ErrNoEndpoints) || !errors.Is(err, boom) {
		t.Fatalf("Pick after the watcher dropped every node: %v; want ErrNoEndpoints and the watcher's error", err)
	}
}

// A Balancer over a watcher closed before it answered can never get a
// State. Its picks must say so (discovery.ErrClosed), not "discovery has
// not answered yet", on which rpcclient waits for an answer that never
// comes; and must go on saying so after the run goroutine rebuilds.
func TestClosedWatcherBeforeAnyStateIsReported(t *testing.T) {
	w, err := discovery.StaticAddrs("10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	b := New(w, WithService("svc"), WithOutlierDetection(OutlierConfig{Interval: 10 * time.Millisecond}))
	defer b.Close()
	deadline := time.Now().Add(2 * time.Second)
	reported := false
	for time.Now().Before(deadline) {
		_, err := b.Pick(context.Background())
		switch {
		case errors.Is(err, discovery.ErrClosed) && errors.Is(err, ErrNoEndpoints) && !errors.Is(err, ErrNoStateYet):
			reported = true
		case reported:
			t.Fatalf("after the run goroutine rebuilt, Pick: %v; want discovery.ErrClosed still", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !reported {
		_, err := b.Pick(context.Background())
		t.Fatalf("Pick over a watcher closed before any State: %v; want ErrNoEndpoints wrapping discovery.ErrClosed", err)
	}
}

// A pick made on a snapshot from before an address left creates the
// breaker of a node that was never picked after the update dropped the
// breakers of the addresses that left. That breaker must not stay in the
// Set: it outlives the address (the "more breakers than nodes" check does
// not see it while some nodes have none), and when the address comes back
// its new node inherits it, open on failures of requests sent before.
func TestStaleSnapshotBreakerDropped(t *testing.T) {
	as := addrs(4)
	b, w := newTest(t, as, WithPolicy(RoundRobin()),
		WithBreakers(breaker.Config{ConsecutiveFailures: 3, OpenTimeout: time.Hour}))
	old := b.picker.Load() // picks in flight hold this snapshot
	w.SetAddrs(as[:3]...)
	waitFor(t, b, "as[3] gone", func(p *picker) bool { return len(p.ready) == 3 })
	// The picks on the old snapshot choose as[3], never picked before, and fail.
	for range 3 {
		if r := old.admit(3, 0); r != nil {
			r.Done(errReset)
		}
	}
	// A later update that removes nothing, then as[3] comes back.
	w.Set(eps(map[string]int{as[0]: 2, as[1]: 1, as[2]: 1})...)
	waitFor(t, b, "weights", func(p *picker) bool { return len(p.ready) == 3 && p.ready[0].weight == 2 })
	deadline := time.Now().Add(time.Second)
	for b.breakers.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := b.breakers.Len(); n != 0 {
		t.Errorf("breaker Set holds %d breakers for 3 nodes never picked; want the one of the gone %s dropped", n, as[3])
	}
	w.SetAddrs(as...)
	waitFor(t, b, "as[3] back", func(p *picker) bool { return len(p.ready) == 4 })
	got := count(t, b, 40, nil)
	if got[as[3]] == 0 {
		t.Errorf("%s came back but gets no picks (breaker %v): it inherited the breaker of its earlier node: %v",
			as[3], status(b, as[3]).Breaker, got)
	}
}

// A change of any one field of an endpoint reaches the Result its picks
// return (Result.Endpoint is the endpoint as discovery lists it now): a
// node turned Degraded, reweighted, moved to another zone or retagged
// must not keep handing the caller its old endpoint.
func TestApplyUpdatesTheResultOnEveryFieldChange(t *testing.T) {
	w := discoverytest.New()
	b := New(w, WithService("svc"))
	b.Close() // this test calls apply itself, as run does
	w.Close()
	changes := map[string]func(*discovery.Endpoint){
		"Health": func(e *discovery.Endpoint) { e.Health = discovery.Degraded },
		"Weight": func(e *discovery.Endpoint) { e.Weight = 7 },
		"Zone":   func(e *discovery.Endpoint) { e.Zone = "z2" },
		"Tags":   func(e *discovery.Endpoint) { e.Tags = []string{"u"} },
		"Meta":   func(e *discovery.Endpoint) { e.Meta = map[string]string{"k": "w"} },
	}
	for field, change := range changes {
		for _, base := range []discovery.Endpoint{
			{ID: "a", Addr: "10.0.0.1:80", Weight: 1, Zone: "z1", Tags: []string{"t"}, Meta: map[string]string{"k": "v"}},
			{ID: "a", Addr: "10.0.0.1:80", Weight: 1, Zone: "z1"}, // no Tags nor Meta: the cheap comparison decides
		} {
			b.apply(discovery.State{Version: 1, Endpoints: []discovery.Endpoint{base}})
			ep := base
			ep.Tags, ep.Meta = slices.Clone(base.Tags), maps.Clone(base.Meta)
			change(&ep)
			b.apply(discovery.State{Version: 2, Endpoints: []discovery.Endpoint{ep}})
			if got := b.nodes[base.Addr].res.Load().Endpoint; !got.Equal(ep) {
				t.Errorf("after a change of %s only: the node's Result carries %+v, want %+v", field, got, ep)
			}
		}
	}
}
