package balancer

import (
	"context"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
)

// Result is one pick. Call Done exactly once with the outcome of the request
// sent to Endpoint (nil for success), from any goroutine. Done never blocks
// and allocates nothing.
//
// Done functions are shared between picks, so Pick cannot tell a second call
// of one from the call of another pick: calling Done twice is a bug, and what
// the second call does depends on the pick.
//   - Most picks share their node's Done: a second call counts the outcome
//     again (in the breaker's window and the consecutive failures that eject
//     a node) and lowers the node's in-flight count again.
//   - A pick whose latency P2C samples (every one under light traffic, down
//     to one in 256) gets a pooled Done,
//     which its first call hands to the next sampled pick, on any node. A
//     second call made after that ends that other request in its stead: its
//     breaker is told this err, its in-flight count is released early, its
//     latency sample is taken now, and its own Done, when it comes, does the
//     same to whichever request holds the Done next, or nothing. Made before
//     that, a second call does nothing.
//   - A half-open breaker's probe gets a Done of its own: a second call does
//     nothing, and no other pick's Done can end a probe.
type Result struct {
	Endpoint discovery.Endpoint
	Done     func(err error)
}

// entry is one pickable node in a picker snapshot: 8 bytes and no pointer.
// A snapshot is rebuilt on every discovery update and health change, and
// the garbage collector would scan every pointer in every one it
// allocates; the node is found through the State's own slice of nodes,
// which the snapshot shares, and the endpoint through the node.
type entry struct {
	idx    uint32  // the node is nodes[idx]: its position in the State
	weight float32 // effective weight: endpoint weight x health x slow start, at least minWeight
}

// picker is an immutable snapshot built by the watch or run goroutine. Pick reads it
// without locks.
type picker struct {
	ready    []entry
	nodes    []*node // the State's nodes, which ready indexes
	dense    bool    // every node is ready: ready[j].idx is j, and Pick need not read it
	sel      selector
	rot      rotation  // sel, when it is a round-robin rotation; nil otherwise
	mode     statsMode // statistics the policy needs
	breakers bool      // the balancer has breakers
	err      *Error    // returned when ready is empty
	unavail  *Error    // returned when every ready node refused
	panic    bool
	zoneCut  uint64 // the zoneSel's cut; 0 without one
	gen      uint64 // the Balancer's gen (the State applied) it was built for
	fresh    int    // its ready nodes never sampled nor probed (see p2cSel.fresh)
	opened   int    // its ready nodes due for a breaker probe (see node.reprobe)
}

// selector is a policy's choice function over one snapshot.
type selector interface {
	// first returns the index in ready of the node to try first; Pick
	// then tries the following indexes in order. hash is the pick's hash
	// key, hashed, when hasKey. (A hash, not the key: a string passed
	// through an interface call escapes, and with it the whole PickOption
	// slice, so every Exclude list would be allocated on the heap.)
	// The second result, when not 0, asks for the request's latency to be
	// sampled: it is the request's mono start time, read once for both the
	// selector's own use and the sample.
	first(hash uint64, hasKey bool) (int, int64)
}

// Pick chooses a node for one request. It never blocks and, on the success
// path, allocates nothing. It may be called from any goroutine.
//
// It returns an *Error wrapping ErrNoEndpoints when discovery lists nothing,
// and wrapping ErrUnavailable when every node has an open breaker (or is
// otherwise unusable); both name the service and say why. ctx is not used
// for waiting: Pick never waits. It is accepted for symmetry and future use
// (tracing).
//
// Pick is kept small enough for the compiler to inline, so that the
// Endpoint is copied into the caller's frame instead of being returned
// through memory. Returning the 104-byte Result from a function that is not
// inlined costs about 20 ns, more than the rest of a round-robin pick
// (BenchmarkResultCopy). scripts/test.sh checks that Pick still inlines.
func (b *Balancer) Pick(_ context.Context, opts ...PickOption) (Result, error) {
	res, err := b.pick(opts)
	return *res, err
}

