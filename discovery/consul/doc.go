// Package consul discovers endpoints through Consul's health API and registers
// services with a Consul agent.
//
// A Watcher runs one goroutine that keeps a blocking query parked on
// /v1/health/service/NAME. Every answer is the complete set of instances; it is
// validated (discovery.Sanitize) and published through a discovery.Publisher.
// The rules it follows, each one a place where other clients have bugs:
//
//   - WaitTime is always set (default 60 s) and every request carries a
//     context, so Close aborts a parked query at once.
//   - The index sent is never below 1. After any error, the next read is a
//     plain non-blocking read of the whole set. When the index goes
//     backwards (a snapshot restore, an agent restarted on a fresh data dir,
//     or a newly elected leader that has not caught up yet), that answer is
//     not published: the next read is a consistent read of the whole set,
//     which replaces it. (A snapshot restore does not wake a parked query,
//     Consul 1.22: the restored set comes when the wait ends, WithWaitTime,
//     or at the next ResolveNow.) "Backwards" is below the index of the last answer
//     published, which errors do not reset, so the plain read after an
//     error is checked too. A missing or zero index is clamped and
//     re-queried at most once a second.
//   - An answer without a known leader (X-Consul-KnownLeader: false: a
//     server cut off from its quorum still answers blocking queries from its
//     own copy) is not published: ErrNoLeader is reported in State.Err and
//     the last known good set kept until a leader answers.
//   - Re-queries are rate-limited (default 20/s, burst 10), so a churning
//     service cannot make the watcher spin.
//   - Errors back off exponentially with jitter (200 ms x2, capped at 10 s,
//     +-20 %) and never empty the set: the last known good set stays
//     published with State.Err set. One error narrows it: an answer whose
//     every instance is rejected (a bad deploy registered 0.0.0.0) keeps
//     the instances of the last known good set it still lists, and drops
//     those it no longer lists (deregistered or critical), possibly all.
//   - HTTP redirects are refused, so the ACL token is never forwarded, and
//     response bodies are capped (default 64 MiB) as is the entry count
//     (default 100,000), which is counted as the body arrives, before any
//     entry is decoded.
//   - An empty answer with X-Consul-Results-Filtered-By-ACLs is an error, not
//     an authoritative empty set. Consul sends that header only to requests
//     that carry a token: without one, while ACLs default to deny, an answer
//     the ACLs emptied looks like an empty service, and the watcher logs a
//     warning (once) saying so. Give it a token in such clusters. The
//     agent's streaming view, which serves blocking queries on agents that
//     enable it, never sends that header: an empty answer from it, while
//     the published set is not empty, is not published but read again
//     with a plain (non-streaming) read, which says whether ACLs emptied it.
//   - ResolveNow cancels the parked query and does one consistent read at
//     once (coalesced, at most one per 500 ms by default), publishes it, and
//     parks again from the new index. During the backoff after an error it
//     does not cut the backoff short: its read is made when the backoff
//     ends, so clients that call it on every failed dial cannot hammer a
//     failing agent.
//
// An endpoint's ID is the Consul service ID, prefixed with the node name
// ("node/ID") when it equals the service's name (the ID Consul gives every
// instance registered without one) or when several instances in one answer
// share it: service IDs are unique per agent only.
//
// The ACL token comes from CONSUL_HTTP_TOKEN (or CONSUL_HTTP_TOKEN_FILE) or
// WithToken, never from the target. TLS is configured through api.Config:
// the standard CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT and
// CONSUL_CLIENT_KEY variables, or WithAPIConfig. A TLS verification failure is
// an error like any other; there is no plaintext fallback. Requests go over
// HTTP/1.1 (unless WithAPIConfig sets a transport of its own), so that an
// error the agent's TLS sends back, such as a client certificate it
// requires, is the error the watcher reports.
// CONSUL_HTTP_SSL_VERIFY=false, which Consul's client would obey silently by
// skipping verification (as it would for any value that is not a boolean),
// is refused with an error by New and NewRegistrar, as the etcd package
// refuses ETCDCTL_INSECURE_SKIP_TLS_VERIFY: the environment cannot turn
// verification off. Only code can, through WithAPIConfig. CONSUL_HTTP_SSL set
// to a value that is not a boolean ("yes"), which Consul's client would read
// as plain HTTP with only a warning, is refused too. An agent address with
// credentials (user:password@host, in CONSUL_HTTP_ADDR or WithAddress) is
// refused without being quoted.
//
// Importing the package registers the "consul" scheme with discovery.Watch:
//
//	consul://[host:port]/NAME?tag=a&tag=b&dc=dc1&near=_agent&filter=EXPR&healthy=passing|warning
//
// The address defaults to CONSUL_HTTP_ADDR, then 127.0.0.1:8500. near is
// passed to Consul, but the order it gives does not reach the balancer
// (see WithNear).
//
// A Registrar registers one service instance with the local agent, keeps its
// TTL check passing, re-registers it when the agent forgets it (an agent
// restart), and deregisters it on Close.
package consul
