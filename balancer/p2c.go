package balancer

import (
	"sync/atomic"
	"time"
)

// P2C returns a power-of-two-choices policy over peak-EWMA latency: Pick
// draws two distinct healthy nodes at random and takes the one with the lower
// cost, latency x (in-flight + 1) / weight. Latency is a peak over an
// EWMA: a slower sample raises it at once; after it, it falls back toward
// the node's average (an EWMA of its successful samples, 10 s time
// constant) with a tenth of that time constant, so a node slow once (a
// pause) is back in the choice within seconds when it was sampled often
// before (tens of times a second: a sample after a gap weighs in the
// average by the gap), while one that stays slow raises it again with
// every sample. A failed request counts as at least the failure penalty
// (default 250 ms) and at least twice the estimate (up to an hour), so a
// node that fails fast never looks cheap, even in a service slower than the
// penalty, where it would otherwise win on its empty queue; the first
// sampled success after failures returns the node to the estimate it had
// before them (or to its current one, when that is lower: a node back from
// an open breaker or an ejection starts again at the median of the
// others), so a node that hung for a moment is not shunned for a minute
// once it answers again. Statistics survive discovery updates; a new node
// starts at the median of the others, and so does a node whose breaker
// closes again or whose ejection ends, when its own estimate is higher (it
// still holds the failures that took it out).
// The latency of every request is sampled while traffic is light, and of
// fewer, down to one in 256, when requests come fast enough for each node
// to get a sample every 10 ms anyway (the in-flight count is exact). A
// node whose latency was not sampled for 2 s is chosen once, so that an
// expensive node that recovered is noticed, and so is a node never
// sampled, the first time a sampled pick draws it, so that its seed, a
// guess, does not keep it out.
//
// P2C spreads requests by load, not evenly. A client with one request in
// flight at a time sees every in-flight count at 0, so each pick goes to
// the node of the pair with the lower latency estimate: a light, serial
// client's requests gather on the nodes that answered fastest, and a node
// whose last sample was slower (its first request, on a cold connection,
// say) may get none until its next probe. Over three equal nodes, 3,000
// requests of 50 us each, one after another, went 1 / 1,494 / 1,505. Use
// RoundRobin for an even spread.
func P2C(opts ...P2COption) Policy {
	p := p2c{tau: 10 * time.Second, penalty: 250 * time.Millisecond, probeAfter: 2 * time.Second}
	for _, o := range opts {
		o(&p)
	}
	return p
}

// P2COption tunes P2C.
type P2COption func(*p2c)

// WithDecay sets the EWMA time constant; a peak decays toward the average
// ten times faster. Default 10 s; 0 or less means the default (a negative
// constant would never let a slow sample be forgotten, and 0 divides by
// zero).
func WithDecay(d time.Duration) P2COption {
	return func(p *p2c) {
		if d > 0 {
			p.tau = d
		}
	}
}

// WithFailurePenalty sets the latency a failure counts as at least (it also
// counts as at least twice the node's estimate). Default 250 ms.
func WithFailurePenalty(d time.Duration) P2COption { return func(p *p2c) { p.penalty = d } }

// WithProbeAfter sets how long a node may go without a latency sample (its
// requests are sampled one in 1 to 256) before a pick that draws it
// chooses it once regardless of its cost; a node never sampled is due at
// once. Default 2 s; 0 turns probing off, except for a node whose breaker
// opened: once half-open, it is chosen the first time a sampled pick draws
// it, for the probe that can close its breaker.
func WithProbeAfter(d time.Duration) P2COption { return func(p *p2c) { p.probeAfter = d } }

type p2c struct {
	tau, penalty, probeAfter time.Duration
}

func (p2c) Name() string     { return "p2c_peak_ewma" }
func (p2c) stats() statsMode { return statInFlight | statLatency }

func (p p2c) build(ready []entry, nodes []*node, b *Balancer) selector {
	s := &p2cSel{ready: ready, nodes: nodes, dense: len(ready) == len(nodes), probeAfter: int64(p.probeAfter), samp: &b.samp}
	unprobed := b.opened // due whatever probeAfter (see node.reprobe)
	if p.probeAfter > 0 {
		unprobed += b.fresh
	}
	if unprobed > 0 {
		s.fresh, s.b, s.unprobed = true, b, new(atomic.Int64)
		s.unprobed.Store(int64(unprobed))
	}
	return s
}

