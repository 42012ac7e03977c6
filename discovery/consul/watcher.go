package consul

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// Watcher follows the instances of one Consul service. It implements
// discovery.Watcher. Create it with New or through discovery.Watch with a
// consul:// target.
type Watcher struct {
	service string
	opts    options
	client  *api.Client
	http    *http.Client
	pub     discovery.Publisher
	limiter *rate.Limiter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	wake chan struct{} // a ResolveNow is pending; buffered 1

	mu             sync.Mutex
	resolvePending bool
	nextForced     time.Time          // earliest time of the next forced read
	cancelQuery    context.CancelFunc // cancels the parked blocking query
	resolveTimer   *time.Timer
	closed         bool

	warnedAnon atomic.Bool // the anonymous-token warning was logged

	// What the last answer rejected, for the run goroutine only (apply):
	// the reason logged for each rejected instance ID, and the number of
	// malformed entries. An instance is logged when it is rejected anew or
	// for another reason, not again on every answer while it stays listed.
	rejected  map[string]string
	malformed int

	stats struct {
		requests, errors, forced, rejected, resets atomic.Uint64
	}
}

// Stats counts what a Watcher did, for tests and metrics.
type Stats struct {
	// Requests is the number of HTTP requests sent to the agent.
	Requests uint64
	// Errors is the number of failed requests and rejected answers.
	Errors uint64
	// ForcedReads is the number of consistent reads ResolveNow caused.
	ForcedReads uint64
	// Rejected is the number of instances dropped by validation.
	Rejected uint64
	// IndexResets is the number of times the index went backwards.
	IndexResets uint64
}

// errInterrupted marks a blocking query cancelled by ResolveNow.
var errInterrupted = errors.New("consul: query interrupted by ResolveNow")

// ErrNoLeader is reported in State.Err when the agent answers without a
// known leader (X-Consul-KnownLeader: false). A Consul server that has lost
// its leader (no quorum) keeps answering blocking queries from its own,
// possibly stale, copy of the catalog: the answer is not published, and the
// last known good set is kept until the cluster has a leader again. An
// answer served from the agent's streaming view (X-Consul-Query-Backend:
// streaming) always says false, so for it the watcher asks the agent for
// the leader (GET /v1/status/leader) instead.
var ErrNoLeader = errors.New("consul: no cluster leader")

// New starts a Watcher for the named service. It does not wait for the
// registry: the first answer, or the first error, arrives through Next. The
// caller must Close the Watcher.
func New(service string, opts ...Option) (*Watcher, error) {
	if err := validServiceName(service); err != nil {
		return nil, err
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.waitTime <= 0 {
		return nil, errors.New("consul: WithWaitTime must be positive")
	}
	if o.queryRate <= 0 || o.queryBurst < 1 {
		return nil, errors.New("consul: WithQueryRate needs a positive rate and a burst of at least 1")
	}
	if o.errBackoff.Base <= 0 || o.errBackoff.Max < o.errBackoff.Base {
		return nil, fmt.Errorf("consul: WithErrorBackoff(%v, %v) needs a positive base and a max of at least the base", o.errBackoff.Base, o.errBackoff.Max)
	}
	if o.resolveInterval <= 0 {
		return nil, fmt.Errorf("consul: WithResolveInterval(%v) must be positive: it rate-limits ResolveNow", o.resolveInterval)
	}
	if o.requestTimeout <= 0 {
		return nil, fmt.Errorf("consul: WithRequestTimeout(%v) must be positive", o.requestTimeout)
	}
	if o.maxBodyBytes <= 0 || o.maxEntries <= 0 {
		return nil, fmt.Errorf("consul: WithMaxResponse(%d, %d) needs a positive body size and a positive entry count", o.maxBodyBytes, o.maxEntries)
	}
	c, hc, err := newClient(&o, o.maxBodyBytes)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		service: service,
		opts:    o,
		client:  c,
		http:    hc,
		limiter: rate.NewLimiter(rate.Limit(o.queryRate), o.queryBurst),
		ctx:     ctx,
		cancel:  cancel,
		wake:    make(chan struct{}, 1),
	}
	w.wg.Add(1)
	go w.run()
	return w, nil
}

