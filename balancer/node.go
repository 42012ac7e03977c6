package balancer

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dialtone-go/dialtone/breaker"
)

// epoch anchors the balancer's monotonic clock; mono() is nanoseconds since.
// It lies a second in the past so that mono() is never 0, which the callers
// use for "none".
var epoch = time.Now().Add(-time.Second)

// mono returns monotonic nanoseconds. time.Since on a time with a monotonic
// reading costs one runtime clock read and no wall-clock read.
func mono() int64 { return int64(time.Since(epoch)) }

// node is the state of one address. It survives discovery updates for as
// long as its address does. The fields under "run" are read and written
// only with the Balancer's mu held (by its watch and run goroutines); the
// others are read and written by Pick and Done on any goroutine, through
// atomics.
type node struct {
	addr string
	// brk is the node's breaker, made on the node's first pick so that a
	// large discovery update does not pay for breakers of nodes never used.
	brk atomic.Pointer[breaker.Breaker]

	// res is the node's ready-made Result: its endpoint as the last
	// State listed it, and done. apply sets it (to &first for a new
	// node) and replaces it with a new one when the endpoint changes; a
	// Result once published is never written again. Pick copies it whole
	// (see Balancer.pick).
	res atomic.Pointer[Result]

	// done is Result.Done when no per-call state is needed: it ends the
	// in-flight counts the policy keeps and records the outcome. newNode
	// sets it once; it points at the words in closure (see setDone).
	// done, closure, consec and mode sit together, so that a pick and its
	// Done read one cache line.
	done     func(error)
	closure  doneClosure
	consec   atomic.Int32 // consecutive failures
	mode     statsMode    // the statistics the policy keeps, for done
	out      bool         // run: breaker not closed, or ejected, at the last rebuild (kept here, in mode's padding)
	halfOpen bool         // run: its breaker was half-open at the last rebuild (in the padding too)

	inflight atomic.Int64

	cost      atomic.Uint64 // peak-EWMA latency in ns, as float64 bits
	stamp     atomic.Int64  // mono time of the last latency sample: the decay's reference
	probed    atomic.Int64  // mono time of the last sample or forced probe (P2C's probe schedule)
	calm      atomic.Uint64 // cost before the current run of failure samples; 0 outside one
	quarUntil atomic.Int64  // mono time the quarantine ends; 0 when none

	// shared is Result.Done for the requests the breaker admitted in its
	// closed state into one bucket of its window (see resultFor).
	shared atomic.Pointer[sharedDone]

	b *Balancer

	ejectedAt atomic.Int64 // mono time the ejection ends; written with mu held
	// gone is set by apply, before it drops the breakers of the addresses
	// that left, when discovery no longer lists the node.
	gone atomic.Bool
	// reprobe is set by the run goroutine when the node's breaker opens
	// or turns half-open, and when a half-open probe gives its slot back
	// (the caller gave up): the node needs a probe, which only a request
	// can be, to close its breaker, but its cost still holds the failures
	// that opened it, and P2C, which takes the cheaper node of a pair,
	// would send one only through its periodic probe, never with that
	// off. P2C chooses it the first time a sampled pick draws it, and
	// clears it (see p2cSel.first). (Here, in gone's padding: the lines
	// before are read by every pick.)
	reprobe atomic.Bool

	// run
	added        int64 // mono time the node joined; 0 for the initial set
	ejectedUntil int64 // mirrored in ejectedAt
	ejections    int
	calmSince    int64  // mono time the last ejection ended
	gen          uint64 // the Balancer's gen when a State last listed the node
	pos          int    // the node's index in that State

	// first is res for the endpoint the node was made for, allocated with
	// the node: a large update of new nodes makes one object per node.
	first Result

	// rank orders the nodes for WithSubset (see subset): a hash of the
	// address and the Balancer's salt, so it outlives updates; 0 without
	// subsetting. After first: a field before it moves it, which the
	// picks' copies of it feel.
	rank uint64
	// local says whether the node's endpoint is in the zone of
	// WithLocalZone, as the last rebuild saw it (for InSubset).
	local atomic.Bool

	// avg is the plain EWMA of the node's successful latency samples, in
	// ns as float64 bits: the floor under cost that a peak decays to (see
	// observe). Only sampled Dones read it, so it sits here, away from
	// the lines every pick reads.
	avg atomic.Uint64
}

