package balancer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
	"github.com/dialtone-go/dialtone/internal/logbuf"
)

// zoned returns per nodes endpoints in each of zones, with addresses
// 10.0.<zone>.<n>:80, sorted by ID.
func zoned(per int, zones ...string) []discovery.Endpoint {
	var out []discovery.Endpoint
	for z, name := range zones {
		for i := range per {
			a := fmt.Sprintf("10.0.%d.%d:80", z, i+1)
			out = append(out, discovery.Endpoint{ID: a, Addr: a, Weight: 1, Zone: name})
		}
	}
	slices.SortFunc(out, func(a, b discovery.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// inZone returns the addresses of es in zone.
func inZone(es []discovery.Endpoint, zone string) []string {
	var out []string
	for _, e := range es {
		if e.Zone == zone {
			out = append(out, e.Addr)
		}
	}
	return out
}

// newZoneTest starts a Balancer over es with WithLocalZone(zone) and no
// slow start, and waits until it picks from want nodes.
func newZoneTest(t testing.TB, es []discovery.Endpoint, zone string, want int, opts ...Option) (*Balancer, *discoverytest.Watcher) {
	t.Helper()
	w := discoverytest.New()
	w.Set(es...)
	b := New(w, append([]Option{WithService("svc"), WithLocalZone(zone), WithSlowStart(0, 0)}, opts...)...)
	t.Cleanup(func() { b.Close(); w.Close() })
	waitFor(t, b, "the first set", func(p *picker) bool { return len(p.ready) == want })
	return b, w
}

// sum adds up the picks of got on addrs.
func sum(got map[string]int, addrs []string) int {
	n := 0
	for _, a := range addrs {
		n += got[a]
	}
	return n
}

// While the zone is healthy, every policy's picks stay in it; Status shows
// the other zones' nodes as not Ready.
func TestZonePicksStayInTheZone(t *testing.T) {
	es := zoned(4, "a", "b", "c")
	local := inZone(es, "b")
	for _, pol := range []Policy{RoundRobin(), Random(), WeightedRoundRobin(), P2C(), Maglev(0)} {
		t.Run(pol.Name(), func(t *testing.T) {
			b, _ := newZoneTest(t, es, "b", 4, WithPolicy(pol))
			got := count(t, b, 2000, nil)
			if n := sum(got, local); n != 2000 {
				t.Fatalf("%d of 2000 picks in zone b: %v", n, got)
			}
			for _, a := range local {
				// (P2C follows the nodes' sampled latencies.)
				if got[a] < 300 && pol.Name() != "p2c_peak_ewma" {
					t.Errorf("picks on %s: %d of 2000 over 4 nodes", a, got[a])
				}
			}
			for _, st := range b.Status() {
				if want := st.Endpoint.Zone == "b"; st.Ready != want {
					t.Errorf("%s in zone %s: Ready %v", st.Endpoint.Addr, st.Endpoint.Zone, st.Ready)
				}
			}
			// Keyed picks too, each key on one node.
			if pol.Name() == "maglev" {
				for i := range 100 {
					k := HashKey(fmt.Sprint("key", i))
					got := count(t, b, 3, nil, k)
					if len(got) != 1 || sum(got, local) != 3 {
						t.Fatalf("key%d: picks %v; want one node of zone b", i, got)
					}
				}
			}
		})
	}
}

// As the zone's nodes go out of rotation, a share overprovision x healthy /
// size stays in it and the rest spill over to every node; with none left,
// all picks go elsewhere, and they come back with the nodes.
func TestZoneSpillsOverAsItsNodesFail(t *testing.T) {
	for _, pol := range []Policy{RoundRobin(), WeightedRoundRobin(), Random()} {
		t.Run(pol.Name(), func(t *testing.T) { testZoneSpillsOver(t, pol) })
	}
}

func testZoneSpillsOver(t *testing.T, pol Policy) {
	es := zoned(5, "a", "b")
	local := inZone(es, "a")
	var logs logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	b, _ := newZoneTest(t, es, "a", 5, WithPolicy(pol), WithoutBreakers(),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0), WithLogger(logger))
	// One of five out: 1.4 x 4/5 >= 1, every pick stays.
	b.Quarantine(local[0], time.Hour)
	waitFor(t, b, "4 ready", func(p *picker) bool { return len(p.ready) == 4 })
	if got := count(t, b, 1000, nil); sum(got, local[1:]) != 1000 {
		t.Fatalf("one of 5 out: picks %v; want all 1000 on zone a's other 4", got)
	}
	// Two out: 84 % stay in the zone, and 16 % spill over to the 8 nodes
	// in rotation, 3 of them in the zone: 0.84 + 0.16 x 3/8 = 90 % local.
	b.Quarantine(local[1], time.Hour)
	waitFor(t, b, "the spill", func(p *picker) bool { return len(p.ready) == 8 })
	const n = 20000
	got := count(t, b, n, nil)
	// The zone draw is Binomial(20000, 0.84): standard deviation 52.
	within(t, "picks in zone a with 2 of 5 out", sum(got, local[2:]), n*90/100, 260)
	for _, a := range inZone(es, "b") {
		within(t, "picks on "+a, got[a], n*16/100/8, 150)
	}
	if got[local[0]]+got[local[1]] != 0 {
		t.Fatalf("quarantined nodes picked: %v", got)
	}
	// All out: every pick goes to zone b.
	for _, a := range local[2:] {
		b.Quarantine(a, time.Hour)
	}
	waitFor(t, b, "zone b only", func(p *picker) bool { return len(p.ready) == 5 })
	if got := count(t, b, 1000, nil); sum(got, inZone(es, "b")) != 1000 {
		t.Fatalf("zone a out: picks %v", got)
	}
	// Back: every pick in zone a again.
	for _, a := range local {
		b.Quarantine(a, -1) // see Quarantine: a negative duration ends it
	}
	waitFor(t, b, "zone a back", func(p *picker) bool {
		return len(p.ready) == 5 && p.nodes[p.ready[0].idx].addr == local[0]
	})
	if got := count(t, b, 1000, nil); sum(got, local) != 1000 {
		t.Fatalf("zone a back: picks %v", got)
	}
	// Worse is a warning, better is news.
	out := logs.String()
	for _, want := range []string{"level=WARN msg=\"balancer: zone preference\" service=svc zone=a mode=spill",
		"level=WARN msg=\"balancer: zone preference\" service=svc zone=a mode=none",
		"level=INFO msg=\"balancer: zone preference\" service=svc zone=a mode=local"} {
		if !strings.Contains(out, want) {
			t.Errorf("log has no line with %s:\n%s", want, out)
		}
	}
}

// A registry drops a node whose check fails: the zone's size remembers it
// for zoneMemory, so that the zone's last nodes do not take its whole share,
// and then forgets it (the zone was scaled down).
func TestZoneSizeRemembersNodesDiscoveryDropped(t *testing.T) {
	es := zoned(5, "a", "b")
	memory := func(o *options) { o.zoneMemory = 300 * time.Millisecond }
	b, w := newZoneTest(t, es, "a", 5, WithPolicy(RoundRobin()), WithPanicThreshold(0), memory)
	// Three of zone a's five leave discovery: 1.4 x 2/5 = 56 % stay.
	kept := slices.DeleteFunc(slices.Clone(es), func(e discovery.Endpoint) bool {
		return e.Zone == "a" && e.Addr != inZone(es, "a")[0] && e.Addr != inZone(es, "a")[1]
	})
	start := time.Now()
	w.Set(kept...)
	waitFor(t, b, "the spill", func(p *picker) bool { return len(p.ready) == 7 })
	if time.Since(start) < 250*time.Millisecond { // else the sample below may see the size forgotten
		const n = 4000
		got := count(t, b, n, nil)
		// 0.56 + 0.44 x 2/7 = 68.6 % local.
		within(t, "picks in zone a with 3 of 5 gone", sum(got, inZone(kept, "a")), n*686/1000, 200)
	}
	// After zoneMemory the size is 2, and both stay.
	waitFor(t, b, "the size forgotten", func(p *picker) bool { return len(p.ready) == 2 })
	if got := count(t, b, 1000, nil); sum(got, inZone(kept, "a")) != 1000 {
		t.Fatalf("after zoneMemory: picks %v", got)
	}
}

// A keyed Maglev pick stays in the zone or spills over by its key: every
// key keeps one node while the share holds.
func TestZoneKeyedPicksKeepTheirNode(t *testing.T) {
	es := zoned(5, "a", "b")
	local := inZone(es, "a")
	b, _ := newZoneTest(t, es, "a", 5, WithPolicy(Maglev(0)), WithoutBreakers(),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	b.Quarantine(local[0], time.Hour)
	b.Quarantine(local[1], time.Hour)
	waitFor(t, b, "the spill", func(p *picker) bool { return len(p.ready) == 8 })
	if _, ok := b.picker.Load().sel.(*zoneSel); !ok {
		t.Fatalf("selector %T, want a *zoneSel", b.picker.Load().sel)
	}
	const keys = 2000
	stay := 0
	for i := range keys {
		k := HashKey(fmt.Sprint("key", i))
		got := count(t, b, 3, nil, k)
		if len(got) != 1 {
			t.Fatalf("key%d went to %v; want one node", i, got)
		}
		stay += sum(got, local) / 3
	}
	// 84 % of keys stay, and the others' table slots are in zone a 3 times
	// in 8: 0.84 + 0.16 x 3/8 = 90 %.
	within(t, "keys in zone a", stay, keys*90/100, 80)
}

// With WithSubset the subset is taken in the zone; while some picks spill
// over, among the others too; InSubset agrees.
func TestZoneWithSubset(t *testing.T) {
	es := zoned(10, "a", "b", "c")
	local := inZone(es, "a")
	b, _ := newZoneTest(t, es, "a", 3, WithPolicy(RoundRobin()), WithSubset(3), WithoutBreakers(),
		WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
	sub := subsetOf(b)
	for _, a := range sub {
		if !slices.Contains(local, a) {
			t.Fatalf("subset %v has %s, not in zone a", sub, a)
		}
	}
	for _, e := range es {
		if in := slices.Contains(sub, e.Addr); b.InSubset(e.Addr) != in {
			t.Errorf("InSubset(%s) = %v; in the subset %v: %v", e.Addr, !in, sub, in)
		}
	}
	// Zone a down to 5 of 10: 70 % stay in its subset of 3, and the rest
	// spill over its 3 and a subset of 3 of the 20 others.
	var out []string
	for _, a := range local {
		if len(out) < 5 && !slices.Contains(sub, a) {
			out = append(out, a)
		}
	}
	for _, a := range out {
		b.Quarantine(a, time.Hour)
	}
	waitFor(t, b, "the spill", func(p *picker) bool { return len(p.ready) == 6 })
	spill := subsetOf(b)
	if got := diff(sub, spill); len(got) != 3 {
		t.Fatalf("subset while spilling: %v, before %v; want 3 more nodes", spill, sub)
	}
	for _, a := range spill {
		if in := slices.Contains(local, a); in != slices.Contains(sub, a) {
			t.Fatalf("subset while spilling: %v, before %v", spill, sub)
		}
		if !b.InSubset(a) {
			t.Errorf("InSubset(%s) = false while it takes picks", a)
		}
	}
	got := count(t, b, 6000, nil)
	if len(got) != 6 {
		t.Fatalf("picks went to %v; want the 6 of the subsets", got)
	}
	within(t, "picks on zone a's subset", sum(got, sub), 6000*85/100, 150) // 0.7 + 0.3 x 1/2
}

// In panic mode, which counts every zone, the zone preference is off; and
// a zone discovery does not list prefers nothing.
func TestZoneOffInPanicModeAndWithoutTheZone(t *testing.T) {
	es := zoned(2, "a", "b", "c")
	b, _ := newZoneTest(t, es, "a", 2, WithPolicy(RoundRobin()), WithoutBreakers(),
		WithOutlierDetection(OutlierConfig{Disabled: true}))
	// 4 of 6 out: below the default panic threshold of 50 %.
	for _, a := range append(inZone(es, "b"), inZone(es, "c")...) {
		b.Quarantine(a, time.Hour)
	}
	waitFor(t, b, "panic mode", func(p *picker) bool { return p.panic })
	if got := count(t, b, 600, nil); len(got) != 6 {
		t.Fatalf("panic mode: picks went to %v; want all 6 nodes", got)
	}
	other, _ := newZoneTest(t, es, "z", 6)
	if got := count(t, other, 600, nil); len(got) != 6 {
		t.Fatalf("zone z, which discovery does not list: picks went to %v; want all 6 nodes", got)
	}
}

// P2C over a spilling zone: the two selectors count the nodes still to
// probe together, so the picker without fresh comes once all are probed.
func TestZoneP2CProbesEveryNewNodeOnce(t *testing.T) {
	es := zoned(5, "a", "b")
	local := inZone(es, "a")
	b, _ := newZoneTest(t, es, "a", 5, WithPolicy(P2C()), WithoutBreakers(),
		WithOutlierDetection(OutlierConfig{Disabled: true, Interval: time.Hour}) /* no sweep's rebuild */, WithPanicThreshold(0))
	// No pick yet: all ten never probed. Zone a at 3 of 5 spills.
	b.Quarantine(local[0], time.Hour)
	b.Quarantine(local[1], time.Hour)
	waitFor(t, b, "the spill", func(p *picker) bool { return len(p.ready) == 8 })
	if p := b.picker.Load(); p.fresh != 8 {
		t.Fatalf("picker has %d fresh nodes, want 8", p.fresh)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for ctx.Err() == nil && b.picker.Load().fresh > 0 {
		count(t, b, 100, nil)
	}
	if p := b.picker.Load(); p.fresh > 0 {
		t.Fatalf("after 5 s of picks the picker still has %d fresh nodes", p.fresh)
	}
}

// A zone down to its last node spills over with one local node: the local
// selector then holds one entry, which the picker never passes to a
// selector on its own (it picks a lone node without one). P2C drew two
// distinct nodes from it, and indexed past its end.
func TestZoneSpillsOverFromItsLastNode(t *testing.T) {
	es := zoned(3, "a", "b")
	local := inZone(es, "a")
	for _, pol := range []Policy{RoundRobin(), Random(), WeightedRoundRobin(), P2C(), Maglev(0)} {
		t.Run(pol.Name(), func(t *testing.T) {
			b, _ := newZoneTest(t, es, "a", 3, WithPolicy(pol), WithoutBreakers(),
				WithOutlierDetection(OutlierConfig{Disabled: true}), WithPanicThreshold(0))
			// 1.4 x 1/3 = 47 % stay on local[0]; the rest go over all 4
			// nodes in rotation: 0.467 + 0.533/4 = 60 % on local[0].
			b.Quarantine(local[1], time.Hour)
			b.Quarantine(local[2], time.Hour)
			waitFor(t, b, "the spill", func(p *picker) bool { return len(p.ready) == 4 })
			const n = 4000
			got := count(t, b, n, nil)
			if got[local[1]]+got[local[2]] != 0 {
				t.Fatalf("quarantined nodes picked: %v", got)
			}
			if pol.Name() != "p2c_peak_ewma" { // P2C follows the sampled latencies
				within(t, "picks on zone a's last node", got[local[0]], n*60/100, 200)
			} else if got[local[0]] < n*47/100-200 {
				t.Errorf("picks on zone a's last node: %d of %d, want at least 47 %%", got[local[0]], n)
			}
		})
	}
}
