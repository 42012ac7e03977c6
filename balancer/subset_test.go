package balancer

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

// newSubsetTest starts a Balancer with WithSubset(k) over addresses as and
// waits until its picker holds min(k, len(as)) nodes.
func newSubsetTest(t *testing.T, as []string, k int, opts ...Option) (*Balancer, *discoverytest.Watcher) {
	t.Helper()
	return newTest(t, as, append([]Option{WithSubset(k), WithPolicy(RoundRobin()), WithSlowStart(0, 0)}, opts...)...)
}

// subsetOf returns the addresses the Balancer's picker may choose.
func subsetOf(b *Balancer) []string {
	p := b.picker.Load()
	var out []string
	for _, e := range p.ready {
		out = append(out, p.nodes[e.idx].addr)
	}
	slices.Sort(out)
	return out
}

// Picks go to the subset's k nodes only, evenly under round robin; Status
// shows the others as not Ready, and InSubset agrees.
func TestSubsetPicksOnlyItsNodes(t *testing.T) {
	as := addrs(10)
	b, _ := newSubsetTest(t, as, 3)
	got := count(t, b, 3000, nil)
	if len(got) != 3 {
		t.Fatalf("picks went to %d nodes, want the subset's 3: %v", len(got), got)
	}
	for a, c := range got {
		within(t, "picks on "+a, c, 1000, 1)
	}
	ready := 0
	for _, st := range b.Status() {
		in := got[st.Endpoint.Addr] > 0
		if st.Ready != in || b.InSubset(st.Endpoint.Addr) != in {
			t.Errorf("%s: Ready %v, InSubset %v; picked: %v", st.Endpoint.Addr, st.Ready, b.InSubset(st.Endpoint.Addr), in)
		}
		if st.Ready {
			ready++
		}
	}
	if ready != 3 {
		t.Fatalf("Status has %d nodes Ready, want 3", ready)
	}
	if b.InSubset("10.9.9.9:80") {
		t.Fatal("InSubset of an address discovery does not list is true")
	}
	// A set no larger than the subset is used whole.
	small, _ := newSubsetTest(t, as[:3], 5)
	if got := subsetOf(small); !slices.Equal(got, as[:3]) {
		t.Fatalf("subset of 3 nodes with size 5: %v", got)
	}
}

// Rendezvous hashing: an address that comes or goes moves at most one node
// of the subset, and one that is not in it moves none.
func TestSubsetMovesOneNodePerChange(t *testing.T) {
	as := addrs(40)
	b, w := newSubsetTest(t, as, 5)
	before := subsetOf(b)
	in := map[string]bool{}
	for _, a := range before {
		in[a] = true
	}
	// Remove an address outside the subset: nothing moves.
	var outside string
	for _, a := range as {
		if !in[a] {
			outside = a
			break
		}
	}
	rest := slices.DeleteFunc(slices.Clone(as), func(a string) bool { return a == outside })
	v := b.StateVersion()
	w.SetAddrs(rest...)
	waitFor(t, b, "the update", func(*picker) bool { return b.StateVersion() > v })
	if got := subsetOf(b); !slices.Equal(got, before) {
		t.Fatalf("removing %s, not in the subset, changed it: %v -> %v", outside, before, got)
	}
	// Remove a member: exactly one other node takes its place.
	gone := before[0]
	rest = slices.DeleteFunc(rest, func(a string) bool { return a == gone })
	v = b.StateVersion()
	w.SetAddrs(rest...)
	waitFor(t, b, "the update", func(*picker) bool { return b.StateVersion() > v })
	after := subsetOf(b)
	if len(after) != 5 || slices.Contains(after, gone) || len(diff(before, after)) != 2 {
		t.Fatalf("removing member %s: %v -> %v; want one node replaced", gone, before, after)
	}
	// Add 20 new addresses: each joins only by displacing one member,
	// and the subset keeps its size.
	more := append(slices.Clone(rest), addrs(60)[40:]...)
	v = b.StateVersion()
	w.SetAddrs(more...)
	waitFor(t, b, "the update", func(*picker) bool { return b.StateVersion() > v })
	final := subsetOf(b)
	for _, a := range final {
		if !slices.Contains(after, a) && slices.Contains(rest, a) {
			t.Fatalf("%s, an old address outside the subset, joined it when new addresses came: %v -> %v", a, after, final)
		}
	}
	if len(final) != 5 {
		t.Fatalf("subset after adding 20: %v", final)
	}
}

