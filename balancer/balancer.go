package balancer

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
)

// Balancer picks healthy nodes from a discovery.Watcher. Create it with New;
// Pick and Quarantine may be called from any goroutine; Close stops it.
type Balancer struct {
	w        discovery.Watcher
	opts     options
	picker   atomic.Pointer[picker]
	set      atomic.Pointer[nodeSet] // the nodes and their endpoints, for Quarantine and Status
	breakers *breaker.Set            // nil without breakers
	inflight atomic.Int64            // over all nodes, for Maglev's bounded load
	// strayBreakers says that a pick on an older snapshot made the breaker
	// of a node discovery no longer lists (see node.breaker): rebuild
	// drops the breakers of the addresses not listed.
	strayBreakers atomic.Bool
	tau           float64  // P2C decay, ns
	penalty       float64  // P2C failure penalty, ns
	samp          sampling // P2C's latency sampling rate
	salt          uint64   // the nodes' ranks for WithSubset hash it in
	// subset says which nodes are in the subset, for InSubset.
	subset atomic.Pointer[subsetView]

	kickCh   chan struct{} // something changed; buffered 1
	rewakeCh chan struct{} // wakeAt moved earlier; buffered 1

	stateVersion atomic.Uint64 // Version of the last discovery State applied

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	pubCh atomic.Pointer[chan struct{}] // closed and replaced after every picker publication

	// mu serialises the watch and run goroutines over the fields below and
	// the nodes' fields marked "run": watch applies each State and rebuilds
	// the picker itself, rather than wake run to do it, and run rebuilds
	// on health changes, quarantines and timers.
	mu      sync.Mutex
	wakeAt  int64 // mono time of the next scheduled change, run's timer
	nodes   map[string]*node
	order   []*node              // the nodes in the State's order (sorted by endpoint ID)
	eps     []discovery.Endpoint // their endpoints: order[i]'s is eps[i]
	state   discovery.State
	applied bool   // a State was applied; later nodes slow-start
	gen     uint64 // counts applied States; marks the nodes each one lists
	rng     *rand.Rand
	edf     edfScratch // weighted round robin's working memory
	zone    zoneState  // WithLocalZone's record of the zone
	fresh   int        // rebuild: the ready nodes never sampled nor probed, for P2C's build
	opened  int        // rebuild: the ready nodes due for a breaker probe (node.reprobe), for P2C's build
}

// New starts a Balancer over w. It does not wait for discovery: until the
// first State arrives, Pick fails with ErrNoEndpoints ("discovery has not
// answered yet"); if w's Next fails before then (w was closed), with
// ErrNoEndpoints and that error (discovery.ErrClosed). The Balancer reads w but does not own it: Close stops the
// Balancer, and the caller closes w. w must not be shared with another
// consumer: each State goes to one caller of Next. New starts two goroutines (and those of
// the breaker Set) that Close stops.
func New(w discovery.Watcher, opts ...Option) *Balancer {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Balancer{
		w: w, opts: o, kickCh: make(chan struct{}, 1), rewakeCh: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
		nodes: map[string]*node{},
		rng:   rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		salt:  rand.Uint64(),
	}
	b.samp.init()
	if p, ok := o.policy.(p2c); ok {
		b.tau, b.penalty = float64(p.tau), float64(p.penalty)
	} else {
		b.tau, b.penalty = float64(10*time.Second), float64(250*time.Millisecond)
	}
	if o.breakers {
		b.breakers = breaker.NewSet(o.breakerConfig, breaker.WithOnStateChange(func(e breaker.Event) {
			b.kick() // first: a slow observer must not hold the picker back
			if o.onBreakerChange != nil {
				o.onBreakerChange(e)
			}
		}))
	}
	b.set.Store(&nodeSet{})
	b.subset.Store(&subsetView{})
	b.publish(b.emptyPicker(nil))
	b.wg.Add(2)
	go b.watch()
	go b.run()
	return b
}

func (b *Balancer) emptyPicker(discErr error) *picker {
	e := &Error{Service: b.opts.service, Kind: ErrNoEndpoints, Discovery: discErr}
	if discErr == nil && !b.applied {
		e.Discovery = ErrNoStateYet
	}
	return &picker{err: e, unavail: e}
}

