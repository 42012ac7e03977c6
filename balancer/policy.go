package balancer

// Policy chooses among the healthy nodes. Policies are built by the
// constructors in this package: RoundRobin, Random, WeightedRoundRobin, P2C
// and Maglev. A Policy value may be shared by several Balancers.
type Policy interface {
	// Name returns the policy's name, as used in logs.
	Name() string
	// build makes a selector over one snapshot; called by the run goroutine.
	build(ready []entry, b *Balancer) selector
	// latency reports whether the policy needs latency and in-flight
	// statistics, which cost a clock read per request.
	latency() bool
}
