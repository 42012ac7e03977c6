// Package rpcclient calls a service by name over Go's net/rpc and keeps
// calls succeeding while nodes die, hang and move.
//
// A Client combines a discovery.Watcher, a balancer.Balancer (per-node
// circuit breakers, outlier ejection, panic mode) and per-endpoint
// connections:
//
//	c, err := rpcclient.Dial(ctx, "consul://127.0.0.1:8500/echo")
//	...
//	err = c.Call(ctx, "Echo.Echo", &args, &reply, rpcclient.Idempotent())
//
// # Connections
//
// Each endpoint has a small pool of TCP connections (default 1; net/rpc
// multiplexes) with the states Idle, Connecting, Ready, TransientFailure and
// Shutdown. Dials have a timeout (3 s) and connections TCP keepalive (30 s,
// with the default dialer).
// After a failed dial the endpoint waits out a reconnect backoff (gRPC's:
// 1 s, x1.6, +-20 %, up to 120 s) before it dials again; calls picked onto it
// meanwhile fail at once and go elsewhere. Failed dials quarantine the node in
// the balancer until the backoff lets a probe through; they do not count in
// its breaker, so a node that comes back is used again within one backoff,
// not after the breaker's open period. A connection counts as a failed dial
// too when it dies before it proved itself (no reply yet, and younger than
// 1 s): a peer that accepts and closes at once is not redialled call after
// call. The backoff ends once a connection has proved itself. A
// connection that stays silent for
// a heartbeat interval is pinged (servers opt in with RegisterHeartbeat, one
// line); a ping unanswered within the heartbeat timeout closes the
// connection and releases its pending calls, so a hung peer (SIGSTOP) is
// found even while no call has a deadline. Replies are capped
// (WithMaxMessageSize, 4 MiB) before gob allocates them; the cap cannot
// bound a map in a reply type, which gob sizes from the count the peer
// sends (golang/go#79539: 25 bytes can make it allocate GiBs), so reply
// types for untrusted peers should use slices (a slice's count costs at
// most gob's own 10 MiB per reply, whatever the cap). When discovery drops
// an endpoint it gets no new calls, its in-flight calls finish, and its
// connections close after a grace period (10 s) unless the address comes
// back first.
//
// Connections are plain TCP by default. WithDialer replaces the dial, for
// TLS (tls.Dialer's DialContext) or a proxy; its handshake is part of the
// dial, so a failed handshake is a failed dial like any other. WithHTTPPath
// talks to servers that serve net/rpc over HTTP (rpc.HandleHTTP): each
// connection starts with net/rpc's CONNECT handshake, as rpc.DialHTTP's
// does, within the dial.
//
// # Calls
//
// See Client.Call for the retry rules. WithHedging (or the Hedge call
// option) sends a backup of an idempotent call to another connected node
// after a delay; the first reply wins and the other request is abandoned. The wire format is net/rpc's gob
// format, so any rpc.Server is a valid backend; unlike rpc.Client, a call
// abandoned by its context leaves nothing behind in the connection.
//
// # Watching a client
//
// Client.Stats counts failed calls, calls whose outcome is unknown, retries,
// retries and backups the budget refused, attempts that sent nothing,
// waits for discovery, and hedges and their wins: the figures to tune
// WithRetryBudget and WithHedging by. Client.Endpoints gives each
// endpoint's connection state and why its last connection closed,
// Balancer().Status each node's breaker, ejection and latency, and
// balancer.WithBreakerEvents each breaker's changes as they happen.
// WithObserver hands an Observer every attempt (its node, its place in
// the call, its time and error) and every call, for latency histograms
// and traces per node.
package rpcclient