// breaker returns the node's breaker, creating it on first use; nil when the
// balancer has no breakers. Safe from any goroutine.
func (n *node) breaker() *breaker.Breaker {
	if b := n.brk.Load(); b != nil {
		return b
	}
	set := n.b.breakers
	if set == nil {
		return nil
	}
	b := set.Get(n.addr) // the Set returns the same breaker to racing callers
	n.brk.Store(b)
	if n.gone.Load() {
		// A pick on a snapshot from before the node left: apply may
		// have dropped the breakers of the addresses that left before
		// Get made this one, which would then outlive the address and
		// be inherited, with this request's outcome, by the node of
		// the address when it comes back. Have the run goroutine drop
		// it. (Were gone still false here, apply's drop, which comes
		// after gone is set, sees the breaker Get made.)
		n.b.strayBreakers.Store(true)
		n.b.kick()
	}
	return b
}

// breakerState is the node's breaker state without creating the breaker:
// a node never picked is Closed.
func (n *node) breakerState() breaker.State {
	if b := n.brk.Load(); b != nil {
		return b.State()
	}
	return breaker.Closed
}

// setEjected is called with the Balancer's mu held.
func (n *node) setEjected(until int64) {
	n.ejectedUntil = until
	n.ejectedAt.Store(until)
}

// neverProbed is node.probed before the node's first sample or probe: so
// far in the past that any probe interval has passed.
const neverProbed = math.MinInt64 / 2

func newNode(b *Balancer, addr string, added int64, seed float64) *node {
	n := &node{addr: addr, b: b, added: added}
	n.cost.Store(math.Float64bits(seed))
	n.avg.Store(math.Float64bits(seed))
	now := mono()
	n.stamp.Store(now)
	// Never sampled: the first sampled P2C pick that draws the node
	// probes it (see p2cSel.first). Its seed is a guess, and once the
	// others have samples a guess above them would keep it unpicked
	// until the probe interval ends: on loopback, where calls take
	// microseconds against the 1 ms seed, a light client never sent the
	// third of three nodes a call in its first 2 s.
	n.probed.Store(neverProbed)
	n.mode = b.opts.policy.stats()
	if b.opts.subset > 0 {
		n.rank = mix64(hashString(addr) ^ b.salt)
	}
	n.setDone()
	return n
}

// setDone sets n.done. A Go func value is a pointer to a closure object:
// the function's code address, then the variables it captured. The
// closure finishFunc returns captures only n, so its object is two words,
// {code, n}; setDone writes those two words into n.closure and points
// n.done at them, instead of letting finishFunc allocate them apart from
// the node. A pick then reads n.done, and its Done reads n.closure,
// n.mode and n.consec, from one cache line: with a thousand nodes that is
// one dependent cache miss fewer per request, 10-19 % of a weighted
// round-robin pick (BenchmarkWeighted in benchmarks/, n=1000). The node
// keeps the words alive and they never move (the heap does not move
// objects), and closure.n is a typed pointer, so the collector sees it.
//
// doneInNode checked this layout once, on the closure finishFunc really
// makes; where it differs (another compiler), n.done is that closure.
func (n *node) setDone() {
	if !doneInNode {
		n.done = finishFunc(n)
		return
	}
	n.closure = doneClosure{code: finishCode, n: n}
	p := unsafe.Pointer(&n.closure)
	n.done = *(*func(error))(unsafe.Pointer(&p))
}

// doneClosure has the layout of the closure object finishFunc makes.
type doneClosure struct {
	code uintptr // finishCode
	n    *node
}

