// Package etcd discovers endpoints registered in etcd under a key prefix, and
// registers them.
//
// # Wire format
//
// Each endpoint is one key, PREFIX/ID, whose value is the JSON that etcd's
// own naming package (go.etcd.io/etcd/client/v3/naming/endpoints) writes:
//
//	{"Op":0,"Addr":"10.0.0.1:9000","Metadata":{"weight":2,"zone":"a","tags":["v2"],"meta":{"k":"v"}}}
//
// dialtone's fields live inside Metadata, as a JSON object with the keys
// weight, zone, tags, meta and health ("degraded" or "critical"). Any other
// Metadata (absent, null, a string) is ignored and the defaults apply, so
// endpoints written by endpoints.Manager are discovered, and etcd's gRPC
// resolver reads what Registrar writes. See ParseValue and FormatValue.
//
// # Watcher
//
// A Watcher (New, or the target etcd://[host:port,...]/PREFIX through
// discovery.Watch) runs one goroutine that:
//
//   - lists the prefix with a linearizable Get at revision R, sanitizes the
//     entries (discovery.Sanitize) and publishes the full set;
//   - watches the prefix from R+1 (WithRequireLeader, WithProgressNotify),
//     applies each response's events and publishes the full set again;
//   - lists again, publishing the new set atomically, and watches again when
//     the watch ends: compaction past its revision, a cancelled watch,
//     ErrNoLeader, a closed channel, or a stall (nothing for the progress
//     interval, then nothing after a progress request for another one);
//   - on a failed list, keeps the last known good set, reports the error in
//     State.Err, and retries with jittered exponential backoff. A watch ended
//     by ErrNoLeader (its member is cut off from the leader) is reported in
//     State.Err at once, before the list, which the client sends to a member
//     that has a leader.
//
// Invalid entries (garbage JSON, bad addresses, oversized values) are dropped
// with a logged reason and counted (Watcher.Dropped); the others are kept. A
// prefix whose every entry is invalid is reported as an error and the last
// known good set kept. A prefix with no keys is published as an empty set.
//
// ResolveNow forces a fresh list at once, coalesced and at most one per
// resolve interval (default 500 ms).
//
// # Registrar
//
// A Registrar writes one key attached to a lease and keeps the lease alive.
// When the lease is lost it grants a new one and writes the key again; Close
// revokes the lease.
//
// # Targets
//
// etcd://host:port,host:port/PREFIX. Without hosts, the comma-separated
// ETCD_ENDPOINTS environment variable is used, then 127.0.0.1:2379. The
// prefix is the target's path without its leading "/": etcd:///services/orders
// watches "services/orders/"; write etcd:////services/orders for keys that
// start with "/". Targets take no query options. Importing this package
// registers the scheme.
package etcd
