package consul

import (
	"log/slog"
	"time"

	"github.com/dialtone-go/dialtone/internal/backoff"
	"github.com/hashicorp/consul/api"
)

// Option configures a Watcher or a Registrar. Options that make no sense for
// one of them are ignored by it.
type Option func(*options)

type options struct {
	address      string
	token        string
	apiConfig    func(*api.Config)
	tags         []string
	datacenter   string
	near         string
	filter       string
	allowWarning bool
	anonymous    bool // set by newClient: no token from the options or the environment

	waitTime        time.Duration
	queryRate       float64
	queryBurst      int
	errBackoff      backoff.Policy
	resolveInterval time.Duration
	requestTimeout  time.Duration
	maxBodyBytes    int64
	maxEntries      int
	logger          *slog.Logger
}

func defaultOptions() options {
	return options{
		waitTime:        60 * time.Second,
		queryRate:       20,
		queryBurst:      10,
		errBackoff:      backoff.Policy{Base: 200 * time.Millisecond, Factor: 2, Max: 10 * time.Second, Jitter: 0.2},
		resolveInterval: 500 * time.Millisecond,
		requestTimeout:  10 * time.Second,
		maxBodyBytes:    64 << 20,
		maxEntries:      100_000,
		logger:          slog.New(slog.DiscardHandler),
	}
}

// WithAddress sets the agent's address: host:port, a URL with http:// or
// https://, or unix:///path/to/agent.sock for an agent's HTTP API on a unix
// socket (redirects are refused and bodies capped there too). Default:
// CONSUL_HTTP_ADDR, then 127.0.0.1:8500. An address with credentials
// (user:password@host) is refused; the token goes in WithToken.
func WithAddress(addr string) Option { return func(o *options) { o.address = addr } }

// WithToken sets the ACL token. Default: CONSUL_HTTP_TOKEN or the file named by
// CONSUL_HTTP_TOKEN_FILE. The token is sent in the X-Consul-Token header and
// never appears in errors or logs.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithAPIConfig lets the caller adjust the api.Config built from the
// environment, for TLS (TLSConfig, Scheme), namespaces or partitions. It runs
// before the other options are applied. The HttpClient field is replaced: the
// watcher installs its own client that refuses redirects and caps bodies.
func WithAPIConfig(f func(*api.Config)) Option { return func(o *options) { o.apiConfig = f } }

// WithTags keeps only instances that carry every one of the tags.
func WithTags(tags ...string) Option { return func(o *options) { o.tags = append(o.tags, tags...) } }

// WithDatacenter queries another datacenter. Default: the agent's own.
func WithDatacenter(dc string) Option { return func(o *options) { o.datacenter = dc } }

// WithNear asks Consul to sort the instances by round-trip time from a node
// ("_agent" for the local one). Consul's order does not reach the balancer:
// a discovery.State lists its endpoints sorted by ID, and no policy reads
// an order, so near does not steer picks. To keep traffic close, select
// the close instances instead: WithDatacenter, WithFilter or WithTags.
// Default: no sort.
func WithNear(node string) Option { return func(o *options) { o.near = node } }

// WithFilter applies a Consul filter expression on the server, for example
// `Service.Meta.version == "2"`.
func WithFilter(expr string) Option { return func(o *options) { o.filter = expr } }

// WithWarning publishes instances whose checks are at "warning" as
// discovery.Degraded. Default: only passing instances are published. Critical
// instances are never published.
func WithWarning(allow bool) Option { return func(o *options) { o.allowWarning = allow } }

// WithWaitTime sets the blocking query's wait (Consul caps it at 10 minutes).
// Default 60 s. It also bounds how long a hung agent goes unnoticed.
func WithWaitTime(d time.Duration) Option { return func(o *options) { o.waitTime = d } }

// WithQueryRate limits re-queries to perSecond with the given burst, so a
// service that changes constantly cannot make the watcher spin.
// Default 20/s, burst 10.
func WithQueryRate(perSecond float64, burst int) Option {
	return func(o *options) { o.queryRate, o.queryBurst = perSecond, burst }
}

// WithErrorBackoff sets the backoff between attempts after registry errors:
// base doubles on each failure up to max, with +-20 % jitter.
// Default: 200 ms, capped at 10 s.
func WithErrorBackoff(base, max time.Duration) Option {
	return func(o *options) { o.errBackoff = backoff.Policy{Base: base, Factor: 2, Max: max, Jitter: 0.2} }
}

// WithResolveInterval sets the minimum time between two reads forced by
// ResolveNow. Default 500 ms.
func WithResolveInterval(d time.Duration) Option { return func(o *options) { o.resolveInterval = d } }

// WithRequestTimeout bounds each plain (non-blocking) read: the first one,
// the one after an error and the consistent read ResolveNow asks for. An
// agent that accepts the request and never answers then costs one timeout,
// reported in State.Err, instead of freezing the watcher. Blocking queries
// are bounded by the wait time plus this timeout. Default 10 s.
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.requestTimeout = d } }

// WithMaxResponse caps a registry answer: its body in bytes and its number of
// entries. An answer over either cap is rejected and the last known good set
// kept; so is one whose entries list, in their checks, tags and other
// arrays, more elements than would decode in the body cap (each counted at
// the size of what it decodes to). Defaults: 64 MiB, 100,000 entries. Both must be positive: New fails
// with an error naming the option otherwise, as it does for the other
// options' invalid values. The Registrar ignores it: the agent's answers to
// it are small, and capped at 1 MiB.
func WithMaxResponse(bodyBytes int64, entries int) Option {
	return func(o *options) { o.maxBodyBytes, o.maxEntries = bodyBytes, entries }
}

// WithLogger sets where rejected entries and registry errors are logged.
// Default: nothing is logged; nil keeps the default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}