// finishCode is the code address of finishFunc's closures; doneInNode
// reports whether their objects are laid out as doneClosure, checked on
// one made for a probe node.
var finishCode, doneInNode = func() (uintptr, bool) {
	probe := new(node)
	f := finishFunc(probe)
	words := (*[2]uintptr)(*(*unsafe.Pointer)(unsafe.Pointer(&f)))
	return words[0], words[1] == uintptr(unsafe.Pointer(probe))
}()

// finishFunc returns the Done function of n for requests with no per-call
// state: it ends the in-flight counts of n.mode and records the outcome.
// It is kept out of line so that every node's closure has the same code.
//
//go:noinline
func finishFunc(n *node) func(error) {
	return func(err error) {
		n.leave()
		if err == nil { // the common case: no call to Classify
			n.record(breaker.Success)
			return
		}
		if err == Untimed {
			n.record(breaker.Success)
			return
		}
		n.record(breaker.Classify(err))
	}
}

// sharedDone is the Result of every request whose breaker ticket has key:
// those tickets are equal values, so one closure serves them all. base is
// the node's res it was made from; a new endpoint makes a new one.
type sharedDone struct {
	key  uint64
	base *Result
	res  Result
}

// resultFor returns the Result for a request the node's breaker brk
// admitted with the closed-state ticket tk (whose Key is key) and whose
// latency is not sampled. It is built once per node and bucket period, not
// once per request, so such picks neither allocate nor touch the call pool.
// Racing pickers may each build one; every one is correct. The node's
// breaker never changes once made (see breaker), so the key and the
// endpoint say whether the stored Result fits.
func (n *node) resultFor(brk *breaker.Breaker, tk breaker.Ticket, key uint64) *Result {
	base := n.res.Load()
	if s := n.shared.Load(); s != nil && s.key == key && s.base == base {
		return &s.res
	}
	s := &sharedDone{key: key, base: base, res: Result{Endpoint: base.Endpoint}}
	s.res.Done = func(err error) {
		if err == Untimed {
			err = nil
		}
		brk.End(tk, err)
		n.leave()
		n.record(breaker.Classify(err))
	}
	n.shared.Store(s)
	return &s.res
}

// leave ends the in-flight counts n's policy keeps (n.mode) for one
// request; every Done function calls it once. (admit starts them from
// the picker's copy of the mode, which the pick has at hand.)
func (n *node) leave() {
	if n.mode&statInFlight != 0 {
		n.inflight.Add(-1)
		if n.mode&statTotal != 0 {
			n.b.inflight.Add(-1)
		}
	}
}

// record counts consecutive failures and tells the run goroutine when the
// node crossed the ejection threshold. A success only reads the counter
// unless it must reset it, so that concurrent successes on different cores
// do not write the node's cache line.
func (n *node) record(o breaker.Outcome) {
	switch o {
	case breaker.Success:
		if n.consec.Load() != 0 {
			n.consec.Store(0)
		}
	case breaker.Failure:
		if int(n.consec.Add(1)) == n.b.opts.outlier.ConsecutiveFailures {
			n.b.kick()
		}
	}
}