func validServiceName(s string) error {
	if s == "" {
		return errors.New("consul: empty service name")
	}
	if len(s) > 256 {
		return errors.New("consul: service name longer than 256 bytes")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '/' || c == '?' || c == '#' || c == 0x7f {
			return fmt.Errorf("consul: service name %q contains %q", s, c)
		}
	}
	return nil
}

// Next implements discovery.Watcher. Call it from one goroutine.
func (w *Watcher) Next(ctx context.Context) (discovery.State, error) { return w.pub.Next(ctx) }

// ResolveNow implements discovery.Watcher. It never blocks. The watcher
// cancels its parked blocking query and makes one consistent read, at most
// once per resolve interval (default 500 ms); calls in between are coalesced
// into the next read. During the backoff after a registry error, ResolveNow
// does not cut the backoff short: the read it asks for is made when the
// backoff ends, so clients that call it on every failed dial do not hammer
// a failing agent.
func (w *Watcher) ResolveNow() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.resolvePending {
		return
	}
	w.resolvePending = true
	if wait := time.Until(w.nextForced); wait > 0 {
		w.resolveTimer = time.AfterFunc(wait, w.interrupt)
		return
	}
	w.interruptLocked()
}

func (w *Watcher) interrupt() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.interruptLocked()
}

func (w *Watcher) interruptLocked() {
	if w.cancelQuery != nil {
		w.cancelQuery()
		w.cancelQuery = nil
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters. Safe from any goroutine.
func (w *Watcher) Stats() Stats {
	return Stats{
		Requests:    w.stats.requests.Load(),
		Errors:      w.stats.errors.Load(),
		ForcedReads: w.stats.forced.Load(),
		Rejected:    w.stats.rejected.Load(),
		IndexResets: w.stats.resets.Load(),
	}
}

// Close stops the watcher, aborting any query in flight, and returns after
// its goroutine has exited. Next then returns discovery.ErrClosed. Close is
// idempotent.
func (w *Watcher) Close() error {
	w.mu.Lock()
	w.closed = true
	if w.resolveTimer != nil {
		w.resolveTimer.Stop()
	}
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
	w.pub.Close()
	w.http.CloseIdleConnections()
	return nil
}

// run is the watcher's only goroutine.
func (w *Watcher) run() {
	defer w.wg.Done()
	var (
		index      uint64 // 0: the next read is a plain, non-blocking read
		applied    uint64 // the index of the last answer published; kept through errors
		consistent bool   // the next plain read must be consistent
		failures   int
	)
	for w.ctx.Err() == nil {
		var (
			entries []*api.ServiceEntry
			meta    *api.QueryMeta
			err     error
			checked bool // a consistent read: its answer is authoritative
		)
		if w.takeForced() {
			w.stats.forced.Add(1)
			checked = true
			entries, meta, err = w.plainQuery(true)
		} else if index == 0 {
			checked = consistent
			entries, meta, err = w.plainQuery(consistent)
		} else {
			if werr := w.limiter.Wait(w.ctx); werr != nil {
				return
			}
			entries, meta, err = w.blockingQuery(index)
			if errors.Is(err, errInterrupted) {
				continue
			}
			if err == nil && len(entries) == 0 && meta.QueryBackend == api.QueryBackendStreaming &&
				len(w.pub.Current().Endpoints) > 0 {
				// The agent's streaming view never sends
				// X-Consul-Results-Filtered-By-ACLs: an empty answer from
				// it may be one the ACLs emptied (the token lost
				// service:read), which must not empty the set. Read
				// again, plainly: that read is not served from the
				// streaming view, and says whether ACLs filtered it.
				// A re-query like any other: it waits for the limiter,
				// or a view that keeps answering empty would double
				// the rate.
				if werr := w.limiter.Wait(w.ctx); werr != nil {
					return
				}
				index = 0
				continue
			}
		}
		if w.ctx.Err() != nil {
			return
		}
		if err == nil && !meta.KnownLeader {
			err = w.noLeader(meta)
		}
		if err == nil && meta.LastIndex > 0 && meta.LastIndex < applied && !consistent {
			// The index went backwards: the registry's history was reset
			// (a snapshot restore, a fresh data dir), or a newly elected
			// leader answered before catching up, with an older set. Unless
			// the read was consistent, do not publish this answer: read
			// everything again, consistently (the leader then confirms it
			// leads and has caught up), and publish that. The comparison is
			// with the last answer published, not with the blocking index,
			// which an error resets: the plain read after a leader's death
			// is the one most likely to meet a new leader from behind. The
			// consistent read that follows (consistent is still set) is
			// not checked again: its lower index confirms the reset.
			w.stats.resets.Add(1)
			w.opts.logger.Info("consul: index went backwards; reading everything again",
				"service", w.service, "from", applied, "to", meta.LastIndex)
			if !checked {
				index, consistent = 0, true
				continue
			}
		}
		var keep func(discovery.Endpoint) bool
		if err == nil {
			keep, err = w.apply(entries, meta)
		}
		if err != nil {
			w.stats.errors.Add(1)
			if keep != nil {
				w.pub.SetErrorKeeping(err, keep)
			} else {
				w.pub.SetError(err)
			}
			w.opts.logger.Warn("consul: watch failed", "service", w.service, "error", err, "attempt", failures+1)
			// ResolveNow does not cut the backoff short (a client calls it
			// on every failed dial, which would hammer a failing agent);
			// its read is the one made when the backoff ends.
			w.sleep(w.opts.errBackoff.Delay(failures, nil), false)
			failures++
			index = 0
			continue
		}
		failures = 0
		consistent = false
		applied = meta.LastIndex
		if index = meta.LastIndex; index == 0 {
			// A missing index would make every blocking query return at
			// once: clamp it, and wait a second before asking again.
			index = 1
			w.sleep(time.Second, true)
		}
	}
}

// takeForced reports whether a ResolveNow read is due now, and claims it.
func (w *Watcher) takeForced() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.resolvePending || time.Now().Before(w.nextForced) {
		return false
	}
	w.resolvePending = false
	w.nextForced = time.Now().Add(w.opts.resolveInterval)
	select { // the signal that brought us here is spent
	case <-w.wake:
	default:
	}
	return true
}

// plainQuery is a non-blocking read, bounded by the request timeout.
func (w *Watcher) plainQuery(consistent bool) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	ctx, cancel := context.WithTimeout(w.ctx, w.opts.requestTimeout)
	defer cancel()
	entries, meta, err := w.query(ctx, 0, consistent)
	if err != nil && w.ctx.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("consul: service %q: the agent did not answer within %v: %w", w.service, w.opts.requestTimeout, err)
	}
	return entries, meta, err
}

