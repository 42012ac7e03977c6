package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"time"
	"unicode"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/backoff"
)

// validate rejects option values that would break the client in ways a
// caller would not notice at once: a dial timeout of 0 fails every dial, a
// negative message size removes the cap, a connect backoff of 0 redials a
// dead address in a loop without quarantining it, a retry budget ratio of
// 20 (meant as 20 %) is no budget at all. New and Dial return its error.
func (o *options) validate() error {
	bad := func(opt, why string, v any) error {
		return fmt.Errorf("rpcclient: %s(%v): %s", opt, v, why)
	}
	cb := o.connectBackoff
	switch {
	case o.dialTimeout <= 0:
		return bad("WithDialTimeout", "must be positive", o.dialTimeout)
	case cb.Base <= 0:
		return bad("WithConnectBackoff", "base must be positive", cb.Base)
	case !(cb.Factor >= 1) || math.IsInf(cb.Factor, 0):
		return bad("WithConnectBackoff", "factor must be finite and at least 1", cb.Factor)
	case cb.Max < cb.Base:
		return bad("WithConnectBackoff", "max must be at least base", cb.Max)
	case !(cb.Jitter >= 0 && cb.Jitter < 1):
		return bad("WithConnectBackoff", "jitter must be in [0, 1): 0.2 is +-20 %", cb.Jitter)
	case o.heartbeat < 0 || o.heartbeatTimeout < 0:
		return bad("WithHeartbeat", "durations must not be negative", [2]time.Duration{o.heartbeat, o.heartbeatTimeout})
	case o.heartbeat > 0 && o.heartbeatTimeout == 0:
		return errors.New("rpcclient: WithHeartbeat needs a positive timeout")
	case o.readTimeout < 0:
		return bad("WithReadTimeout", "must not be negative (0 turns it off)", o.readTimeout)
	case o.maxMessage <= 0:
		return bad("WithMaxMessageSize", "must be positive", o.maxMessage)
	case o.retryBackoff.Base < 0 || o.retryBackoff.Max < o.retryBackoff.Base:
		return bad("WithRetryBackoff", "base must not be negative and max must be at least base",
			[2]time.Duration{o.retryBackoff.Base, o.retryBackoff.Max})
	case o.attemptTimeout < 0:
		return bad("WithAttemptTimeout", "must not be negative (0 turns it off)", o.attemptTimeout)
	case !(o.budgetRatio >= 0 && o.budgetRatio <= 1):
		return bad("WithRetryBudget", "ratio must be in [0, 1]: 0.2 is 20 % of calls", o.budgetRatio)
	case !(o.budgetMinPerSec >= 0) || math.IsInf(o.budgetMinPerSec, 0):
		return bad("WithRetryBudget", "minPerSecond must be finite and not negative", o.budgetMinPerSec)
	case o.drainGrace < 0:
		return bad("WithDrainGrace", "must not be negative", o.drainGrace)
	case o.hedgeDelay < 0:
		return bad("WithHedging", "must not be negative (0 turns it off)", o.hedgeDelay)
	case o.maxConnAge < 0:
		return bad("WithMaxConnectionAge", "must not be negative (0 turns it off)", o.maxConnAge)
	case o.dial != nil && o.keepAliveSet:
		return errors.New("rpcclient: WithKeepAlive configures the default dialer, which WithDialer replaces: set the keepalive in that dialer")
	case o.httpPath != "" && !validHTTPPath(o.httpPath):
		return bad("WithHTTPPath", "must start with / and hold no spaces or control characters", fmt.Sprintf("%q", o.httpPath))
	}
	return nil
}

// Option configures a Client in Dial or New.
type Option func(*options)

type options struct {
	balancerOpts     []balancer.Option
	dialTimeout      time.Duration
	keepAlive        time.Duration
	keepAliveSet     bool
	dial             func(ctx context.Context, network, addr string) (net.Conn, error)
	httpPath         string
	connectBackoff   backoff.Policy
	poolSize         int
	heartbeat        time.Duration
	heartbeatTimeout time.Duration
	readTimeout      time.Duration
	maxMessage       int
	maxAttempts      int
	retryBackoff     backoff.Policy
	attemptTimeout   time.Duration
	budgetRatio      float64
	budgetMinPerSec  float64
	idempotent       map[string]bool
	drainGrace       time.Duration
	hedgeDelay       time.Duration
	maxConnAge       time.Duration
	logger           *slog.Logger
	observer         Observer
}