// observe folds one latency sample into the node's estimate, which is a
// peak over an average. avg is an EWMA of the successful samples (time
// constant tau), each weighted by the time since the sample before. The
// cost is max(sample, avg, the previous cost decayed with tau /
// peakForgetting): a slower sample raises it at once, and after it the
// cost falls back toward avg ten times faster than avg moves, however few
// samples come. A node slow once (a pause) is then back in P2C's choice
// within seconds, where a single 10 s peak EWMA (Finagle's, Linkerd's)
// takes half a minute or more to forget a 300 ms spike over a 5 ms
// service; a node that stays slow raises the cost with every sample.
//
// That takes a node sampled often before the spike, since a sample after
// a gap weighs in avg by the gap: sampled once a second, a 5 ms node takes
// a tenth of a 300 ms spike into avg (33 ms) and is back under 6 ms 34 s
// later (samples 15 ms apart: 4 s; 2 s apart: 40 s, as a single peak
// EWMA). The same weighting keeps a node slow on some of its replies at
// their mean in avg, and what forgetting costs shows there, at light
// traffic: in a simulation, a node slow on 10 % of its replies (300 ms
// against 5 ms) beside a steady 20 ms node got 0.118 / 0.054 / 0.041 of 10
// / 20 / 50 requests a second, against 0.060 / 0.030 / 0.014 under a
// single peak EWMA; sampled every 10 ms, its cost stayed above the steady
// node's under both throughout. (Letting a slow sample weigh less than its
// gap in avg, so that a seldom-sampled node forgets a lone spike quickly
// too, doubled that share again.)
//
// A failure counts as at least the failure penalty and at least twice the
// estimate (up to failureCap), so a node that fails fast never looks
// cheap, whatever the service's latency: each failure of a run doubles its
// cost against its peers'. Failures do not enter avg. The estimate a run
// of failures found is kept aside, and the first successful sample after
// them blends into that instead of into the failures: a failure keeps a
// node out of P2C's choice until a sampled request (at worst the forced
// probe, 2 s later) succeeds.
func (n *node) observe(now, rtt int64, failed bool, tau, penalty float64) {
	x := float64(rtt)
	var calm uint64
	var floor float64
	if failed {
		x = max(x, penalty)
		n.calm.CompareAndSwap(0, n.cost.Load()) // the first failure of a run
	} else {
		calm = n.calm.Swap(0)
		w := decay(float64(now-n.stamp.Load()) / tau)
		for {
			bits := n.avg.Load()
			floor = math.Float64frombits(bits)*w + x*(1-w)
			if n.avg.CompareAndSwap(bits, math.Float64bits(floor)) {
				break
			}
		}
	}
	for {
		bits := n.cost.Load()
		// The time since the sample that wrote bits, or less: an
		// observe moves stamp before it writes the cost, so the stamp
		// read after a cost is at least that cost's. Read before the
		// loop, as it was, a racing observe's whole update could fall
		// in between, and its fresh peak was decayed by the time
		// before it: a 300 ms reply and a 5 ms one ending together on
		// a node sampled 2 s before left 41 ms, not 300 ms.
		dt := float64(now - n.stamp.Load())
		old := math.Float64frombits(bits)
		if calm != 0 {
			// The estimate from before the failures, unless the cost
			// is lower now: reseed gave a node back from an open
			// breaker or an ejection the median of the others, and a
			// fast sample must not raise it back to an estimate the
			// node had before it failed.
			old = min(old, math.Float64frombits(calm))
		}
		var nc float64
		if failed {
			// A failure at least doubles the estimate (up to
			// failureCap) and never lowers it: in a service slower
			// than the penalty, a node that fails fast holds
			// fewer requests than its healthy peers, and an
			// estimate kept level made it look cheaper by its
			// in-flight count alone.
			nc = max(x, min(2*old, failureCap), old)
		} else {
			nc = max(x, floor, old*decay(dt*peakForgetting/tau))
		}
		// Racing observes only ever move stamp forward. One whose
		// CAS then fails finds the winner's cost and a stamp at
		// least its own now, and decays nothing: in a race a peak is
		// kept, not forgotten early.
		for st := n.stamp.Load(); st < now && !n.stamp.CompareAndSwap(st, now); st = n.stamp.Load() {
		}
		if n.cost.CompareAndSwap(bits, math.Float64bits(nc)) {
			n.probed.Store(now)
			return
		}
	}
}

// peakForgetting is how many times faster the peak over a node's average
// latency decays than the average itself (see observe).
const peakForgetting = 10

// failureCap is as far as failures double a node's estimate (an hour, in
// ns): past it, a run of failures no longer raises the cost, which would
// otherwise reach +Inf after some thousand of them. A failure slower than
// that still counts as itself.
const failureCap = float64(time.Hour)

