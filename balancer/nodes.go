package balancer

import (
	"slices"
	"strings"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
)

// NodeStatus is a point-in-time view of one node, for dashboards and tests.
type NodeStatus struct {
	Endpoint discovery.Endpoint
	// Breaker is the breaker's state; Closed when breakers are off.
	Breaker breaker.State
	// Latency is the peak-EWMA latency estimate (P2C only: the other
	// policies sample no latency, and Latency is then 0).
	Latency time.Duration
	// InFlight is the number of requests picked and not yet Done (P2C and
	// Maglev only).
	InFlight int64
	// Ejected and Quarantined say whether the node is out of rotation.
	Ejected, Quarantined bool
	// Ready says whether the current picker may choose the node: false
	// for a node out of rotation, for one outside the subset (see
	// WithSubset, and Balancer.InSubset), and for one outside the local
	// zone while every pick stays in it (see WithLocalZone).
	Ready bool
	// Weight is the effective weight in the current picker, 0 if not ready.
	Weight float64
}

// Status returns every node discovery lists, sorted by endpoint ID, with
// its health. It may be called from any goroutine; it reads atomics and the
// current picker, so the view may be a few microseconds stale.
func (b *Balancer) Status() []NodeStatus {
	p := b.picker.Load()
	ready := make(map[*node]float64, len(p.ready))
	for _, e := range p.ready {
		ready[p.nodes[e.idx]] = float64(e.weight)
	}
	now := mono()
	measured := b.opts.policy.stats()&statLatency != 0
	set := b.set.Load()
	out := make([]NodeStatus, 0, len(set.nodes))
	seen := make(map[*node]bool, len(set.nodes))
	for i, n := range set.nodes {
		if seen[n] { // discovery listed the address twice
			continue
		}
		seen[n] = true
		st := NodeStatus{
			Endpoint:    set.eps[i],
			InFlight:    n.inflight.Load(),
			Quarantined: n.quarUntil.Load() > now,
			Ejected:     n.ejectedAt.Load() > now,
		}
		if measured {
			st.Latency = time.Duration(n.costNs())
		}
		st.Breaker = n.breakerState()
		st.Weight, st.Ready = ready[n]
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.Endpoint.ID, b.Endpoint.ID) })
	return out
}