func defaultOptions() options {
	return options{
		dialTimeout:      3 * time.Second,
		keepAlive:        30 * time.Second,
		connectBackoff:   backoff.Policy{Base: time.Second, Factor: 1.6, Max: 120 * time.Second, Jitter: 0.2},
		poolSize:         1,
		heartbeat:        time.Second,
		heartbeatTimeout: time.Second,
		readTimeout:      30 * time.Second,
		maxMessage:       4 << 20,
		maxAttempts:      3,
		retryBackoff:     backoff.Policy{Base: 25 * time.Millisecond, Factor: 2, Max: 250 * time.Millisecond, Full: true},
		budgetRatio:      0.2,
		budgetMinPerSec:  10,
		idempotent:       map[string]bool{},
		drainGrace:       10 * time.Second,
		logger:           slog.New(slog.DiscardHandler),
	}
}

// WithBalancer passes options to the balancer (policy, breakers, outlier
// ejection, panic threshold). Default: P2C (peak-EWMA latency x in-flight)
// with per-node breakers.
func WithBalancer(opts ...balancer.Option) Option {
	return func(o *options) { o.balancerOpts = append(o.balancerOpts, opts...) }
}

// WithDialTimeout bounds each dial; it must be positive. Default 3 s. A
// dial belongs to the endpoint, not to the call that started it: a call
// whose context ends stops waiting for it, but the dial goes on to its own
// timeout, so that what it finds (the node is up, or it hangs) is known for
// the next calls.
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithKeepAlive sets the TCP keepalive period. Default 30 s. As for
// net.Dialer, 0 means Go's default (15 s) and a negative period turns
// keepalive off.
func WithKeepAlive(d time.Duration) Option {
	return func(o *options) { o.keepAlive, o.keepAliveSet = d, true }
}

// WithDialer sets how the client connects to an endpoint: dial is called
// with the network "tcp" and the endpoint's address, on a goroutine of the
// endpoint's own (never the caller's), under a context that carries the
// dial timeout (WithDialTimeout) and ends when the Client closes. Close
// waits for it, so dial must return once that context ends. Use it for TLS:
//
//	rpcclient.WithDialer((&tls.Dialer{Config: cfg}).DialContext)
//
// or for a proxy, or a net.Dialer of your own. Default: a net.Dialer with
// the TCP keepalive of WithKeepAlive, which this option replaces (giving
// both is an error). nil means the default.
//
// Whatever dial does is the dial: a failure in it, a TLS handshake's
// included, is a failed dial, which sent no request (a call that is not
// idempotent may be retried on another node), quarantines the address
// and asks discovery to refresh. So the handshake belongs in dial, as
// tls.Dialer does it: a *tls.Conn that dial returns before its handshake
// is made to complete it within the dial. In TLS 1.3 a server checks the
// client's certificate (mutual TLS) after the client's side of the
// handshake is done, and its refusal comes on the connection's first
// read: it counts as a failed dial all the same, for the requests written
// meanwhile too (the server read none of them).
//
// Only on a *net.TCPConn does the heartbeat ask the kernel how much of
// what was written the peer has acknowledged (see the package doc); on
// other connections it counts a ping that got out as taken.
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.dial = dial }
}

// WithHTTPPath is for servers that serve net/rpc over HTTP, as
// rpc.HandleHTTP sets up (or an *rpc.Server used as an http.Handler): each
// connection starts with net/rpc's CONNECT handshake to path, as
// rpc.DialHTTPPath does, within the dial (its timeout bounds it, and its
// failure is a failed dial). rpc.DefaultRPCPath, "/_goRPC_", is the path
// rpc.HandleHTTP and rpc.DialHTTP use. An answer other than net/rpc's
// "200 Connected to Go RPC" fails the dial with an error that quotes it.
// Default: no handshake; the servers speak net/rpc on the connection
// itself, as rpc.ServeConn and rpc.Accept do. With WithDialer for TLS, the
// handshake runs over TLS.
func WithHTTPPath(path string) Option { return func(o *options) { o.httpPath = path } }

// validHTTPPath reports whether path can go on a request line: it starts
// with / and holds no spaces or control characters.
func validHTTPPath(path string) bool {
	return strings.HasPrefix(path, "/") && !strings.ContainsFunc(path, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	})
}

// WithConnectBackoff sets the reconnect backoff after failed dials, and
// after connections lost before they proved themselves (see the package
// doc): base, multiplied by factor per failure up to max, with jitter (a
// share, 0.2 is +-20 %). Default gRPC's: 1 s, x1.6, 120 s, +-20 %. base must be positive,
// factor at least 1, max at least base and jitter in [0, 1).
func WithConnectBackoff(base time.Duration, factor float64, max time.Duration, jitter float64) Option {
	return func(o *options) {
		o.connectBackoff = backoff.Policy{Base: base, Factor: factor, Max: max, Jitter: jitter}
	}
}

