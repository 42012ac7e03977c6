package balancer

import (
	"log/slog"
	"math"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
)

// Option configures a Balancer in New.
type Option func(*options)

type options struct {
	service         string
	policy          Policy
	breakers        bool
	breakerConfig   breaker.Config
	onBreakerChange func(breaker.Event)
	panicThreshold  float64
	degradedFactor  float64
	slowStart       time.Duration
	slowStartMin    float64
	outlier         OutlierConfig
	logger          *slog.Logger
	subset          int
	zone            string        // WithLocalZone; "" for none
	overprovision   float64       // WithLocalZone
	zoneMemory      time.Duration // how long the zone's size remembers a node (see preferZone)
}

func defaultOptions() options {
	return options{
		policy:         P2C(),
		breakers:       true,
		panicThreshold: 0.5,
		degradedFactor: 0.5,
		slowStart:      30 * time.Second,
		slowStartMin:   0.1,
		outlier:        OutlierConfig{}.withDefaults(),
		logger:         slog.New(slog.DiscardHandler),
		overprovision:  defaultOverprovision,
		zoneMemory:     defaultZoneMemory,
	}
}

// WithService names the service in errors and logs. Default: none (the
// watcher's target is not known to the balancer), and errors say the
// service is unnamed; rpcclient.Dial sets it from the target.
func WithService(name string) Option { return func(o *options) { o.service = name } }

// WithPolicy selects how a node is chosen among the healthy ones.
// Default: P2C(), which moves traffic away from slow nodes and from nodes
// whose requests stop coming back (a dying or hung process) before any
// error is seen; RoundRobin() spreads requests exactly evenly and is the
// cheapest pick.
func WithPolicy(p Policy) Option { return func(o *options) { o.policy = p } }

// WithBreakers configures the per-node circuit breakers (see package
// breaker for the defaults of a zero Config).
func WithBreakers(cfg breaker.Config) Option {
	return func(o *options) { o.breakers, o.breakerConfig = true, cfg }
}

// WithoutBreakers turns the per-node circuit breakers off: nodes are then
// removed only by outlier ejection and quarantine.
func WithoutBreakers() Option { return func(o *options) { o.breakers = false } }

// WithBreakerEvents makes the balancer call fn for every breaker state
// change, from a goroutine of the breaker Set (never under a lock), one
// event at a time: a slow fn delays the events after it, but not the
// picker, which the balancer updates before it calls fn. fn must not call
// the Balancer's Close (nor that of an rpcclient.Client over it): Close
// waits for the goroutine that runs fn, and would wait for ever; to close
// on an event, close from another goroutine (go b.Close()).
func WithBreakerEvents(fn func(breaker.Event)) Option {
	return func(o *options) { o.onBreakerChange = fn }
}

// WithPanicThreshold sets the share of healthy nodes below which the
// balancer picks among all nodes (except those with an open breaker).
// Default 0.5; 0 turns panic mode off, 1 picks among all nodes always.
// A share outside [0, 1] means the nearer end; NaN means the default.
func WithPanicThreshold(share float64) Option {
	return func(o *options) { o.panicThreshold = unitShare(share, 0.5) }
}

// WithDegradedFactor sets the weight multiplier of Degraded endpoints.
// Default 0.5. A factor outside [0, 1] means the nearer end (a degraded
// node never outweighs a healthy one); NaN means the default. At 0 a
// degraded node is a last resort: it keeps the least weight there is.
func WithDegradedFactor(f float64) Option {
	return func(o *options) { o.degradedFactor = unitShare(f, 0.5) }
}

// WithSlowStart sets the window over which a new node's weight ramps up, and
// the share it starts from. Default 30 s from 10 %. The weight steps up
// every twentieth of the window (at least 10 ms, at most 1 s apart) and is
// full at its end. A zero or negative
// window turns slow start off; one over 73 years means 73 years. A share
// outside [0, 1] means the nearer end;
// NaN means the default. Nodes present in the first discovery answer start
// at full weight.
func WithSlowStart(window time.Duration, minShare float64) Option {
	// Capped, so that the window's end (a node's arrival + window) cannot
	// overflow: it wrapped negative, and the run goroutine rebuilt the
	// picker every millisecond for as long as the node ramped up.
	return func(o *options) {
		o.slowStart, o.slowStartMin = min(max(window, 0), maxSlowStart), unitShare(minShare, 0.1)
	}
}