// blockingQuery parks a query at index. ResolveNow may cancel it, in which
// case it returns errInterrupted.
func (w *Watcher) blockingQuery(index uint64) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	// A hung agent must not stall us forever: Consul answers within
	// WaitTime plus up to WaitTime/16 of jitter.
	qctx, cancel := context.WithTimeout(w.ctx, w.opts.waitTime+w.opts.waitTime/16+w.opts.requestTimeout)
	defer cancel()
	w.mu.Lock()
	if w.resolvePending && !time.Now().Before(w.nextForced) {
		w.mu.Unlock()
		return nil, nil, errInterrupted
	}
	w.cancelQuery = cancel
	w.mu.Unlock()
	entries, meta, err := w.query(qctx, index, false)
	w.mu.Lock()
	w.cancelQuery = nil
	w.mu.Unlock()
	if err != nil && w.ctx.Err() == nil && errors.Is(qctx.Err(), context.Canceled) {
		return nil, nil, errInterrupted
	}
	return entries, meta, err
}

// noLeader returns the error for an answer that says there is no known
// leader, or nil when that is not so. An answer from the agent's streaming
// view (the default for blocking queries since Consul 1.10 when the agent
// enables it, as -dev does) always says so (hashicorp/consul#9776): for it,
// noLeader asks the agent for the leader instead, so that a change is
// published as it comes, not first as an error and then a backoff later,
// while a cluster that lost its quorum is still noticed.
func (w *Watcher) noLeader(meta *api.QueryMeta) error {
	err := fmt.Errorf("%w: service %q: the agent answered from a server without a leader; keeping the last known good set", ErrNoLeader, w.service)
	if meta.QueryBackend != api.QueryBackendStreaming {
		return err
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.opts.requestTimeout)
	defer cancel()
	w.stats.requests.Add(1)
	q := &api.QueryOptions{Datacenter: w.opts.datacenter}
	leader, lerr := w.client.Status().LeaderWithQueryOptions(q.WithContext(ctx))
	switch {
	case lerr != nil:
		return fmt.Errorf("consul: service %q: asking for the leader after a streaming answer: %w", w.service, lerr)
	case leader == "":
		return err
	}
	return nil
}