// noResult is what pick returns when it fails.
var noResult Result

// pick is Pick's body. It returns the pick's Result, ready-made and never
// mutated: the node's own (node.res), or, when the request needs its own
// Done, one made for it (see admit); or &noResult and the error.
//
// Why ready-made: Pick's caller copies the Result out of Pick's frame.
// When that frame's copy was assembled from the endpoint and a Done stored
// apart, the copy's wide loads straddle narrower stores still in flight,
// which the processor cannot forward to them: a stall of about 8 ns, a
// third of a round-robin pick. A Result copied whole from memory is copied
// with the same wide loads and stores all the way.
func (b *Balancer) pick(opts []PickOption) (*Result, error) {
	p := b.picker.Load()
	if len(p.ready) == 0 {
		return &noResult, p.err
	}
	var po pickOptions
	for i := range opts {
		o := &opts[i]
		if o.exclude != nil {
			po.exclude = opts // excluded reads every Exclude in opts
		}
		if o.hasKey {
			po.hashKey, po.hasKey = o.hashKey, true
		}
	}
	n := len(p.ready)
	start, since := 0, int64(0)
	if n > 1 {
		// The round-robin policies' selectors are called directly: an
		// interface call on every pick costs more than their choice.
		// A retry's or a hedge's pick (with Exclude) takes a random
		// slot of their rotation instead: see rotation. Each case tests
		// Exclude itself: one test of p.rot ahead of the switch cost
		// round-robin and weighted picks 2-5 % (BenchmarkPickDone,
		// session 35), and a generic helper over the three would call
		// them through a dictionary.
		switch s := p.sel.(type) {
		case *cursor:
			if po.exclude == nil {
				start, _ = s.first(0, false)
			} else {
				start = s.anySlot()
			}
		case *wrrSel[uint16]:
			if po.exclude == nil {
				start, _ = s.first(0, false)
			} else {
				start = s.anySlot()
			}
		case *wrrSel[uint32]:
			if po.exclude == nil {
				start, _ = s.first(0, false)
			} else {
				start = s.anySlot()
			}
		default:
			var h uint64
			if po.hasKey {
				h = hashString(po.hashKey)
			}
			start, since = p.sel.first(h, po.hasKey)
		}
	}
	if !p.breakers && since == 0 && po.exclude == nil {
		// No breaker to ask and no latency sample: admit's fast path,
		// inlined. The node's own Done function serves, and ends the
		// in-flight counts started here.
		nd := p.nodes[p.at(start)]
		if p.mode&statInFlight != 0 {
			nd.inflight.Add(1)
			if p.mode&statTotal != 0 {
				nd.b.inflight.Add(1)
			}
		}
		return nd.res.Load(), nil
	}
	skipped := -1
	for i := range n {
		j := start + i
		if j >= n {
			j -= n
		}
		k := p.at(j)
		if po.exclude != nil && po.excluded(p.nodes[k].addr) {
			if skipped < 0 {
				skipped = j
			}
		} else if res := p.admit(k, since); res != nil {
			return res, nil
		}
		if i == 0 && n > 1 {
			if res := p.redraw(&po); res != nil {
				return res, nil
			}
		}
	}
	// Every other node refused: an excluded one is better than nothing.
	if skipped >= 0 {
		for i := range n {
			j := skipped + i
			if j >= n {
				j -= n
			}
			k := p.at(j)
			if po.excluded(p.nodes[k].addr) {
				if res := p.admit(k, since); res != nil {
					return res, nil
				}
			}
		}
	}
	return &noResult, p.unavail
}