// WithPoolSize sets how many connections each endpoint keeps. Default 1:
// net/rpc multiplexes calls over one connection. The first connection is
// dialled by the call that needs it; the others are dialled one at a time in
// the background while calls arrive, and calls never wait for them. A failed
// extra dial backs off like a reconnect but leaves the endpoint in rotation.
func WithPoolSize(n int) Option { return func(o *options) { o.poolSize = max(n, 1) } }

// WithHeartbeat sets how long a connection may stay silent before it is
// pinged, and how long the ping may take before the connection is declared
// dead and its pending calls released. Default 1 s and 1 s. A ping that
// times out while the connection still moves other bytes (a large request
// the peer keeps taking, a large reply coming in) does not close it: the
// peer is slow, not hung, and is pinged again; nor does one that waited
// behind a request this process is still encoding. Nor does one behind a
// backlog the peer took in whole (a sidecar that buffers a large request):
// a ping behind n bytes written since the peer last spoke gets n / 1 MiB
// seconds more, so a hung peer behind a 4 MiB request is found after about
// 4 s more than the timeout. The server must have
// RegisterHeartbeat; against a server without it, heartbeats stop after the
// first ping. 0 turns heartbeats off; the read timeout (WithReadTimeout)
// then guards every connection.
func WithHeartbeat(every, timeout time.Duration) Option {
	return func(o *options) { o.heartbeat, o.heartbeatTimeout = every, timeout }
}

// WithReadTimeout guards connections to servers without the heartbeat, and
// a connection retired after a caller's args could not be encoded (which
// takes no more writes, pings included): with calls pending and nothing
// read for d, the connection is closed and its calls released. It is
// checked every heartbeat interval, or every d/8 (at least 10 ms) with the
// heartbeat off, when it guards every connection. Default 30 s; 0 turns it
// off. Set it above the slowest expected call.
func WithReadTimeout(d time.Duration) Option { return func(o *options) { o.readTimeout = d } }

// WithMaxMessageSize caps a reply message; it must be positive. A larger
// one fails its call with ErrMessageTooLarge and closes the connection, and
// so do gob type definitions past the same size in all (past half of it,
// at times): gob keeps every one the peer sends for the connection's life.
// Replies are not counted as definitions for the new types they carry. Default 4 MiB.
func WithMaxMessageSize(n int) Option { return func(o *options) { o.maxMessage = n } }

// WithMaxAttempts bounds the attempts of one call whose request may have
// left (reached the server), the first included. Default 3; 1 turns off
// the retries of requests that may have left. An attempt that provably sent
// nothing (a failed dial, an endpoint in reconnect backoff) is not counted:
// the call goes on to another node whatever n is (see Client.Call), and
// Error.Attempts counts it. One whose args took longer to encode than its
// attempt timeout allowed sent nothing too, but is counted: another node
// would take as long.
func WithMaxAttempts(n int) Option { return func(o *options) { o.maxAttempts = max(n, 1) } }

// WithRetryBackoff sets the wait before a retry: full jitter over base x 2^n,
// capped at max. Default 25 ms and 250 ms (Envoy's). A retry of a request
// that never left (a failed dial) goes to another node without waiting.
func WithRetryBackoff(base, max time.Duration) Option {
	return func(o *options) {
		o.retryBackoff = backoff.Policy{Base: base, Factor: 2, Max: max, Full: true}
	}
}

// WithAttemptTimeout bounds each attempt; the call's context bounds them
// all. Default 0: only the context. An attempt that times out counts as a
// failure of its node and, for idempotent calls, is retried.
func WithAttemptTimeout(d time.Duration) Option { return func(o *options) { o.attemptTimeout = d } }

// WithRetryBudget limits retries to a share of calls plus a floor per second
// (Finagle's RetryBudget). ratio is the share, in [0, 1]: 0.2 lets retries
// add 20 % to the calls. Default 0.2 and 10/s. When the budget is empty a
// call that needs a retry fails with its last error and ErrRetryBudget.
// Hedged backups draw on the same budget.
func WithRetryBudget(ratio, minPerSecond float64) Option {
	return func(o *options) { o.budgetRatio, o.budgetMinPerSec = ratio, minPerSecond }
}

// WithIdempotentMethods declares methods ("Service.Method") safe to retry
// after their request may have reached the server, as if every call to them
// passed Idempotent().
func WithIdempotentMethods(methods ...string) Option {
	return func(o *options) {
		for _, m := range methods {
			o.idempotent[m] = true
		}
	}
}