// query reads the service's instances. index 0 is a plain read; otherwise it
// is a blocking query that returns when the index moves past index or the
// wait time ends.
func (w *Watcher) query(ctx context.Context, index uint64, consistent bool) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	q := &api.QueryOptions{
		Datacenter:        w.opts.datacenter,
		Near:              w.opts.near,
		Filter:            w.opts.filter,
		RequireConsistent: consistent,
	}
	if index > 0 {
		q.WaitIndex = index
		q.WaitTime = w.opts.waitTime
	}
	w.stats.requests.Add(1)
	entries, meta, err := w.client.Health().ServiceMultipleTags(w.service, w.opts.tags, !w.opts.allowWarning, q.WithContext(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("consul: service %q: %w", w.service, stableURLError(err))
	}
	return entries, meta, nil
}

// stableURLError removes from the URL that a transport error (*url.Error)
// quotes the parameters that change from request to request: the blocking
// index and wait, and consistent, which only ResolveNow's reads carry. The
// Publisher publishes a repeated error without a new Version, by its text,
// so that a watcher failing again and again does not wake its consumer on
// every attempt; with them, an outage during which ResolveNow is called
// alternated "…/web?passing=1" and "…/web?consistent=&passing=1", a new
// Version nearly every attempt.
func stableURLError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil {
		return err
	}
	q := u.Query()
	for _, k := range []string{"index", "wait", "consistent"} {
		q.Del(k)
	}
	u.RawQuery = q.Encode()
	ue.URL = u.String()
	return err
}

// apply converts an answer and publishes it. An error leaves the published
// set untouched, with one exception: an answer that lists instances of
// which none is valid (critical ones aside, which are left out as if
// unlisted) is an error too, but it says for certain that an instance it
// does not list is gone. Then apply returns keep, which tells the
// instances of the last known good set it still lists (whose entries
// turned invalid); the caller publishes the error with those only.
func (w *Watcher) apply(entries []*api.ServiceEntry, meta *api.QueryMeta) (keep func(discovery.Endpoint) bool, err error) {
	if len(entries) > w.opts.maxEntries {
		return nil, fmt.Errorf("%w: service %q: %d entries, cap %d", ErrResponseTooLarge, w.service, len(entries), w.opts.maxEntries)
	}
	if len(entries) == 0 && meta.ResultsFilteredByACLs {
		return nil, fmt.Errorf("consul: service %q: the answer was emptied by ACL filtering; check the token's service:read and node:read rights", w.service)
	}
	if len(entries) == 0 && w.opts.anonymous && meta.DefaultACLPolicy == "deny" && w.warnedAnon.CompareAndSwap(false, true) {
		// Consul hides X-Consul-Results-Filtered-By-ACLs from requests
		// without a token, so this empty answer may be one the ACLs
		// emptied; it cannot be told from an empty service.
		w.opts.logger.Warn("consul: empty answer without an ACL token while ACLs default to deny; "+
			"an answer emptied by ACLs looks like an empty service then: set a token (CONSUL_HTTP_TOKEN or WithToken)", "service", w.service)
	}
	eps, bad := w.convert(entries)
	valid, rejected := discovery.Sanitize(eps)
	// Logged once per instance and reason, as the etcd watcher does: a
	// service whose other instances churn answers up to the query rate, and
	// clients call ResolveNow on every failed dial, so logging on every
	// answer repeated the same lines many times a second for as long as
	// the instance stayed registered.
	var seen map[string]string // nil while nothing is rejected: most answers
	if len(rejected) > 0 {
		seen = make(map[string]string, len(rejected))
	}
	for _, r := range rejected {
		why := r.Err.Error()
		seen[r.Endpoint.ID] = why
		if prev, ok := w.rejected[r.Endpoint.ID]; !ok || prev != why {
			w.opts.logger.Warn("consul: instance rejected", "service", w.service, "id", r.Endpoint.ID, "reason", r.Err)
		}
	}
	w.rejected = seen
	if bad > 0 && bad != w.malformed {
		w.opts.logger.Warn("consul: malformed entries without a service", "service", w.service, "count", bad)
	}
	w.malformed = bad
	n := len(rejected) + bad
	if n > 0 {
		w.stats.rejected.Add(uint64(n))
	}
	if len(valid) == 0 && n > 0 {
		// Instances listed but none usable (a bad deploy registered
		// 0.0.0.0, say): a broken answer, not an empty service.
		// Sanitize sorts the rejected by ID: the reason quoted does not
		// move with Consul's order (near sorts by round-trip time).
		why := "malformed"
		if len(rejected) > 0 {
			why = rejected[0].Err.Error()
		}
		err := fmt.Errorf("consul: service %q: all %d instances were rejected (%s); keeping the instances of the last known good set still listed", w.service, n, why)
		if bad > 0 {
			return nil, err // entries without a service: which ones they are is unknown
		}
		listed := make(map[string]bool, len(rejected))
		for _, r := range rejected {
			listed[r.Endpoint.ID] = true
		}
		return func(e discovery.Endpoint) bool { return listed[e.ID] }, err
	}
	w.pub.Update(valid, time.Now())
	return nil, nil
}