// maxSlowStart is the longest slow-start window: 73 years.
const maxSlowStart = time.Duration(math.MaxInt64 / 4)

// unitShare returns x within [0, 1], or def when x is NaN.
func unitShare(x, def float64) float64 {
	switch {
	case x != x: // NaN
		return def
	case x < 0:
		return 0
	case x > 1:
		return 1
	}
	return x
}

// WithOutlierDetection configures outlier ejection. The zero OutlierConfig
// gets the defaults documented on its fields.
func WithOutlierDetection(c OutlierConfig) Option {
	return func(o *options) { o.outlier = c.withDefaults() }
}

// WithSubset makes the Balancer send requests to at most size nodes
// (subsetting): with many clients and many nodes, each client then keeps
// connections to size nodes instead of every one, and each node serves
// about clients x size / nodes clients. Default 0: every node.
//
// The subset is the size nodes in rotation that rank highest by a hash of
// their address and a salt drawn at random for each Balancer (rendezvous
// hashing), so clients spread evenly over the nodes, and an address that
// comes or goes changes at most one node of any client's subset. A node
// out of rotation (breaker open, ejected, quarantined, or gone from
// discovery) gives its place to the next in rank until it is back, so the
// client keeps size nodes to send to while enough of them are healthy; in
// panic mode the subset is taken among all nodes, as the picks are.
// Weights count within the subset, not in choosing it; with Maglev, a key
// goes to the same node for one client, and clients with different
// subsets send it to different nodes. Status reports a node outside the
// subset as not Ready, and InSubset says which are in it (rpcclient
// drains the connections of the others). size < 0 means 0.
func WithSubset(size int) Option { return func(o *options) { o.subset = max(size, 0) } }

// WithLocalZone makes the Balancer prefer the nodes whose Endpoint.Zone is
// zone (the caller's own zone, availability zone or data centre): requests
// stay in the zone while enough of its nodes are healthy, and spill over to
// all nodes as they fail. Default "": no preference.
//
// The share of picks that stay in the zone is overprovision x its nodes in
// rotation / its size, at most 1: with the default factor of 1.4 (Envoy's
// and gRPC's), every pick stays while 72 % of the zone's nodes are in
// rotation; with 3 of 5, 84 % do. The rest are picked among all nodes in
// rotation, in every zone, by the policy. The zone's size is the most nodes
// discovery listed in it over the last 5 minutes: a registry drops a node
// whose health check fails, and a zone that lost 4 of 5 nodes that way must
// not send all its traffic to the fifth. With no node of the zone in
// rotation, or none listed, picks go to all nodes; in panic mode
// (WithPanicThreshold), which counts every zone, the preference is off.
//
// A keyed pick (Maglev with HashKey) stays in the zone or spills over by
// its key, so a key keeps its node; in the zone, the keys of the other
// zones' table slots go to the zone's nodes by weight.
//
// Every client in the zone sends its requests to the zone's nodes: the
// zones' nodes must match their clients' load. Combined with WithSubset,
// the subset is taken in the zone (and, while some picks spill over, among
// the others too). Status reports the other zones' nodes as not Ready while
// every pick stays in the zone. Changes of mode are logged (see WithLogger).
func WithLocalZone(zone string) Option { return func(o *options) { o.zone = zone } }

// WithOverprovision sets the overprovisioning factor of WithLocalZone:
// how much more load than its share the local zone's nodes can take.
// Default 1.4. A factor below 1 or NaN means the default; +Inf keeps every
// pick in the zone while any of its nodes is in rotation.
func WithOverprovision(f float64) Option {
	return func(o *options) {
		if !(f >= 1) {
			f = defaultOverprovision
		}
		o.overprovision = f
	}
}

// WithLogger sets where ejections and panic mode are logged. Default:
// nowhere; nil keeps the default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil { // nil keeps the default
			o.logger = l
		}
	}
}