type p2cSel struct {
	ready      []entry
	nodes      []*node
	dense      bool // ready[i].idx is i (see picker.dense)
	probeAfter int64
	samp       *sampling // the Balancer's
	// fresh: some ready nodes were never sampled nor probed (new ones),
	// and every pick is sampled, and so may probe one, until none is
	// left; the pick that probes the last asks the Balancer (b) for a
	// snapshot without fresh. unprobed counts them down (nil unless
	// fresh; shared with the local zone's selector, see newZoneSel).
	fresh    bool
	b        *Balancer
	unprobed *atomic.Int64
}

// claim claims the probe of n, whose probed was st, at now; the claim of
// the last fresh node of the snapshot asks for a new one (see fresh).
func (s *p2cSel) claim(n *node, st, now int64) bool {
	if !n.probed.CompareAndSwap(st, now) {
		return false
	}
	if st == neverProbed && s.fresh && s.unprobed.Add(-1) == 0 {
		s.b.kick()
	}
	return true
}

// claimReprobe claims the breaker probe of n (see node.reprobe); fresh is
// set, since n was counted in the snapshot's opened or has been since.
func (s *p2cSel) claimReprobe(n *node) bool {
	if !n.reprobe.Load() || !n.reprobe.CompareAndSwap(true, false) {
		return false
	}
	if s.unprobed.Add(-1) == 0 {
		s.b.kick()
	}
	return true
}

func (s *p2cSel) first(uint64, bool) (int, int64) {
	n := uint64(len(s.ready))
	// Two indexes from one call's 63 random bits (i from the 32 from bit
	// 31 up, j from the 31 below), scaled into range by a multiply and
	// shift instead of a division (Lemire's fast range): i in [0, n), j
	// in [0, n-1), then j skips i. The sampling decision below takes the
	// low bits of ri, which j does not use: were they shared, sampled
	// picks would draw j from part of the range only.
	r := uint64(cheaprand64())
	ri, rj := r>>31, r&(1<<31-1)
	i := int(ri * n >> 32)
	j := int(rj * (n - 1) >> 31)
	j += 1 + (j-i)>>63 // j++ when j >= i, without a branch (j-i is negative otherwise)
	ea, eb := &s.ready[i], &s.ready[j]
	var a, b *node
	if s.dense { // the nodes' loads need not wait for the entries'
		a, b = s.nodes[i], s.nodes[j]
	} else {
		a, b = s.nodes[ea.idx], s.nodes[eb.idx]
	}
	// Sample the latency of one request in 1 to 256 (see sampling): a
	// clock read costs more than the rest of the pick on many machines.
	// The one clock read of a sampled pick serves both the probe check
	// and the sample's start time.
	var now int64
	if ri&s.samp.mask.Load() == 0 || s.fresh { // low bits; i comes from the high ones
		now = mono()
		if s.fresh {
			// A node whose breaker waits for a probe (see
			// node.reprobe); only fresh snapshots can hold one.
			if s.claimReprobe(a) {
				return i, now
			}
			if s.claimReprobe(b) {
				return j, now
			}
		}
		if s.probeAfter > 0 {
			// Probe a node nobody chose for a while; claim the probe so
			// that concurrent picks do not all pile onto it.
			// The claim moves probed, not stamp: the probe's sample must
			// decay the estimate by the time since the last sample.
			if st := a.probed.Load(); now-st > s.probeAfter && s.claim(a, st, now) {
				return i, now
			}
			if st := b.probed.Load(); now-st > s.probeAfter && s.claim(b, st, now) {
				return j, now
			}
		}
	}
	// A caller that calls Done twice drives a count below zero; it must
	// not make its node look free.
	la := a.costNs() * float64(max(a.inflight.Load(), 0)+1)
	lb := b.costNs() * float64(max(b.inflight.Load(), 0)+1)
	// The cost is load / weight; compare lb/wb < la/wa without dividing
	// (weights are at least minWeight, so never 0).
	// A conditional move, not a branch: which of two random nodes costs
	// less is a coin toss the branch predictor loses half the time.
	k := i
	if lb*float64(ea.weight) < la*float64(eb.weight) {
		k = j
	}
	return k, now
}