// ErrNoStateYet is wrapped by the *Error of a Pick made before discovery
// answered for the first time. Callers that may wait (rpcclient) wait for
// Updated instead of failing.
var ErrNoStateYet = errors.New("discovery has not answered yet")

// kick wakes the run goroutine. It never blocks.
func (b *Balancer) kick() {
	select {
	case b.kickCh <- struct{}{}:
	default:
	}
}

// watch applies the watcher's States as they come, and publishes a picker
// for each.
func (b *Balancer) watch() {
	defer b.wg.Done()
	for {
		s, err := b.w.Next(b.ctx)
		if err != nil {
			// ctx done (Close), or the watcher closed (or broke its
			// contract): keep the last picker. Before any State, that
			// picker says discovery has not answered yet, and callers
			// that wait for its first answer (rpcclient) would wait for
			// ever: say instead that it never will.
			if b.ctx.Err() == nil {
				b.mu.Lock()
				if !b.applied {
					b.state.Err = err // for every later rebuild too
					b.publish(b.emptyPicker(err))
				}
				b.mu.Unlock()
			}
			return
		}
		b.mu.Lock()
		b.apply(s)
		earlier := b.update()
		b.mu.Unlock()
		if earlier {
			select {
			case b.rewakeCh <- struct{}{}:
			default:
			}
		}
	}
}

// run rebuilds the picker when a node's health changes (breakers, ejections,
// quarantines) and when a scheduled change is due, and runs the outlier
// sweep.
func (b *Balancer) run() {
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.outlier.Interval)
	defer tick.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		rebuild := true
		select {
		case <-b.ctx.Done():
			return
		case <-b.kickCh:
		case <-tick.C:
			b.mu.Lock()
			b.sweep()
			b.mu.Unlock()
		case <-wake.C:
		case <-b.rewakeCh:
			rebuild = false
		}
		b.mu.Lock()
		if rebuild {
			b.update()
		}
		at := b.wakeAt
		b.mu.Unlock()
		wake.Reset(time.Duration(max(at-mono(), int64(time.Millisecond))))
	}
}

// update publishes a picker built from the nodes' current state and
// schedules the next rebuild; it reports whether that is earlier than the
// one scheduled before. b.mu is held.
func (b *Balancer) update() bool {
	next := b.rebuild()
	at := mono() + int64(next)
	earlier := b.wakeAt == 0 || at < b.wakeAt
	b.wakeAt = at
	return earlier
}

// apply merges a new State into the nodes, keyed by address. Its cost is
// one pass over the State plus a map operation per address that came or
// went: a node is found by its position in the last State (both are sorted
// by endpoint ID) before the map is asked, so an update that changes a few
// endpoints of a large set does not look every address up.
func (b *Balancer) apply(s discovery.State) {
	// A State with an error carries the last known good set, which the
	// watcher may have emptied: a registry answer that lists only invalid
	// instances, and none of that set, says for certain its nodes are gone
	// (discovery.Publisher.SetErrorKeeping). It is applied like any other.
	b.state = s
	now := mono()
	added := int64(0)
	if b.applied && b.opts.slowStart > 0 {
		added = now
	}
	b.gen++
	old := b.order
	came, gone := false, false // addresses came or went
	order := make([]*node, len(s.Endpoints))
	seed := 0.0 // the cost new nodes start with, once one is found
	j := 0      // where in old the next endpoint is expected
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		var n *node
		if j < len(old) && old[j].addr == ep.Addr {
			n = old[j]
			j++
		} else if n = b.nodes[ep.Addr]; n != nil && n.gen != b.gen {
			j = n.pos + 1 // resynchronise after endpoints that came or went
		} else if n == nil {
			if seed == 0 {
				// New nodes start at the typical latency of the
				// last State's nodes that are in rotation (1 ms
				// when none is): not at a failed node's penalty.
				var ok bool
				if seed, ok = medianCost(old, outOfRotation(now)); !ok {
					seed = float64(time.Millisecond)
				}
			}
			n = newNode(b, ep.Addr, added, seed)
			n.first = Result{Endpoint: *ep, Done: n.done}
			n.res.Store(&n.first)
			b.nodes[ep.Addr] = n
			came = true
		}
		// A State that lists one address twice (a Watcher that does not
		// Sanitize) gives its node the first listing's endpoint.
		if r := n.res.Load(); n.gen != b.gen && !sameEndpoint(&r.Endpoint, ep) {
			n.res.Store(&Result{Endpoint: *ep, Done: n.done})
		}
		n.gen, n.pos = b.gen, i
		order[i] = n
	}
	b.order, b.eps = order, s.Endpoints
	for _, n := range old {
		if n.gen != b.gen && b.nodes[n.addr] == n {
			delete(b.nodes, n.addr)
			n.gone.Store(true)
			gone = true
		}
	}
	// Drop the breakers of addresses that left (or that a pick on an older
	// snapshot made after they left); an update that only changes health or
	// weights skips this.
	if b.breakers != nil && (gone || b.breakers.Len() > len(b.nodes)) {
		b.strayBreakers.Store(false)
		b.retainBreakers()
	}
	index := b.set.Load().index
	if came || gone || index == nil {
		index = &addrIndex{nodes: order}
	}
	b.set.Store(&nodeSet{nodes: order, eps: s.Endpoints, index: index})
	b.applied = true
}

