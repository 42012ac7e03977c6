package balancer

// Policy chooses among the healthy nodes. Policies are built by the
// constructors in this package: RoundRobin, Random, WeightedRoundRobin, P2C
// and Maglev. A Policy value may be shared by several Balancers.
type Policy interface {
	// Name returns the policy's name, as used in logs.
	Name() string
	// build makes a selector over one snapshot's ready entries, whose
	// nodes are nodes[e.idx]; called with the Balancer's mu held.
	build(ready []entry, nodes []*node, b *Balancer) selector
	// stats says which per-node statistics the policy reads.
	stats() statsMode
}

// statsMode selects the statistics Pick and Done keep for a policy.
type statsMode uint8

const (
	// statInFlight counts requests picked and not yet done, per node.
	statInFlight statsMode = 1 << iota
	// statTotal also counts them over the whole balancer (Maglev's cap).
	statTotal
	// statLatency samples request latency into the node's peak EWMA. The
	// selector decides which requests are sampled, because a clock read
	// is the most expensive part of a pick on many machines.
	statLatency
)