// OutlierConfig tunes outlier ejection. Zero fields take the defaults.
type OutlierConfig struct {
	// ConsecutiveFailures ejects a node after this many failures in a row.
	// Default 5.
	ConsecutiveFailures int
	// Interval is how often ejections are reviewed (ended, multiplier
	// decayed). Default 1 s; values below 10 ms mean 10 ms (each review
	// walks every node). A rate-based trip is the breaker's job: see
	// breaker.Config.FailureRatio.
	Interval time.Duration
	// BaseEjection is how long the first ejection lasts; the n-th lasts n
	// times as long. Default 30 s.
	BaseEjection time.Duration
	// MaxEjection caps an ejection, jitter included. Default 300 s; no
	// ejection lasts more than 73 years.
	MaxEjection time.Duration
	// Jitter spreads ejection times by +- this share. Zero (and NaN)
	// means 0.15; a negative value disables jitter, as in breaker.Config;
	// values above 1 mean 1.
	Jitter float64
	// MaxEjectedShare caps the share of nodes ejected at once. The cap is
	// rounded down but never below one node. Default 0.1 (for NaN too);
	// values above 1 mean 1. A node that
	// reaches ConsecutiveFailures while the cap is reached is not ejected,
	// then or later, for that run: it takes a new one.
	MaxEjectedShare float64
	// Disabled turns outlier ejection off.
	Disabled bool
}

// minOutlierInterval is the shortest OutlierConfig.Interval: a review
// every nanosecond kept the run goroutine busy on its sweeps.
const minOutlierInterval = 10 * time.Millisecond

func (c OutlierConfig) withDefaults() OutlierConfig {
	if c.ConsecutiveFailures <= 0 {
		c.ConsecutiveFailures = 5
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	c.Interval = max(c.Interval, minOutlierInterval)
	if c.BaseEjection <= 0 {
		c.BaseEjection = 30 * time.Second
	}
	if c.MaxEjection <= 0 {
		c.MaxEjection = 300 * time.Second
	}
	switch {
	case c.Jitter < 0:
		c.Jitter = 0
	case !(c.Jitter > 0): // NaN too: it made every ejection time NaN, and ejected nothing
		c.Jitter = 0.15
	}
	c.Jitter = min(c.Jitter, 1) // never a negative ejection time
	// NaN and +Inf made, through maxEjected's conversion to int, a cap
	// of one node.
	if !(c.MaxEjectedShare > 0) {
		c.MaxEjectedShare = 0.1
	}
	c.MaxEjectedShare = min(c.MaxEjectedShare, 1)
	return c
}

// maxEjected returns how many of n nodes may be ejected at once.
func (c OutlierConfig) maxEjected(n int) int {
	if n == 0 {
		return 0
	}
	// A small epsilon so that 0.3 x 10 is 3, not 2.9999.
	return max(1, int(c.MaxEjectedShare*float64(n)+1e-9))
}

// PickOption adjusts one Pick. It is a value, so passing options allocates
// nothing.
type PickOption struct {
	exclude []string
	hashKey string
	hasKey  bool
}

// Exclude asks Pick to avoid these addresses, typically the nodes a retry
// already tried. It is a preference: if every available node is excluded,
// Pick returns one of them rather than fail. Several Exclude options on one
// Pick add up: an address any of them lists is avoided. An address may be
// spelled any way (see discovery.CanonicalAddr): "[2001:DB8::1]:80"
// excludes the node discovery lists at "[2001:db8::1]:80". Exclude
// allocates only for an address not in its canonical spelling.
func Exclude(addrs ...string) PickOption {
	var more []string // canonical spellings of the addresses not in theirs
	for _, a := range addrs {
		if c, err := discovery.CanonicalAddr(a); err == nil && c != a {
			if more == nil {
				// The caller's own, then the canonical ones: a Watcher
				// that does not Sanitize lists nodes as it spells them.
				more = append(make([]string, 0, 2*len(addrs)), addrs...)
			}
			more = append(more, c)
		}
	}
	if more != nil {
		return PickOption{exclude: more}
	}
	return PickOption{exclude: addrs}
}

// HashKey routes the pick by key for the consistent-hash policy (Maglev):
// the same key goes to the same node while the set is stable and that node
// is under its bounded load. Other policies ignore it. rpcclient passes it
// for calls made with rpcclient.HashKey.
func HashKey(key string) PickOption { return PickOption{hashKey: key, hasKey: true} }

type pickOptions struct {
	// exclude is the Pick's options when one of them is an Exclude, nil
	// otherwise: excluded reads the lists of all of them where they are,
	// so that several Exclude options need no merged copy.
	exclude []PickOption
	hashKey string
	hasKey  bool
}

// excluded reports whether an Exclude option of the pick lists addr. It is
// kept out of line: inlined twice, its two loops would grow pick's frame,
// and every pick, excluding or not, would pay for it.
//
//go:noinline
func (po *pickOptions) excluded(addr string) bool {
	for i := range po.exclude {
		for _, a := range po.exclude[i].exclude {
			if a == addr {
				return true
			}
		}
	}
	return false
}