// retainBreakers drops the breakers of the addresses discovery no longer
// lists. b.mu is held.
func (b *Balancer) retainBreakers() {
	b.breakers.RetainFunc(func(addr string) bool {
		_, ok := b.nodes[addr]
		return ok
	})
}

// sameEndpoint reports whether a and b are equal, cheaply when they share
// their Tags and Meta: discovery.Publisher hands on the previous State's
// values for the endpoints an update leaves unchanged, and comparing
// every entry of every endpoint's Meta on every update would cost apply, on
// 10,000 endpoints with 64 entries each, some 70 ms.
//
// apply found the node by address: a.Addr == b.Addr is known.
func sameEndpoint(a, b *discovery.Endpoint) bool {
	if a.Weight != b.Weight || a.Health != b.Health || len(a.Tags) != len(b.Tags) || len(a.Meta) != len(b.Meta) ||
		a.ID != b.ID || a.Zone != b.Zone {
		return false
	}
	if (len(a.Tags) == 0 || &a.Tags[0] == &b.Tags[0]) && (len(a.Meta) == 0 || sameMap(a.Meta, b.Meta)) {
		return true
	}
	return a.Equal(*b)
}

// sameMap reports whether a and b are the same map (not merely equal ones).
func sameMap(a, b map[string]string) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&a)) == *(*unsafe.Pointer)(unsafe.Pointer(&b))
}

// nodeSet is the nodes of an applied State and their endpoints, published
// for the goroutines other than run (Quarantine, Status). It is immutable.
type nodeSet struct {
	nodes []*node
	eps   []discovery.Endpoint // nodes[i]'s endpoint is eps[i]
	index *addrIndex           // nil before the first State
}

// addrIndex is the nodes by address, built on first use: most sets are
// replaced before anyone looks an address up, and a large update should not
// pay for a map nobody reads. The sets of successive States share one while
// no address comes or goes.
type addrIndex struct {
	nodes []*node
	once  sync.Once
	m     map[string]*node
}

// byAddr returns the nodes by address. Safe from any goroutine.
func (s *nodeSet) byAddr() map[string]*node {
	x := s.index
	if x == nil {
		return nil
	}
	x.once.Do(func() {
		x.m = make(map[string]*node, len(x.nodes))
		for _, n := range x.nodes {
			x.m[n.addr] = n
		}
	})
	return x.m
}

// lookup returns the node at addr, spelled as the State spelled it or any
// other way (discovery.CanonicalAddr): discovery publishes an address in
// its canonical spelling, "[2001:db8::1]:80", and a caller naming the
// node "[2001:DB8:0::1]:80" means it too. The other spelling costs a
// parse, and only when the first lookup misses.
func (s *nodeSet) lookup(addr string) *node {
	m := s.byAddr()
	if n := m[addr]; n != nil || m == nil {
		return n
	}
	if c, err := discovery.CanonicalAddr(addr); err == nil && c != addr {
		return m[c]
	}
	return nil
}

