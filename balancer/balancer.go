package balancer

import (
	"context"
	"errors"
	"iter"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
)

// Balancer picks healthy nodes from a discovery.Watcher. Create it with New;
// Pick and Quarantine may be called from any goroutine; Close stops it.
type Balancer struct {
	w        discovery.Watcher
	opts     options
	picker   atomic.Pointer[picker]
	index    atomic.Pointer[map[string]*node] // address -> node, replaced on every update
	breakers *breaker.Set                     // nil without breakers
	inflight atomic.Int64                     // over all nodes, for Maglev's bounded load
	tau      float64                          // P2C decay, ns
	penalty  float64                          // P2C failure penalty, ns

	kickCh chan struct{} // something changed; buffered 1

	stateVersion atomic.Uint64 // Version of the last discovery State applied

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	stMu    sync.Mutex
	pending *discovery.State // newest State not yet applied

	pubCh atomic.Pointer[chan struct{}] // closed and replaced after every picker publication

	// run goroutine only
	nodes   map[string]*node
	order   []*node // the nodes in the State's order (sorted by endpoint ID)
	state   discovery.State
	applied bool // a State was applied; later nodes slow-start
	rng     *rand.Rand
	ticks   int
}

// New starts a Balancer over w. It does not wait for discovery: until the
// first State arrives, Pick fails with ErrNoEndpoints ("discovery has not
// answered yet"). The Balancer reads w but does not own it: Close stops the
// Balancer, and the caller closes w. New starts two goroutines (and those of
// the breaker Set) that Close stops.
func New(w discovery.Watcher, opts ...Option) *Balancer {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Balancer{
		w: w, opts: o, kickCh: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
		nodes: map[string]*node{},
		rng:   rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	if p, ok := o.policy.(p2c); ok {
		b.tau, b.penalty = float64(p.tau), float64(p.penalty)
	} else {
		b.tau, b.penalty = float64(10*time.Second), float64(250*time.Millisecond)
	}
	if o.breakers {
		b.breakers = breaker.NewSet(o.breakerConfig, breaker.WithOnStateChange(func(e breaker.Event) {
			if o.onBreakerChange != nil {
				o.onBreakerChange(e)
			}
			b.kick()
		}))
	}
	empty := map[string]*node{}
	b.index.Store(&empty)
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

// watch hands the watcher's States to the run goroutine, newest only.
func (b *Balancer) watch() {
	defer b.wg.Done()
	for {
		s, err := b.w.Next(b.ctx)
		if err != nil {
			return // ctx done (Close) or the watcher closed: keep the last picker
		}
		b.stMu.Lock()
		b.pending = &s
		b.stMu.Unlock()
		b.kick()
	}
}

// run owns the nodes and publishes pickers.
func (b *Balancer) run() {
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.outlier.Interval)
	defer tick.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.kickCh:
		case <-tick.C:
			b.sweep()
		case <-wake.C:
		}
		b.stMu.Lock()
		s := b.pending
		b.pending = nil
		b.stMu.Unlock()
		if s != nil {
			b.apply(*s)
		}
		b.ejectConsecutive()
		next := b.rebuild()
		wake.Reset(max(next, time.Millisecond))
	}
}

// apply merges a new State into the nodes, keyed by address.
func (b *Balancer) apply(s discovery.State) {
	b.state = s
	if s.Err != nil && len(s.Endpoints) == 0 && len(b.nodes) > 0 {
		return // never happens with our watchers; keep what we have
	}
	now := mono()
	added := int64(0)
	if b.applied && b.opts.slowStart > 0 {
		added = now
	}
	seed, ok := medianCost(maps.Values(b.nodes), nil) // map order: a fair sample
	if !ok {
		seed = float64(time.Millisecond)
	}
	keep := make(map[string]*node, len(s.Endpoints))
	order := make([]*node, 0, len(s.Endpoints))
	fresh := 0
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		n := b.nodes[ep.Addr]
		if n == nil {
			n = newNode(b, ep, added, seed)
			fresh++
		}
		n.setEndpoint(ep)
		keep[ep.Addr] = n
		order = append(order, n)
	}
	gone := len(b.nodes) - (len(keep) - fresh) // old addresses not in the new set
	b.nodes = keep
	b.order = order
	// Drop the breakers of addresses that left (or that a pick on an older
	// snapshot made after they left); an update that only changes health or
	// weights skips this.
	if b.breakers != nil && (gone > 0 || b.breakers.Len() > len(keep)) {
		b.breakers.RetainFunc(func(addr string) bool {
			_, ok := keep[addr]
			return ok
		})
	}
	idx := keep
	b.index.Store(&idx)
	b.applied = true
	b.stateVersion.Store(s.Version)
}

// StateVersion returns the Version of the last discovery State the Balancer
// applied; 0 before the first. With Updated, it lets a caller wait for
// discovery itself to answer (after a ResolveNow) rather than for any health
// change. Safe from any goroutine.
func (b *Balancer) StateVersion() uint64 { return b.stateVersion.Load() }