// diff returns the addresses in exactly one of a and b.
func diff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, x)
		}
	}
	return out
}

// A member out of rotation gives its place to the next in rank and takes it
// back when it returns; meanwhile it stays InSubset (its connections are
// kept), and the stand-in is InSubset only while it stands in.
func TestSubsetStandInWhileMemberIsOut(t *testing.T) {
	as := addrs(10)
	b, _ := newSubsetTest(t, as, 3, WithoutBreakers(), WithOutlierDetection(OutlierConfig{Disabled: true}))
	before := subsetOf(b)
	member := before[1]
	if !b.Quarantine(member, 300*time.Millisecond) {
		t.Fatalf("Quarantine(%s) = false", member)
	}
	waitFor(t, b, "a stand-in", func(*picker) bool {
		s := subsetOf(b)
		return len(s) == 3 && !slices.Contains(s, member)
	})
	during := subsetOf(b)
	standIn := diff(before, during)
	if len(standIn) != 2 {
		t.Fatalf("with %s quarantined: %v -> %v; want one stand-in", member, before, during)
	}
	sub := standIn[0]
	if sub == member {
		sub = standIn[1]
	}
	if !b.InSubset(member) || !b.InSubset(sub) {
		t.Fatalf("during the quarantine: InSubset(member %s) = %v, InSubset(stand-in %s) = %v; want both", member,
			b.InSubset(member), sub, b.InSubset(sub))
	}
	got := count(t, b, 300, nil)
	if got[member] != 0 || got[sub] != 100 {
		t.Fatalf("picks during the quarantine: %v; want 100 on the stand-in %s, none on %s", got, sub, member)
	}
	waitFor(t, b, "the member back", func(*picker) bool { return slices.Equal(subsetOf(b), before) })
	if b.InSubset(sub) {
		t.Fatalf("InSubset(%s) after the member came back", sub)
	}
}

// Each Balancer draws its own salt: over many clients, every node is in
// about clients x k / nodes subsets.
func TestSubsetsSpreadOverTheNodes(t *testing.T) {
	as := addrs(10)
	const clients, k = 300, 2
	in := map[string]int{}
	for range clients {
		b := New(discoverytest.NewAddrs(as...), WithSubset(k), WithPolicy(RoundRobin()))
		b.rank(as, func(a string) { in[a]++ })
		b.Close()
	}
	t.Logf("subsets per node: %v", in)
	// Binomial(300, 0.2): mean 60, standard deviation 6.9.
	for _, a := range slices.Sorted(maps.Keys(in)) {
		within(t, a+"'s subsets", in[a], clients*k/len(as), 30)
	}
	if len(in) != len(as) {
		t.Fatalf("only %d of %d nodes were ever in a subset", len(in), len(as))
	}
}

// rank calls f for each of the k addresses in as that rank highest for b,
// as rebuild's subset would choose them all in rotation.
func (b *Balancer) rank(as []string, f func(string)) {
	nodes := make([]*node, len(as))
	ready := make([]entry, len(as))
	for i, a := range as {
		nodes[i] = newNode(b, a, 0, 1)
		ready[i] = entry{idx: uint32(i), weight: 1}
	}
	kept, _ := subset(ready, nodes, b.opts.subset)
	for _, e := range kept {
		f(as[e.idx])
	}
}

// In panic mode the subset is taken among all nodes whose breaker is not
// open, as the picks are: the members out of rotation are back in it.
func TestSubsetInPanicMode(t *testing.T) {
	as := addrs(10)
	b, _ := newSubsetTest(t, as, 3, WithoutBreakers(), WithOutlierDetection(OutlierConfig{Disabled: true}))
	before := subsetOf(b)
	// Quarantine 6 nodes, two members among them: 4 of 10 healthy is
	// below the 50 % panic threshold.
	out := []string{before[0], before[1]}
	for _, a := range as {
		if len(out) < 6 && !slices.Contains(before, a) {
			out = append(out, a)
		}
	}
	for _, a := range out {
		b.Quarantine(a, time.Minute)
	}
	waitFor(t, b, "panic mode", func(p *picker) bool { return p.panic })
	if got := subsetOf(b); !slices.Equal(got, before) {
		t.Fatalf("in panic mode the subset is %v; want the members %v, quarantined or not", got, before)
	}
	if got := count(t, b, 300, nil); len(got) != 3 || got[before[0]] == 0 {
		t.Fatalf("picks in panic mode: %v; want the 3 members", got)
	}
}