// decay returns exp(-x) for x >= 0, with a cheap series for the small x of
// busy nodes (samples microseconds apart against a 10 s time constant).
func decay(x float64) float64 {
	switch {
	case x <= 0:
		return 1
	case x < 0.01:
		return 1 - x + x*x/2
	default:
		return math.Exp(-x)
	}
}

// costNs returns the node's current latency estimate in nanoseconds.
func (n *node) costNs() float64 { return math.Float64frombits(n.cost.Load()) }

// typicalNs is the node's usual latency, for the seeds medianCost gives:
// its estimate without the run of failures it may be in (see observe) and
// without a peak, that is its average of successful samples (avg), which
// the estimate never falls below. Failures double the estimate, up to an
// hour, and a node in such a run that is not yet out of rotation must not
// give its doubled cost to the nodes medianCost seeds (with two nodes, the
// median is the higher); nor may a node that was slow once give them its
// peak, which it forgets within seconds, as their average, which a node
// forgets with the whole time constant.
func (n *node) typicalNs() float64 {
	c := min(n.costNs(), math.Float64frombits(n.avg.Load()))
	if calm := n.calm.Load(); calm != 0 {
		c = min(c, math.Float64frombits(calm))
	}
	return c
}

// call carries the per-request state that Done needs when the node's
// pre-bound functions cannot do: the breaker's ticket and, for a
// latency sample, the start time. Calls are pooled so that Pick and Done
// allocate nothing, except a half-open probe's, which is its own (see
// admit). A pooled call goes back to the pool at the first Done of each use
// and serves the next pick that takes it with the same fn, so the caller of
// the use before still holds a Done that ends the new use: a second Done is
// harmless only until the call is taken again (see Result). used makes
// every Done after the first of a use do nothing, so a use puts the call
// back once.
type call struct {
	n      *node
	brk    *breaker.Breaker // nil without breakers
	tk     breaker.Ticket   // brk's admission of this request
	start  int64            // mono start time; 0 when not sampled
	used   atomic.Bool      // the current use's Done was called
	pooled bool             // from callPool, to go back there
	fn     func(error)
	res    Result // the pick's Result: the node's endpoint, and fn
}

var callPool sync.Pool

func init() {
	callPool.New = func() any { return newCall(true) } // in init: finish refers to callPool
}

func newCall(pooled bool) *call {
	c := &call{pooled: pooled}
	c.fn = c.finish
	return c
}

func (c *call) finish(err error) {
	// Only the first Done of a use gets past here. A Done of an earlier
	// use (a caller's second Done) after the call was taken again also
	// gets past, and ends the current use: the func is the same.
	if !c.used.CompareAndSwap(false, true) {
		return
	}
	n, brk, tk, start := c.n, c.brk, c.tk, c.start
	if err == Untimed {
		// A success whose time was not all the node's (see Untimed):
		// no sample, and the node is due for a probe that gives one,
		// since this pick may have been the probe (a new node's first).
		// Not neverProbed: that marks the nodes a fresh picker counts.
		err = nil
		if start != 0 {
			start = 0
			n.probed.Store(neverProbed + 1)
		}
	}
	probe := brk != nil && !c.pooled // only half-open probes get a call of their own (see admit)
	c.n, c.brk, c.tk = nil, nil, breaker.Ticket{}
	if c.pooled {
		callPool.Put(c)
	}

	o := breaker.Classify(err)
	// The latency sample first: End may close the breaker, and the
	// rebuild that follows on the run goroutine reseeds the node (reseed);
	// a sample folded in after it would overwrite the reseed.
	if start != 0 && o != breaker.Excluded {
		now := mono()
		n.observe(now, now-start, o == breaker.Failure, n.b.tau, n.b.penalty)
		n.b.samp.sampled(now, len(n.b.picker.Load().ready))
	}
	if brk != nil {
		brk.End(tk, err)
		if probe && o == breaker.Excluded {
			// A probe that says nothing of the node gave its slot
			// back: the node is due for the next one.
			n.reprobe.Store(true)
			n.b.kick()
		}
	}
	n.leave()
	n.record(o)
}
