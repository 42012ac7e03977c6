package etcd

import (
	"context"
	"log/slog"
	"time"

	"github.com/dialtone-go/dialtone/internal/backoff"
)

// Defaults for the Watcher and the Registrar. Every option below says which
// one it replaces.
const (
	// DefaultResolveInterval is the minimum time between lists forced by
	// ResolveNow (WithResolveInterval).
	DefaultResolveInterval = 500 * time.Millisecond
	// DefaultProgressInterval is the silence after which a watch is probed,
	// and after another one dropped (WithProgressInterval).
	DefaultProgressInterval = 2 * time.Second
	// DefaultRequestTimeout bounds each list and each registration request
	// (WithRequestTimeout).
	DefaultRequestTimeout = 5 * time.Second
	// DefaultMaxEntries caps the keys under a prefix (WithMaxEntries).
	DefaultMaxEntries = 100000
	// DefaultBackoffBase and DefaultBackoffMax bound the jittered
	// exponential backoff after registry errors (WithBackoff,
	// WithRegistrarBackoff).
	DefaultBackoffBase = 100 * time.Millisecond
	DefaultBackoffMax  = 5 * time.Second
	// DefaultTTL is the Registrar's lease TTL (WithTTL).
	DefaultTTL = 10 * time.Second
	// DefaultRevokeTimeout bounds the revocation in Registrar.Close
	// (WithRevokeTimeout).
	DefaultRevokeTimeout = 2 * time.Second
)

// defaultBackoff is used on registry errors: 100 ms x2 up to 5 s, +-20 %.
var defaultBackoff = backoff.Policy{Base: DefaultBackoffBase, Factor: 2, Max: DefaultBackoffMax, Jitter: 0.2}

// Option configures a Watcher. Options are applied in order by New and by the
// "etcd" target builder; the zero configuration is the documented defaults.
type Option func(*options)

type options struct {
	logger           *slog.Logger
	backoff          backoff.Policy
	resolveInterval  time.Duration
	progressInterval time.Duration
	requestTimeout   time.Duration
	maxEntries       int

	// onList, if set, is called from the watcher goroutine after each
	// successful list with the revision read. Tests use it.
	onList func(rev int64)

	// explain, if set, is called from the watcher goroutine when a list
	// times out, and returns a better reason or nil. The target builder
	// sets it to verifyServers when TLS is on.
	explain func(ctx context.Context) error
}

func defaultOptions() options {
	return options{
		logger:           slog.Default(),
		backoff:          defaultBackoff,
		resolveInterval:  DefaultResolveInterval,
		progressInterval: DefaultProgressInterval,
		requestTimeout:   DefaultRequestTimeout,
		maxEntries:       DefaultMaxEntries,
	}
}

// WithLogger sets where the Watcher logs dropped entries (Warn) and registry
// errors (Warn). The default is slog.Default() at the time New is called; nil
// means the default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = orDefault(l) }
}

// WithBackoff sets the delay between attempts after a registry error: base
// before the first retry, doubling up to maxDelay, with +-20 % jitter. The
// default is 100 ms up to 5 s. A base of 0 or less keeps the default; a
// maxDelay below base means base.
func WithBackoff(base, maxDelay time.Duration) Option {
	return func(o *options) { retryPolicy(&o.backoff, base, maxDelay) }
}

// WithResolveInterval sets the minimum time between two reads forced by
// ResolveNow; calls in between are coalesced into one read at the end of the
// interval. The default is 500 ms; 0 or less keeps it.
func WithResolveInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.resolveInterval = d
		}
	}
}

// WithProgressInterval sets the stall watchdog: when a watch has delivered
// nothing (no events, no progress notification) for d, the Watcher asks etcd
// for a progress notification; when another d passes in silence, it drops the
// watch and lists again. The default is 2 s, so a silent stall is caught
// within 4 s; 0 or less keeps it. When the store was idle (nothing written
// since the list, when etcd answers no progress request) and then moves
// on, the Watcher asks once more before it calls the watch stalled: a stall
// at that turn takes one more d to find.
func WithProgressInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.progressInterval = d
		}
	}
}

// WithRequestTimeout bounds each list (Get) the Watcher sends. The default is
// 5 s; 0 or less keeps it.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.requestTimeout = d
		}
	}
}

// WithMaxEntries caps the number of keys under the prefix. A prefix holding
// more is treated as a registry error: the last known good set is kept and
// the error reported in State.Err. The default is 100000; 0 or less keeps it.
func WithMaxEntries(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxEntries = n
		}
	}
}

// RegistrarOption configures a Registrar; see NewRegistrar.
type RegistrarOption func(*registrarOptions)

type registrarOptions struct {
	ttl            time.Duration
	logger         *slog.Logger
	backoff        backoff.Policy
	requestTimeout time.Duration
	revokeTimeout  time.Duration
}

func defaultRegistrarOptions() registrarOptions {
	return registrarOptions{
		ttl:            DefaultTTL,
		logger:         slog.Default(),
		backoff:        defaultBackoff,
		requestTimeout: DefaultRequestTimeout,
		revokeTimeout:  DefaultRevokeTimeout,
	}
}

// WithTTL sets the lease TTL, rounded up to whole seconds (etcd's unit). The
// key disappears this long after the process stops keeping it alive. The
// default is 10 s; values below 1 s keep it.
func WithTTL(d time.Duration) RegistrarOption {
	return func(o *registrarOptions) {
		if d >= time.Second {
			o.ttl = d
		}
	}
}

// WithRegistrarLogger sets where the Registrar logs lost leases and errors.
// The default is slog.Default() at the time NewRegistrar is called; nil means
// the default.
func WithRegistrarLogger(l *slog.Logger) RegistrarOption {
	return func(o *registrarOptions) { o.logger = orDefault(l) }
}

// WithRegistrarBackoff sets the delay between attempts to register again
// after an error, as WithBackoff does for the Watcher. The default is 100 ms
// up to 5 s, +-20 %.
func WithRegistrarBackoff(base, maxDelay time.Duration) RegistrarOption {
	return func(o *registrarOptions) { retryPolicy(&o.backoff, base, maxDelay) }
}

// WithRevokeTimeout bounds the lease revocation in Registrar.Close, and in
// a NewRegistrar whose first write failed. The default is 2 s; 0 or less
// keeps it. If revocation fails, the key lives
// until the lease expires (at most one TTL).
func WithRevokeTimeout(d time.Duration) RegistrarOption {
	return func(o *registrarOptions) {
		if d > 0 {
			o.revokeTimeout = d
		}
	}
}

// orDefault is l, or slog.Default() for nil.
func orDefault(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

// retryPolicy sets *p to base doubling up to maxDelay (at least base), +-20
// %; a base of 0 or less leaves *p as it is.
func retryPolicy(p *backoff.Policy, base, maxDelay time.Duration) {
	if base > 0 {
		*p = backoff.Policy{Base: base, Factor: 2, Max: max(maxDelay, base), Jitter: 0.2}
	}
}
