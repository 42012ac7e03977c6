// Package discovery defines how dialtone learns where a service runs.
//
// A Watcher publishes the complete set of endpoints of one service as a
// sequence of immutable State values. Every State carries the whole set, never
// a delta. A backend error never empties the set: the State then carries the
// error in Err and the last known good Endpoints. One error narrows it: an
// answer that lists only invalid instances is an error, but one that says
// for certain which nodes of the last known good set are gone (no longer
// listed, or critical); those leave the set, the others stay, and the set
// may end up empty (Publisher.SetErrorKeeping). An authoritative empty
// answer (the service has no instances) is published as an empty set.
//
// Watchers are built from targets:
//
//	consul://127.0.0.1:8500/orders?tag=v2&healthy=warning
//	etcd://10.0.0.1:2379,10.0.0.2:2379/services/orders
//	static:///10.0.0.1:9000,10.0.0.2:9000
//
// Watch resolves a target by its scheme. The schemes consul and etcd register
// themselves when their packages (discovery/consul, discovery/etcd) are
// imported; static is built in.
//
// Every address is checked by ValidateAddr before publication: a registry that
// hands out port 0, 0.0.0.0, a multicast or link-local address, or the same
// address twice has those entries dropped with a reason, and the rest kept.
// Addresses are published in their canonical spelling (CanonicalAddr), so two
// spellings of one address ("[10.0.0.1]:080" and "10.0.0.1:80") count as the
// same address twice.
//
// Publisher is the building block for Watcher implementations: the producer
// stores the latest state and signals; the consumer (Next) reads the latest.
// Nothing is ever sent on a channel under a lock, so a slow consumer cannot
// stall a watcher, and intermediate states are coalesced.
package discovery