// Listed reports whether the last discovery State the Balancer applied
// lists addr, in any spelling (see discovery.CanonicalAddr). It allocates
// nothing once the set's address index is built (on the first lookup
// after addresses came or went) for an address listed as spelled, or a
// canonical one. Safe from any goroutine; rpcclient's drain loop calls it
// for each endpoint it holds.
func (b *Balancer) Listed(addr string) bool {
	return b.set.Load().lookup(addr) != nil
}

// InSubset reports whether addr is listed (see Listed) and, with
// WithSubset, in the Balancer's subset: among the nodes that rank highest,
// in rotation or not (a node whose breaker is open keeps its place and
// gets it back when it is in rotation again). Without WithSubset it is
// Listed. Safe from any goroutine; rpcclient's drain loop calls it for
// each endpoint it holds, and drains those outside the subset.
func (b *Balancer) InSubset(addr string) bool {
	n := b.set.Load().lookup(addr)
	if n == nil {
		return false
	}
	v := b.subset.Load()
	if v.zoned && !n.local.Load() {
		return v.rest && n.rank >= v.restFloor
	}
	return n.rank >= v.floor
}

// subsetView says which nodes are in the subset: those that rank at least
// floor, or, when zoned (WithLocalZone), those of the zone that do and,
// while some picks spill over (rest), the others that rank at least
// restFloor. The zero value: every node. rebuild publishes it.
type subsetView struct {
	floor, restFloor uint64
	zoned, rest      bool
}

// StateVersion returns the Version of the last discovery State the Balancer
// applied and published a picker for; 0 before the first. Picks made after
// it returns v come from that State or a newer one. With Updated, it lets a caller wait for
// discovery itself to answer (after a ResolveNow) rather than for any health
// change. Safe from any goroutine.
func (b *Balancer) StateVersion() uint64 { return b.stateVersion.Load() }

// medianCost is the typical latency a node starts or restarts with: the
// median of the nodes that skip does not reject (each at its usual
// latency, without a peak or a run of failures it is in: see typicalNs),
// sampled evenly over nodes (at most 255 of them, for large sets); false
// when there are none.
func medianCost(nodes []*node, skip func(*node) bool) (float64, bool) {
	cs := make([]float64, 0, 255)
	step := 1 + len(nodes)/cap(cs)
	for i := 0; i < len(nodes) && len(cs) < cap(cs); i += step {
		if n := nodes[i]; skip == nil || !skip(n) {
			cs = append(cs, n.typicalNs())
		}
	}
	if len(cs) == 0 {
		return 0, false
	}
	slices.Sort(cs)
	return cs[len(cs)/2], true
}

// outOfRotation returns a test for the nodes whose latency is not typical
// of the service: out (breaker not closed or ejected, at the last rebuild)
// or quarantined at now. Their cost holds the failures that took them out.
func outOfRotation(now int64) func(*node) bool {
	return func(n *node) bool { return n.out || n.quarUntil.Load() > now }
}

// reseed gives nodes that are back from an open breaker or an ejection the
// median latency of the nodes that stayed in, when theirs is higher. Their
// estimate still holds the failures that took them out (at least the
// failure penalty) and falls only as samples come, which a node that
// costly gets from its probes alone: a node that has proved itself healthy
// would be left with probe traffic. If it is in fact still slow, the first
// slow sample raises its cost again at once. Its average is lowered to the
// seed too, so that a slow past does not hold the cost up. b.mu is held.
func (b *Balancer) reseed(back []*node) {
	if len(back) == 0 {
		return
	}
	defer func() {
		for _, n := range back {
			n.out = false
		}
	}()
	seed, ok := medianCost(b.order, outOfRotation(mono()))
	if !ok {
		return // every node was out: no typical latency to give
	}
	now := mono()
	for _, n := range back {
		if n.costNs() > seed {
			n.cost.Store(math.Float64bits(seed))
			n.stamp.Store(now)
		}
		if math.Float64frombits(n.avg.Load()) > seed {
			n.avg.Store(math.Float64bits(seed))
		}
	}
}