// convert maps health entries to endpoints. Critical instances (and warning
// ones unless allowed) are left out; malformed entries are counted in bad.
//
// An endpoint's ID is the Consul service ID, which is unique per agent only.
// Two IDs are prefixed with the node name ("node/ID"): one equal to the
// service's name, which is the ID Consul gives a service registered without
// one, so every node that registers it so shares it; and one that more than
// one entry of this answer carries. The first rule keeps such an ID the same
// from answer to answer: "node-a/web" does not become "web" when node b's
// instance turns critical and leaves the answer, and back when it passes
// again.
func (w *Watcher) convert(entries []*api.ServiceEntry) (eps []discovery.Endpoint, bad int) {
	ids := make(map[string]int, len(entries))
	for _, e := range entries {
		if e != nil && e.Service != nil {
			ids[e.Service.ID]++
		}
	}
	eps = make([]discovery.Endpoint, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil {
			bad++ // logged by apply, when the count changes
			continue
		}
		health := discovery.Healthy
		switch e.Checks.AggregatedStatus() {
		case api.HealthPassing:
		case api.HealthWarning:
			if !w.opts.allowWarning {
				continue
			}
			health = discovery.Degraded
		default: // critical, maintenance
			continue
		}
		s := e.Service
		host := s.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		id := s.ID
		if (id == s.Service || ids[id] > 1) && e.Node != nil && e.Node.Node != "" {
			id = e.Node.Node + "/" + id // service IDs are unique per agent only
		}
		weight := s.Weights.Passing
		if health == discovery.Degraded {
			weight = s.Weights.Warning
		}
		zone := s.Meta["zone"]
		if zone == "" && e.Node != nil {
			zone = e.Node.Meta["zone"]
		}
		eps = append(eps, discovery.Endpoint{
			ID:     id,
			Addr:   net.JoinHostPort(host, strconv.Itoa(s.Port)),
			Weight: weight,
			Zone:   zone,
			Tags:   s.Tags,
			Meta:   s.Meta,
			Health: health,
		})
	}
	return eps, bad
}

// sleep waits for d or ctx, whichever comes first, and, if resolve is set,
// for a ResolveNow. Without resolve a ResolveNow stays pending, and the loop
// serves it when the sleep ends.
func (w *Watcher) sleep(d time.Duration, resolve bool) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var wake <-chan struct{} // nil: never ready
	if resolve {
		wake = w.wake
	}
	select {
	case <-w.ctx.Done():
	case <-t.C:
	case <-wake:
	}
}

var _ discovery.Watcher = (*Watcher)(nil)
