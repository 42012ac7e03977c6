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
//     on a gRPC stream of its own, also when Watchers share a client,
//     applies each response's events and publishes the full set again;
//   - lists again, publishing the new set atomically, and watches again when
//     the watch ends: compaction past its revision, a cancelled watch,
//     ErrNoLeader, a closed channel, or a stall (nothing for the progress
//     interval, then nothing after a progress request for another one,
//     while the store has moved past R: etcd does not answer for a store
//     with nothing written since the list, which is no stall);
//   - on a failed list, keeps the last known good set, reports the error in
//     State.Err, and retries with jittered exponential backoff. A watch ended
//     by ErrNoLeader (its member is cut off from the leader) is reported in
//     State.Err at once, before the list, which the client sends to a member
//     that has a leader.
//
// Invalid entries (garbage JSON, bad addresses, oversized values) are dropped
// with a logged reason and counted (Watcher.Dropped); the others are kept. A
// prefix whose every entry is invalid is reported as an error, keeping the
// last good value of each key still there: the endpoints of keys deleted or
// turned critical since leave the set, which may end up empty with the
// error. A prefix with no keys is published as an empty set.
//
// ResolveNow forces a fresh list at once, coalesced and at most one per
// resolve interval (default 500 ms). During the backoff after a failure (a
// failed list, or watches that end before delivering anything) it does not
// cut the backoff short: it waits for the backoff to end, and the list made
// then serves it, so clients that call it on every failed dial cannot hammer
// a failing cluster.
//
// # Registrar
//
// A Registrar writes one key attached to a lease and keeps the lease alive.
// When the lease is lost it grants a new one and writes the key again. It
// also watches its own key for deletions: when the key is deleted while the
// lease lives (etcdctl del, a cleanup tool), it writes the key again with
// the same lease at once, logging it, and spaces further rewrites with the
// backoff. Close revokes the lease, which deletes the key.
//
// # Targets
//
// etcd://host:port,host:port/PREFIX. Without hosts, the comma-separated
// ETCD_ENDPOINTS environment variable is used, then 127.0.0.1:2379. The
// prefix is the target's path without its leading "/": etcd:///services/orders
// watches "services/orders/"; write etcd:////services/orders for keys that
// start with "/". Targets take no query options, and never credentials.
// Importing this package registers the scheme.
//
// # Security
//
// The target builder reads TLS settings and credentials from etcdctl's own
// environment variables, so an operator's settings for etcdctl apply:
//
//	ETCDCTL_CACERT    CA certificate file that verifies the servers (default: the system roots)
//	ETCDCTL_CERT      client certificate file, with ETCDCTL_KEY (optional)
//	ETCDCTL_KEY       client key file, with ETCDCTL_CERT
//	ETCDCTL_USER      "user:password", or "user" with ETCDCTL_PASSWORD
//	ETCDCTL_PASSWORD  the password when ETCDCTL_USER is a bare user name
//	ETCDCTL_INSECURE_TRANSPORT=false  TLS with the system roots (etcdctl's switch)
//
// TLS is on when any of ETCDCTL_CACERT, ETCDCTL_CERT and ETCDCTL_KEY is set,
// when an endpoint in ETCD_ENDPOINTS is https://, or when
// ETCDCTL_INSECURE_TRANSPORT is false. Then every endpoint uses TLS, and an
// http:// endpoint is refused rather than reached in plaintext. The client
// certificate is read again for each new connection, so rotated files are
// picked up. ETCDCTL_INSECURE_SKIP_TLS_VERIFY=true is refused with an error:
// the server's certificate is always verified.
//
// Errors name the variable at fault (an unreadable CA file, a certificate
// without its key, a user without a password) and never contain the
// password. A server certificate that fails verification is reported as
// ErrTLSVerify, a configuration error; the connection is never retried in
// plaintext or unverified:
//
//   - without credentials, discovery.Watch returns at once and the error
//     arrives in State.Err when the first list times out (the request
//     timeout, 5 s), as for an unreachable etcd;
//   - with credentials, etcd's client logs in while it is made, so
//     discovery.Watch blocks until etcd answers (at most 5 s, or until its
//     ctx ends) and returns the error: a wrong password
//     (rpctypes.ErrAuthFailed), ErrTLSVerify at once when no server passes
//     verification, or a timeout when etcd is unreachable.
//
// A server that answers in plaintext while TLS is configured (a local etcd
// without TLS, reached with etcdctl's variables set for another) is
// reported so, with the setting that turned TLS on, instead of as a bare
// timeout.
//
// Without TLS, the password crosses the network in clear: use TLS with
// authentication.
//
// To configure the client in code instead (other TLS settings, a token, a
// logger, dial options), make a *clientv3.Client, starting from
// ConfigFromEnv if convenient, and pass it to New (and to NewRegistrar);
// the caller then owns and closes it. rpcclient.New takes the Watcher.
package etcd