// rebuild ejects the nodes that reached the consecutive-failure threshold,
// publishes a new picker from the nodes' current health, and returns how
// long until the next scheduled change (a quarantine or ejection ending).
// The watch and run goroutines call it, with b.mu held, after every State and wake-up.
func (b *Balancer) rebuild() time.Duration {
	if b.breakers != nil && b.strayBreakers.Load() && b.strayBreakers.Swap(false) {
		b.retainBreakers()
	}
	now := mono()
	next := int64(math.MaxInt64)
	ejectAt := int32(math.MaxInt32)
	if c := b.opts.outlier; !c.Disabled {
		ejectAt = int32(min(c.ConsecutiveFailures, math.MaxInt32))
	}
	all := b.order
	if len(all) == 0 {
		b.publish(b.emptyPicker(b.state.Err))
		return time.Hour
	}
	var open, ejected, quarantined int
	var back []*node
	b.fresh, b.opened = 0, 0
	ready := make([]entry, 0, len(all))
	for i, n := range all {
		n.endEjection(now)
		if n.consec.Load() >= ejectAt && n.ejectedUntil <= now {
			b.eject(n, now, "consecutive failures")
		}
		ok := true
		st := n.breakerState()
		if st == breaker.Open {
			open++
			ok = false
		}
		// A node is out while its breaker is not closed or it is
		// ejected; it is back once its breaker closes again.
		out := st != breaker.Closed || n.ejectedUntil > now
		switch {
		case st == breaker.Open || st == breaker.HalfOpen && !n.halfOpen:
			// Its breaker opened: once half-open, P2C must send the
			// probe that can close it, although the node's cost still
			// holds the failures that opened it (see p2cSel.first).
			n.reprobe.Store(true)
		case st == breaker.Closed && n.reprobe.Load():
			n.reprobe.Store(false) // closed by a probe P2C sent otherwise
		}
		n.halfOpen = st == breaker.HalfOpen
		if n.out && !out {
			back = append(back, n) // reseed clears its out
		} else if n.out != out {
			n.out = out
		}
		if n.ejectedUntil > now {
			ejected++
			ok = false
			next = min(next, n.ejectedUntil)
		}
		if q := n.quarUntil.Load(); q != 0 {
			if q > now {
				quarantined++
				ok = false
				next = min(next, q)
			} else {
				n.quarUntil.CompareAndSwap(q, 0)
			}
		}
		if ok {
			ready = append(ready, b.entryFor(n, i, now, &next))
			b.countFresh(n)
		}
	}
	if c := b.opts.outlier; !c.Disabled && ejected > c.maxEjected(len(b.nodes)) && b.trimEjections(now) {
		// The ejections past the cap of a set that shrank under them
		// have ended: build again with those nodes back.
		return b.rebuild()
	}
	healthy := len(ready)
	b.reseed(back)
	panicking := b.opts.panicThreshold > 0 && belowShare(healthy, len(all), b.opts.panicThreshold)
	if panicking {
		ready, b.fresh, b.opened = ready[:0], 0, 0
		for i, n := range all {
			if n.breakerState() != breaker.Open {
				ready = append(ready, b.entryFor(n, i, now, &next))
				b.countFresh(n)
			}
		}
	}
	var local []entry // with WithLocalZone, while only a share of the picks stays in the zone
	share, mode := 0.0, zoneNone
	if b.opts.zone != "" {
		localReady := 0
		if !panicking {
			ready, local, share = b.preferZone(ready, all, now, &next)
			switch {
			case local != nil:
				mode, localReady = zoneSpill, len(local)
			case share >= 1:
				mode, localReady = zoneLocal, len(ready)
			}
		}
		b.noteZone(mode, share, localReady)
	}
	view := subsetView{}
	if k := b.opts.subset; k > 0 {
		switch mode {
		case zoneSpill:
			// A subset in the zone, and one of the others.
			var rest []entry
			for _, e := range ready {
				if !all[e.idx].local.Load() {
					rest = append(rest, e)
				}
			}
			if len(local) > k {
				local, view.floor = subset(local, all, k)
			}
			if len(rest) > k {
				rest, view.restFloor = subset(rest, all, k)
			}
			view.zoned, view.rest = true, true
			ready = mergeByIdx(local, rest)
		case zoneLocal:
			view.zoned = true
			fallthrough
		default:
			if len(ready) > k {
				ready, view.floor = subset(ready, all, k)
			}
		}
	}
	if b.opts.subset > 0 || mode == zoneLocal {
		// ready lost nodes: count its fresh and opened again.
		b.fresh, b.opened = 0, 0
		for _, e := range ready {
			b.countFresh(all[e.idx])
		}
	}
	if *b.subset.Load() != view {
		b.subset.Store(&view)
	}
	unavail := &Error{Service: b.opts.service, Kind: ErrUnavailable, Total: len(all), Open: open,
		Ejected: ejected, Quarantined: quarantined, Discovery: b.state.Err}
	refused := *unavail // every ready node's breaker refused at pick time
	refused.Refused = len(ready)
	prev := b.picker.Load()
	cut := uint64(0)
	if local != nil {
		cut = uint64(share * (1 << 63))
	}
	if prev.gen == b.gen && prev.panic == panicking && prev.zoneCut == cut && prev.fresh == b.fresh && prev.opened == b.opened && prev.err != nil && sameCounts(prev.err, unavail) && slices.Equal(prev.ready, ready) {
		// Nothing a pick would see has changed since the last picker
		// (the outlier sweep's tick, a kick that changed nothing):
		// keep it, and with it the policy's cursor or schedule, so
		// that a client picking less often than the ticks still
		// reaches every node in turn.
		if next == math.MaxInt64 {
			return time.Hour
		}
		return time.Duration(next - now)
	}
	p := &picker{ready: ready, nodes: all, dense: len(ready) == len(all), unavail: &refused, err: unavail, panic: panicking,
		mode: b.opts.policy.stats(), breakers: b.breakers != nil, gen: b.gen, fresh: b.fresh, opened: b.opened, zoneCut: cut}
	switch {
	case local != nil:
		// Only a share of the picks stays in the zone: a retry's pick
		// under a round-robin policy draws from the zone's mix too, and
		// turns the rotation it lands in.
		p.sel = b.newZoneSel(ready, local, all, share)
	case len(ready) > 0:
		p.sel = b.opts.policy.build(ready, all, b)
		p.rot, _ = p.sel.(rotation)
	}
	if prev.panic != panicking {
		// Trouble when it starts; its end is good news.
		level := slog.LevelWarn
		if !panicking {
			level = slog.LevelInfo
		}
		b.opts.logger.Log(context.Background(), level, "balancer: panic mode", "service", b.opts.service, "on", panicking,
			"healthy", healthy, "total", len(all))
	}
	b.publish(p)
	if next == math.MaxInt64 {
		return time.Hour
	}
	return time.Duration(next - now)
}