// WithDrainGrace sets how long the connections of an endpoint that left
// discovery are kept, so that a flapping health check does not cost a dial
// per flap; in-flight calls finish either way. Default 10 s.
func WithDrainGrace(d time.Duration) Option { return func(o *options) { o.drainGrace = d } }

// WithHedging sends a backup request to another node when an idempotent
// call has no reply after delay; the first reply wins and the other request
// is abandoned. Each backup draws a token from the retry budget, and only
// goes to a node with a connection already up and free to write within a
// millisecond (a backup that would wait behind another request's long
// write, a large upload, is not sent, and its token goes back). The delay
// counts from the first request's write. When the first node's connection
// is busy writing another request for the whole delay (or the attempt's
// time, if shorter), the request goes to another connected node instead,
// without a token (only one request is out) and without a backup, and the
// call's later attempts avoid the busy nodes while others are free.
// Default 0: off. Calls that are not idempotent are never hedged, nor are
// calls made retryable only by WithIdempotencyKey (a key lets the server
// recognise a repeat, not two requests at once on two nodes). A backup is
// an attempt: with WithMaxAttempts(1) none is sent.
func WithHedging(delay time.Duration) Option { return func(o *options) { o.hedgeDelay = delay } }

// WithMaxConnectionAge replaces connections older than d, give or take
// 10 % (jitter, so that a client's connections do not all turn over at
// once). The first call on a connection past its age dials a replacement
// in the background and goes on using the old one; once the new connection
// is in the pool, the old one takes no new calls and closes when its calls
// in flight have their replies. A replacement dial that fails backs off
// like a pool's extra connection, and the old connection serves meanwhile.
// Default 0: connections live until they fail.
//
// Set it when an endpoint's address is a DNS name whose records change, or
// a virtual IP in front of other machines: new dials reach the new
// machines, and traffic follows within d.
func WithMaxConnectionAge(d time.Duration) Option { return func(o *options) { o.maxConnAge = d } }

// WithLogger sets where dial failures and drains are logged. Default:
// nowhere; nil keeps the default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil { // nil keeps the default
			o.logger = l
		}
	}
}

// CallOption adjusts one Call. It is a value, so passing options allocates
// nothing.
type CallOption struct {
	idempotent bool
	keyed      bool
	key        string
	timeout    time.Duration
	hedge      time.Duration
	timeoutSet bool   // AttemptTimeout's: timeout replaces the client's, 0 included
	hedgeSet   bool   // Hedge's: hedge replaces the client's, 0 included
	hashKey    string // HashKey's, when hashed
	hashed     bool
}

// Idempotent declares the call safe to retry after its request may have
// reached the server.
func Idempotent() CallOption { return CallOption{idempotent: true} }

// WithIdempotencyKey makes a call that is not idempotent retryable: args
// must implement KeyedArgs; the client sets one key before the first attempt
// and keeps it for every retry, so the server can recognise a repeat and not
// execute it twice. A non-empty key is always the one sent. With key "",
// a key args already carry is kept (calling again with the same args after
// ErrOutcomeUnknown is then a repeat the server recognises), and args
// without one get a random key. Args whose IdempotencyKey does not then
// return the key set (a SetIdempotencyKey with a value receiver) fail the
// call before anything is sent. A keyed call is retried but never hedged,
// and when it fails after a request may have run unanswered its error
// wraps ErrOutcomeUnknown. With Idempotent() (or WithIdempotentMethods) too,
// the call is simply idempotent, and the key is still sent.
func WithIdempotencyKey(key string) CallOption { return CallOption{keyed: true, key: key} }

// Hedge overrides WithHedging for one call (which must be idempotent); 0
// turns hedging off for it.
func Hedge(delay time.Duration) CallOption { return CallOption{hedge: max(delay, 0), hedgeSet: true} }

// HashKey routes the call by key with a consistent-hash policy
// (balancer.Maglev, through WithBalancer): calls with the same key go to the
// same node while the set is stable and that node is under its bounded load,
// and their retries and hedges to the next node for the key. Other policies
// ignore it.
func HashKey(key string) CallOption { return CallOption{hashKey: key, hashed: true} }

// AttemptTimeout overrides WithAttemptTimeout for one call; 0 turns the
// attempt timeout off for it (only ctx bounds its attempts).
func AttemptTimeout(d time.Duration) CallOption {
	return CallOption{timeout: max(d, 0), timeoutSet: true}
}

// KeyedArgs is implemented by argument types that carry an idempotency key
// to the server.
type KeyedArgs interface {
	SetIdempotencyKey(key string)
	IdempotencyKey() string
}
