package balancer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

func addrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1)
	}
	return out
}

// newTest starts a Balancer over a fake watcher holding the given
// addresses and waits until it can pick from all of them (from as many as
// its WithSubset allows).
func newTest(t testing.TB, as []string, opts ...Option) (*Balancer, *discoverytest.Watcher) {
	t.Helper()
	w := discoverytest.NewAddrs(as...)
	b := New(w, append([]Option{WithService("svc")}, opts...)...)
	t.Cleanup(func() { b.Close(); w.Close() })
	want := len(as)
	if k := b.opts.subset; k > 0 {
		want = min(want, k)
	}
	waitFor(t, b, "the first set", func(p *picker) bool { return len(p.ready) == want })
	return b, w
}

// waitFor waits, bounded by 5 s, until the published picker satisfies ok.
func waitFor(t testing.TB, b *Balancer, what string, ok func(*picker) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		ch := b.Updated()
		if ok(b.picker.Load()) {
			return
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Millisecond): // node state a picker does not show (a reseed)
		case <-ctx.Done():
			p := b.picker.Load()
			t.Fatalf("waiting for %s: timed out; picker has %d ready, err %v", what, len(p.ready), p.err)
		}
	}
}

// count picks n times, calling Done with err, and returns picks per address.
func count(t testing.TB, b *Balancer, n int, err error, opts ...PickOption) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		r, perr := b.Pick(context.Background(), opts...)
		if perr != nil {
			t.Fatalf("Pick: %v", perr)
		}
		got[r.Endpoint.Addr]++
		r.Done(err)
	}
	return got
}

// hold makes n picks and keeps them outstanding: the caller calls their Done.
func hold(t testing.TB, b *Balancer, n int) []Result {
	t.Helper()
	held := make([]Result, 0, n)
	for range n {
		r, err := b.Pick(context.Background())
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		held = append(held, r)
	}
	return held
}

func eps(weights map[string]int) []discovery.Endpoint {
	var out []discovery.Endpoint
	for a, w := range weights {
		out = append(out, discovery.Endpoint{ID: a, Addr: a, Weight: w})
	}
	return out
}

func within(t testing.TB, what string, got, want, tol int) {
	t.Helper()
	if got < want-tol || got > want+tol {
		t.Errorf("%s: %d, want %d +- %d", what, got, want, tol)
	}
}

// samplingOnly is a Balancer for building a P2C selector directly: the
// selector reads only its sampling rate.
func samplingOnly() *Balancer {
	b := &Balancer{}
	b.samp.init()
	return b
}

// bubble runs f in a synctest bubble, with the balancer's clock anchored in
// the bubble's time (mono() would be negative otherwise).
func bubble(t *testing.T, f func(t *testing.T)) {
	synctest.Test(t, func(t *testing.T) {
		old := epoch
		epoch = time.Now().Add(-time.Second)
		defer func() { epoch = old }()
		f(t)
	})
}

// status returns the NodeStatus of addr, or the zero NodeStatus when b has
// no such node.
func status(b *Balancer, addr string) NodeStatus {
	for _, s := range b.Status() {
		if s.Endpoint.Addr == addr {
			return s
		}
	}
	return NodeStatus{}
}

// maglevSet returns n ready nodes of weights 1 to 10 with distinct
// addresses, for Maglev's table.
func maglevSet(n int) ([]entry, []*node) {
	ready, nodes := make([]entry, n), make([]*node, n)
	for i := range nodes {
		nodes[i] = &node{addr: fmt.Sprintf("10.%d.%d.%d:80", i>>16, i>>8&255, i&255)}
		ready[i] = entry{idx: uint32(i), weight: float32(i%10 + 1)}
	}
	return ready, nodes
}

// readyMaglevSel returns the Maglev selector of a lookup table of the given
// size over ready, every one of nodes in rotation, bounded by c x total.
func readyMaglevSel(ready []entry, nodes []*node, size uint64, c float64, total *atomic.Int64) *maglevSel {
	pos := make([]int32, len(nodes))
	for j, e := range ready {
		pos[e.idx] = int32(j)
	}
	return newMaglevSel(ready, nodes, ready, pos, maglevTable(ready, nodes, size), c, total)
}