// countFresh counts n, a ready node, in fresh when P2C never sampled nor
// probed it, and in opened when it is due for a breaker probe. b.mu is held.
func (b *Balancer) countFresh(n *node) {
	if n.probed.Load() == neverProbed {
		b.fresh++
	}
	if n.reprobe.Load() {
		b.opened++
	}
}

// belowShare reports whether k of n is less than share of n. The product
// share x n is rounded up by float arithmetic for some shares (0.07 x 100
// is 7.000000000000001), which would count exactly the share as below it;
// the product is lowered by far more than that error and far less than
// any real fraction of a node.
func belowShare(k, n int, share float64) bool {
	return float64(k) < share*float64(n)*(1-1e-12)
}

// sameCounts reports whether a and b, errors of pickers built from one
// State, say the same (their Discovery error is that State's).
func sameCounts(a, b *Error) bool {
	return a.Kind == b.Kind && a.Total == b.Total && a.Open == b.Open && a.Ejected == b.Ejected &&
		a.Quarantined == b.Quarantined
}

// entryFor is the entry of n = b.order[i] in a picker built now; it lowers
// next to the time n's weight next steps up while n ramps up in slow
// start: a twentieth of the window later (at least 10 ms, at most 1 s),
// and at the window's end, when it reaches full weight.
func (b *Balancer) entryFor(n *node, i int, now int64, next *int64) entry {
	w, ramping := b.weight(n, &b.eps[i], now)
	if ramping {
		step := min(max(b.opts.slowStart/20, 10*time.Millisecond), time.Second)
		*next = min(*next, now+int64(step), n.added+int64(b.opts.slowStart))
	}
	return entry{idx: uint32(i), weight: float32(w)}
}

