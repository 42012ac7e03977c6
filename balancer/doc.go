// Package balancer turns a discovery.Watcher into picks of healthy nodes.
//
// # Model
//
// A Balancer runs two goroutines that share the per-node state under one
// mutex. One reads the Watcher (Next), merges each State into the nodes and
// publishes a picker built from it, with no hand-off to another goroutine;
// the other rebuilds the picker on every other change (a breaker changing
// state, an ejection, a quarantine, a slow-start step) and runs the outlier
// sweep. A picker is immutable and published through an atomic pointer. Pick
// only loads that pointer: it takes no lock, does no I/O and, for every
// policy, allocates nothing on the success path.
//
// Per-node state is keyed by address and survives discovery updates for as
// long as the address does: the circuit breaker, the in-flight count, the
// peak-EWMA latency, the outlier-ejection history and the slow-start clock.
// A node that leaves the set is dropped; one that comes back starts afresh.
//
// # Health
//
// A node is healthy when its breaker is not open, it is not ejected as an
// outlier, and it is not quarantined (Quarantine, called by the RPC client on
// a dial failure). Pick chooses among healthy nodes. Half-open nodes stay in
// the set but their breaker admits only probe requests; Pick moves on to the
// next node when a breaker refuses.
//
// When fewer than the panic threshold (default 50 %) of the nodes are healthy,
// the balancer is in panic mode: it picks among all nodes whose breaker is
// not open, ignoring ejection and quarantine, rather than overload the few
// healthy ones or fail. When every breaker is open, Pick fails at once with
// an *Error wrapping ErrUnavailable, and the breakers keep probing on their
// own schedule.
//
// Outlier ejection removes a node after consecutive failures (default 5),
// for 30 s x the number of times it was ejected (capped at
// 300 s, with jitter), but never more than the maximum ejected share of the
// set (default 10 %, rounded so that one node can always be ejected).
//
// Degraded endpoints (Consul "warning") get half their weight, and new nodes
// start slowly: their weight ramps over the slow-start window (default 30 s)
// as weight x max(10 %, t/window). Weights matter to WeightedRoundRobin, P2C
// and the consistent-hash policies; RoundRobin and Random ignore them.
//
// # Subsetting
//
// With WithSubset(k), picks go to at most k nodes: the k healthy ones that
// rank highest by a hash of their address and a salt each Balancer draws
// (rendezvous hashing). Many clients then spread evenly over many nodes,
// each client connecting to k of them, and an address that comes or goes
// moves at most one node of a subset. A member out of rotation gives its
// place to the next in rank until it is back (InSubset still reports it, so
// that its connections are kept); in panic mode the k are taken among all
// nodes whose breaker is not open.
//
// # Zones
//
// With WithLocalZone(zone), picks stay among the nodes whose Endpoint.Zone
// is zone while enough of them are healthy: the share that stays is
// overprovision (default 1.4) x the zone's nodes in rotation / its size, at
// most 1, and the rest are picked among all nodes in rotation. The zone's
// size remembers nodes discovery dropped (a failed health check) for 5
// minutes. With none of the zone's nodes in rotation, picks go anywhere; in
// panic mode the preference is off. A keyed Maglev pick stays or spills
// over by its key, so each key keeps its node.
//
// # Done
//
// Result.Done must be called once with the outcome of the request. It feeds
// the node's breaker and statistics. A second call is a bug that can count an
// outcome twice or, for a sampled P2C pick, end another request (see
// Result). An error is classified by
// breaker.Classify: transport errors and per-attempt timeouts count as
// failures; the caller's own cancellation is not counted; application errors
// (rpc.ServerError) are successes for the node. Done(Untimed) is a success
// whose time was not the node's (the request waited for a dial first): P2C
// takes no latency sample from it.
//
// A caller that sends plain HTTP requests (net/http) maps the response
// itself: net/http returns no error for any status, so a status that says
// the node is failing (a 502, 503 or 504, say) must be passed to Done as an
// error, and any other as nil. http.Client.Timeout and
// http.Transport.ResponseHeaderTimeout count as failures of the node, and the
// end of the request's context as the caller's own: not counted. So a
// per-attempt timeout made with context.WithTimeout is not counted either:
// a node that hangs keeps its breaker closed and is never ejected. Make it
// with context.WithTimeoutCause(ctx, d, breaker.ErrAttemptTimeout), whose
// cause net/http returns, as Example_netHTTP does.
package balancer