// medianCost is the typical latency a node starts or restarts with: the
// median of the nodes that skip does not reject (of up to 255 of them, for
// large sets); false when there are none.
func medianCost(nodes iter.Seq[*node], skip func(*node) bool) (float64, bool) {
	cs := make([]float64, 0, 255)
	for n := range nodes {
		if skip != nil && skip(n) {
			continue
		}
		cs = append(cs, n.costNs())
		if len(cs) == cap(cs) {
			break
		}
	}
	if len(cs) == 0 {
		return 0, false
	}
	slices.Sort(cs)
	return cs[len(cs)/2], true
}

// reseed gives nodes that are back from an open breaker or an ejection the
// median latency of the nodes that stayed in, when theirs is higher. Their
// peak EWMA still holds the failures that took them out (at least the
// failure penalty), and with a 10 s time constant it would take a minute or
// more to decay, leaving a node that has proved itself healthy with probe
// traffic only. If it is in fact still slow, the first slow sample raises
// its cost again at once. Run goroutine only.
func (b *Balancer) reseed(back []*node) {
	if len(back) == 0 {
		return
	}
	defer func() {
		for _, n := range back {
			n.out = false
		}
	}()
	seed, ok := medianCost(slices.Values(b.order), func(n *node) bool { return n.out })
	if !ok {
		return // every node was out: no typical latency to give
	}
	now := mono()
	for _, n := range back {
		if n.costNs() > seed {
			n.cost.Store(math.Float64bits(seed))
			n.stamp.Store(now)
		}
	}
}

// rebuild publishes a new picker from the nodes' current health, and
// returns how long until the next scheduled change (a quarantine or
// ejection ending).
func (b *Balancer) rebuild() time.Duration {
	now := mono()
	next := int64(math.MaxInt64)
	all := b.order
	if len(all) == 0 {
		b.publish(b.emptyPicker(b.state.Err))
		return time.Hour
	}
	var open, ejected, quarantined int
	var back []*node
	healthy := make([]*node, 0, len(all))
	for _, n := range all {
		ok := true
		st := n.breakerState()
		if st == breaker.Open {
			open++
			ok = false
		}
		// A node is out while its breaker is not closed or it is
		// ejected; it is back once its breaker closes again.
		out := st != breaker.Closed || n.ejectedUntil > now
		if n.out && !out {
			back = append(back, n) // reseed clears its out
		} else {
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
			healthy = append(healthy, n)
		}
	}
	b.reseed(back)
	candidates := healthy
	panicking := b.opts.panicThreshold > 0 && float64(len(healthy)) < b.opts.panicThreshold*float64(len(all))
	if panicking {
		candidates = candidates[:0:0]
		for _, n := range all {
			if n.breakerState() != breaker.Open {
				candidates = append(candidates, n)
			}
		}
	}
	ready := make([]entry, len(candidates))
	for i, n := range candidates {
		w, ramping := b.weight(n, now)
		if ramping {
			next = min(next, now+int64(time.Second))
		}
		ready[i] = entry{n: n, ep: n.epp.Load(), weight: w, inv: 1 / w}
	}
	unavail := &Error{Service: b.opts.service, Kind: ErrUnavailable, Total: len(all), Open: open,
		Ejected: ejected, Quarantined: quarantined, Discovery: b.state.Err}
	refused := *unavail // every ready node's breaker refused at pick time
	refused.Refused = len(ready)
	p := &picker{ready: ready, unavail: &refused, err: unavail, panic: panicking, mode: b.opts.policy.stats(),
		breakers: b.breakers != nil}
	if len(ready) > 0 {
		p.sel = b.opts.policy.build(ready, b)
	}
	if prev := b.picker.Load(); prev.panic != panicking {
		b.opts.logger.Warn("balancer: panic mode", "service", b.opts.service, "on", panicking,
			"healthy", len(healthy), "total", len(all))
	}
	b.publish(p)
	if next == math.MaxInt64 {
		return time.Hour
	}
	return time.Duration(next - now)
}

// weight is a node's effective weight now, and whether it is still ramping
// up in slow start.
func (b *Balancer) weight(n *node, now int64) (float64, bool) {
	w := float64(max(n.ep.Weight, 1))
	if n.ep.Health == discovery.Degraded {
		w *= b.opts.degradedFactor
	}
	if n.added > 0 && b.opts.slowStart > 0 {
		if age := now - n.added; age < int64(b.opts.slowStart) {
			f := max(b.opts.slowStartMin, float64(age)/float64(b.opts.slowStart))
			return w * f, true
		}
	}
	return w, false
}

// publish stores p and wakes whoever waits in Updated. Only the run
// goroutine (and Close, after it) calls it.
func (b *Balancer) publish(p *picker) {
	b.picker.Store(p)
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

// Quarantine keeps addr out of picks for d, unless panic mode needs it. The
// RPC client calls it when a dial to addr fails, from its own goroutine. It
// reports whether addr is a current node. The quarantine also ends when
// discovery drops the address (a node that comes back starts afresh).
func (b *Balancer) Quarantine(addr string, d time.Duration) bool {
	n := (*b.index.Load())[addr]
	if n == nil || d <= 0 {
		return false
	}
	n.quarUntil.Store(mono() + int64(d))
	b.kick()
	return true
}

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