// minWeight is the least effective weight: a degraded factor or slow-start
// share of 0 leaves a node a last resort rather than a weight the policies
// would divide by.
const minWeight = 1e-6

// weight is the effective weight now of node n with endpoint ep, at least
// minWeight, and whether n is still ramping up in slow start.
func (b *Balancer) weight(n *node, ep *discovery.Endpoint, now int64) (float64, bool) {
	w := float64(max(ep.Weight, 1))
	if ep.Health == discovery.Degraded {
		w *= b.opts.degradedFactor
	}
	ramping := false
	if n.added > 0 && b.opts.slowStart > 0 {
		if age := now - n.added; age < int64(b.opts.slowStart) {
			w *= max(b.opts.slowStartMin, float64(age)/float64(b.opts.slowStart))
			ramping = true
		}
	}
	// Not max(w, minWeight): the builtin orders NaN and signed zeros,
	// which costs a dozen instructions per node of every rebuild.
	if !(w >= minWeight) {
		w = minWeight
	}
	return w, ramping
}

// publish stores p and wakes whoever waits in Updated. New (before the
// goroutines start), the watch and run goroutines with b.mu held (through
// update and rebuild), and Close (after both have exited) call it, so
// publications never race.
func (b *Balancer) publish(p *picker) {
	b.picker.Store(p)
	// After the picker: whoever sees the version picks from a picker
	// built from that State or a newer one. Before Updated's channel
	// closes: whoever wakes on it sees the version.
	b.stateVersion.Store(b.state.Version)
	next := make(chan struct{})
	if old := b.pubCh.Swap(&next); old != nil {
		close(*old)
	}
}

// Updated returns a channel that is closed the next time the Balancer
// publishes a new picker (after a discovery update or a health change).
// Take it before the check it guards, then wait on it. It takes no lock and
// allocates nothing, so callers may take it on every request.
func (b *Balancer) Updated() <-chan struct{} { return *b.pubCh.Load() }

// Quarantine keeps addr out of picks for d, unless panic mode needs it; a d
// of 0 or less ends its quarantine now. The RPC client calls it when a dial
// to addr fails or hangs, and with 0 when a dial succeeds, from any
// goroutine. It reports whether addr, in any spelling (see
// discovery.CanonicalAddr), is a current node. The quarantine also ends
// when discovery drops the address (a node that comes back starts afresh).
func (b *Balancer) Quarantine(addr string, d time.Duration) bool {
	n := b.set.Load().lookup(addr)
	if n == nil {
		return false
	}
	if d <= 0 {
		if n.quarUntil.Swap(0) != 0 {
			b.kick()
		}
		return true
	}
	// Capped (73 years), so that mono() + d cannot wrap negative: the
	// quarantine would be over before it began.
	n.quarUntil.Store(mono() + int64(min(d, maxQuarantine)))
	b.kick()
	return true
}

// maxQuarantine is the longest quarantine: 73 years.
const maxQuarantine = time.Duration(math.MaxInt64 / 4)

// Close stops the Balancer's goroutines and its breakers and waits for them.
// Pick then fails with ErrClosed. The watcher is not closed. Close is
// idempotent.
func (b *Balancer) Close() error {
	b.once.Do(func() {
		b.cancel()
		b.wg.Wait()
		if b.breakers != nil {
			b.breakers.Close()
		}
		e := &Error{Service: b.opts.service, Kind: ErrClosed}
		b.publish(&picker{err: e, unavail: e})
	})
	return nil
}