// maxRedraws bounds how many times redraw asks the selector again.
// rotationRedraws bounds the redraws of a pick with Exclude under a
// round-robin policy, each a random slot (see rotation): a draw costs a few
// nanoseconds, and the excluded nodes may hold most of the slots. With
// weights 18, 1 and 1 and the heavy node excluded, 4 draws all land on it
// 66 % of the time, and the scan that follows hands such a pick to the
// node after it in the State: the two light nodes shared those picks 80/20.
// After 32, 3 % go to the scan.
const (
	maxRedraws      = 4
	rotationRedraws = 32
)

// redraw asks the selector again, at most maxRedraws times, when its first
// choice was excluded or its breaker refused (a half-open node whose probe
// is out), and returns the Result of the first choice that is neither; nil
// when every one was, and pick scans on from its first choice. Scanning on
// at once would hand every such request to the refused node's successor in
// the State, whatever its latency, load or weight: a retry after a failure
// on node X would go to X's neighbour whenever the policy chose X, which
// with P2C over 3 nodes sends half of them to a slow node P2C otherwise
// avoids, and a half-open node's share would double its neighbour's for as
// long as its probe takes. A keyed Maglev pick chooses the same node every
// time: it takes the key's next candidate under the bound instead (see
// maglevSel.redraw), or the scan would send every retry of the node's keys
// to its successor in the State, whatever that node's load. Only picks
// whose first choice failed come here.
//
//go:noinline
func (p *picker) redraw(po *pickOptions) *Result {
	sel := p.sel
	if z, ok := sel.(*zoneSel); ok {
		sel = z.all // a keyed retry walks the key's nodes in every zone
	}
	if m, ok := sel.(*maglevSel); ok && po.hasKey {
		return m.redraw(p, po)
	}
	rotating := po.exclude != nil && p.rot != nil
	draws := maxRedraws
	if rotating {
		draws = rotationRedraws
	}
	for range draws {
		var start int
		var since int64
		if rotating {
			start = p.rot.anySlot()
		} else {
			start, since = p.sel.first(0, false)
		}
		k := p.at(start)
		if po.exclude != nil && po.excluded(p.nodes[k].addr) {
			continue
		}
		if res := p.admit(k, since); res != nil {
			return res
		}
	}
	return nil
}

// at returns the position in the State (in nodes and eps) of ready[j].
func (p *picker) at(j int) int {
	if p.dense {
		return j
	}
	return int(p.ready[j].idx)
}

// admit asks the breaker of nodes[k] and, when it lets the request
// through, starts the node's statistics and returns the request's Result;
// nil when the breaker refused. since is the selector's start time for a
// latency sample, 0 for none.
func (p *picker) admit(k int, since int64) *Result {
	nd := p.nodes[k]
	var brk *breaker.Breaker
	if p.breakers {
		brk = nd.breaker()
	}
	var tk breaker.Ticket
	if brk != nil {
		t, err := brk.Begin()
		if err != nil {
			return nil
		}
		tk = t
	}
	if p.mode&statInFlight != 0 {
		nd.inflight.Add(1)
		if p.mode&statTotal != 0 {
			nd.b.inflight.Add(1)
		}
	}
	keyed := false // a closed-state ticket: not a half-open probe
	if brk != nil {
		var key uint64
		if key, keyed = tk.Key(); keyed && since == 0 {
			return nd.resultFor(brk, tk, key)
		}
	} else if since == 0 {
		return nd.res.Load()
	}
	var c *call
	if brk != nil && !keyed {
		// A half-open probe gets a call of its own, never pooled: a
		// caller's second Done on a pooled call could otherwise end a
		// probe and open or close its breaker. Probes are a few per
		// open period, so the allocation costs nothing that shows.
		c = newCall(false)
	} else {
		c = callPool.Get().(*call)
	}
	c.n, c.brk, c.tk, c.start = nd, brk, tk, since
	// From here a Done of the call's previous use (a caller's bug: a
	// second Done) ends this request; see Result.
	c.used.Store(false)
	c.res = Result{Endpoint: nd.res.Load().Endpoint, Done: c.fn}
	return &c.res
}
