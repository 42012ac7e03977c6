package balancer

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// sweep runs every outlier Interval: it ends expired ejections and lets the
// ejection multiplier of calm nodes decay.
func (b *Balancer) sweep() {
	c := b.opts.outlier
	now := mono()
	for _, n := range b.nodes {
		n.endEjection(now)
		if c.Disabled || n.ejectedUntil > now {
			continue
		}
		if n.ejections > 0 && now-n.calmSince >= int64(c.BaseEjection) {
			n.ejections--
			n.calmSince = now
		}
	}
}

// eject removes n from picks for BaseEjection x (ejections+1), jittered and
// then capped at MaxEjection, unless the cap on ejected nodes is reached.
// A node the cap keeps in has its run of failures forgotten, as Envoy
// does: it is ejected only by a new run, made once an ejection is possible
// again. Were the run kept, the node would be ejected the moment another
// node's ejection ends, for failures that may be long stale: its breaker,
// open on the same failures, gives it no request meanwhile, and the
// ejection would keep it out past its breaker's half-open time. A node
// still failing in rotation makes a new run within ConsecutiveFailures
// requests.
func (b *Balancer) eject(n *node, now int64, why string) {
	c := b.opts.outlier
	ejected := 0
	for _, o := range b.nodes {
		if o.ejectedUntil > now {
			ejected++
		}
	}
	if ejected >= c.maxEjected(len(b.nodes)) {
		n.consec.Store(0)
		return
	}
	n.ejections++
	// In float, capped before it is a Duration again: an ejection time
	// near math.MaxInt64 ("for good") wrapped negative in the product,
	// the jitter or now + d, and the node was not ejected at all.
	f := float64(n.ejections) * float64(c.BaseEjection) * (1 + c.Jitter*(2*b.rng.Float64()-1))
	d := time.Duration(min(f, float64(c.MaxEjection), float64(maxEjectionTime)))
	n.setEjected(now + int64(d))
	n.consec.Store(0)
	b.opts.logger.Warn("balancer: node ejected", "service", b.opts.service, "addr", n.addr,
		"reason", why, "for", d, "times", n.ejections)
}

// maxEjectionTime is the longest ejection: 73 years, so that mono() + it
// cannot overflow.
const maxEjectionTime = time.Duration(math.MaxInt64 / 4)

// endEjection ends n's ejection if it is over by now, with b.mu held. The
// failures counted meanwhile are forgotten: they are those of requests
// picked before the ejection (an ejected node gets none, panic mode aside),
// and must not eject the node again, for twice as long, the moment it is
// back. rebuild calls it before it looks at the count, and sweep every
// interval.
func (n *node) endEjection(now int64) {
	if n.ejectedUntil != 0 && n.ejectedUntil <= now {
		n.setEjected(0)
		n.calmSince = now
		n.consec.Store(0)
	}
}

// trimEjections ends the ejections past the cap of the current set, the
// soonest ending first, and reports whether it ended any; b.mu is held.
// rebuild calls it when it counts more ejected nodes than the cap allows,
// which only a set that shrank under ejected nodes makes (eject keeps to
// the cap): the cap is a share of the set, and the set would otherwise stay
// short of more of its nodes than the cap allows, for as long as
// MaxEjection.
func (b *Balancer) trimEjections(now int64) bool {
	limit, ejected := b.opts.outlier.maxEjected(len(b.nodes)), 0
	for _, n := range b.nodes {
		if n.ejectedUntil > now {
			ejected++
		}
	}
	if ejected <= limit {
		return false
	}
	ej := make([]*node, 0, ejected)
	for _, n := range b.nodes {
		if n.ejectedUntil > now {
			ej = append(ej, n)
		}
	}
	slices.SortFunc(ej, func(x, y *node) int { return cmp.Compare(x.ejectedUntil, y.ejectedUntil) })
	for _, n := range ej[:ejected-limit] {
		n.setEjected(0)
		n.calmSince = now
		n.consec.Store(0)
	}
	return true
}
