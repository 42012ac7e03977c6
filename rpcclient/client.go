package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
)

// Client calls a service over net/rpc through a balancer. Create it with
// Dial (from a target) or New (from a Watcher). Call may be used from any
// number of goroutines; Close stops everything.
type Client struct {
	// Most of what every Call reads comes first, together (72 bytes: two
	// cache lines at most, against four or five spread over opts and a
	// separate budget before): a call runs after a round trip, on caches
	// the network stack has just gone through, and each line it touches
	// is a miss. (The endpoint's get still reads opts.poolSize.)
	bal       *balancer.Balancer
	endpoints atomic.Pointer[epTable] // copy on write
	timeout   time.Duration           // opts.attemptTimeout
	hedge     time.Duration           // opts.hedgeDelay
	closed    atomic.Bool
	idemTable bool   // len(opts.idempotent) > 0
	observed  bool   // opts.observer != nil
	budget    budget // Call reads its first three words

	opts    options
	w       discovery.Watcher
	ownsW   bool
	service string

	epMu sync.Mutex // serializes endpoint creation and removal
	epN  int        // the endpoints in the table's byAddr; under epMu
	// draining holds the connections of dropped endpoints that still had
	// a call in flight (see endpoint.drain), for Close; under epMu.
	draining []*conn

	// life ends when Close begins: waits and background dials select on it.
	life   context.Context
	cancel context.CancelFunc
	once   sync.Once
	// closeErr is what Close returns: the owned watcher's Close error.
	closeErr error
	wg       sync.WaitGroup // maintenance goroutine and every connection's goroutines

	stats counters // see Stats
}

// Dial watches target (see discovery.Watch; import discovery/consul or
// discovery/etcd for their schemes) and returns a Client for it. It does not
// wait for discovery: the first calls wait, as their context allows, for
// discovery's first answer. When that answer is an error (the registry is
// unreachable, say) and no set was ever known, calls fail at once with an
// *Error wrapping balancer.ErrNoEndpoints and the registry's error, until
// discovery answers with endpoints. ctx bounds the construction only. The
// Client owns the watcher and closes it on Close.
func Dial(ctx context.Context, target string, opts ...Option) (*Client, error) {
	w, err := discovery.Watch(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("rpcclient: %w", err)
	}
	t, _ := discovery.ParseTarget(target)
	name := t.Path
	if t.Scheme != "static" {
		// The last element of the prefix: etcd watches services/orders/
		// as services/orders.
		name = strings.TrimRight(name, "/")
		name = name[strings.LastIndexByte(name, '/')+1:]
	}
	c, err := newClient(w, true, name, opts)
	if err != nil {
		w.Close()
		return nil, err
	}
	return c, nil
}

// New returns a Client over w. The caller keeps ownership of w and closes it
// after the Client. w must not be shared with another Client or Balancer:
// a Watcher has one consumer, and each State it publishes goes to only one
// of several (a second Client over a Static may never get its first
// State, and its calls wait for it as their ctx allows).
func New(w discovery.Watcher, opts ...Option) (*Client, error) {
	if w == nil {
		return nil, errors.New("rpcclient: New with a nil watcher")
	}
	return newClient(w, false, "", opts)
}

func newClient(w discovery.Watcher, owns bool, service string, opts []Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	bopts := append([]balancer.Option{balancer.WithService(service)}, o.balancerOpts...)
	c := &Client{
		opts: o, w: w, ownsW: owns, service: service,
		bal:     balancer.New(w, bopts...),
		timeout: o.attemptTimeout, hedge: o.hedgeDelay, idemTable: len(o.idempotent) > 0,
		observed: o.observer != nil,
	}
	c.budget.init(o.budgetRatio, o.budgetMinPerSec)
	c.life, c.cancel = context.WithCancel(context.Background())
	c.endpoints.Store(newEpTable(new(sync.Map), 0))
	c.wg.Add(1)
	go c.maintain()
	return c, nil
}

// Balancer returns the client's balancer, for status displays.
func (c *Client) Balancer() *balancer.Balancer { return c.bal }

// epTable is the client's endpoints by address. byAddr is a concurrent map
// that successive tables share: adding an endpoint stores it there (under
// epMu) and replaces the table only when the hints must grow, which they
// do by doubling, so that reaching n endpoints costs O(n), not a copy of
// the whole table per new address (at 10,000 endpoints, 0.7 MB and some
// 0.3 ms each, under epMu). Dropping endpoints replaces the table, with
// fresh hints.
//
// hints find an endpoint without hashing its address. The balancer hands
// Call the same address string, the same bytes at the same place, pick
// after pick for as long as the node's endpoint is unchanged; a hint is an
// endpoint found by a string at that place (a hash of its data pointer
// picks the slot), and endpoint.seen says which string: a string at the
// same place and of the same length is the same address, because seen
// keeps those bytes alive and strings are never written. There are at
// least twice as many slots as endpoints (64 to 65,536), so most
// endpoints have a slot to themselves. A hit saves the map's hash and key
// comparison (0.1-0.15 % of a loopback call's latency in
// BenchmarkCallInterleaved's path-%). A miss is a map lookup, as before,
// and stores the hint, unless it is already there.
type epTable struct {
	byAddr *sync.Map                  // string -> *endpoint
	hints  []atomic.Pointer[endpoint] // a power of two of them
	shift  uint8                      // 64 - log2(len(hints))
}

// newEpTable returns a table over byAddr, which holds n endpoints, with
// hint slots for them.
func newEpTable(byAddr *sync.Map, n int) *epTable {
	bits := 6
	for bits < 16 && 1<<bits < 2*n {
		bits++
	}
	return &epTable{byAddr: byAddr, hints: make([]atomic.Pointer[endpoint], 1<<bits), shift: uint8(64 - bits)}
}

// lookup returns the endpoint for addr, or nil.
func (t *epTable) lookup(addr string) *endpoint {
	if v, ok := t.byAddr.Load(addr); ok {
		return v.(*endpoint)
	}
	return nil
}

// all returns every endpoint in the table.
func (t *epTable) all() []*endpoint {
	var out []*endpoint
	t.byAddr.Range(func(_, v any) bool {
		out = append(out, v.(*endpoint))
		return true
	})
	return out
}

// hint returns the slot for a string whose bytes are at p. The pointer is
// hashed, since addresses of one size class lie a fixed stride apart and
// their low bits repeat: multiply, fold the high bits down, multiply again,
// and take the top bits. One multiply alone (Fibonacci hashing) maps a
// stride s to steps of s x 0.618... modulo 1, which for some size classes
// lies near a fraction with a small denominator: 1,000 strides of one
// class then shared as few as 177 of 2,048 slots, against about 790 for a
// uniform hash, which the second round gives for every class from 16 to
// 512 bytes.
func (t *epTable) hint(p *byte) *atomic.Pointer[endpoint] {
	const k = 0x9E3779B97F4A7C15
	x := uint64(uintptr(unsafe.Pointer(p))) * k
	x ^= x >> 29
	return &t.hints[x*k>>t.shift]
}

// endpoint returns the endpoint for addr, creating it on first use. Call
// uses it from any goroutine.
func (c *Client) endpoint(addr string) *endpoint {
	t := c.endpoints.Load()
	p := unsafe.StringData(addr)
	h := t.hint(p)
	if e := h.Load(); e != nil && e.seen.Load() == p && len(e.addr) == len(addr) {
		return e
	}
	e := t.lookup(addr)
	if e == nil {
		e = c.addEndpoint(addr)
	}
	if p != nil {
		if e.seen.Load() != p {
			e.seen.Store(p)
		}
		if h.Load() != e {
			h.Store(e)
		}
	}
	return e
}

// addEndpoint returns the endpoint for addr, adding it to the table if it
// has none; the table is replaced only when its hints must grow.
func (c *Client) addEndpoint(addr string) *endpoint {
	c.epMu.Lock()
	defer c.epMu.Unlock()
	t := c.endpoints.Load()
	if e := t.lookup(addr); e != nil {
		return e
	}
	e := &endpoint{addr: addr, c: c}
	if c.closed.Load() {
		e.state = Shutdown
	}
	t.byAddr.Store(addr, e)
	c.epN++
	if len(t.hints) < 1<<16 && len(t.hints) < 2*c.epN {
		c.endpoints.Store(newEpTable(t.byAddr, c.epN))
	}
	return e
}

// maintain drains the endpoints discovery dropped, and those outside the
// balancer's subset (balancer.WithSubset): they get no new calls (the
// balancer does not pick them), their connections are kept for the drain
// grace period in case the address comes back (a flapping check), and are
// closed once their in-flight calls are done.
func (c *Client) maintain() {
	defer c.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		upd := c.bal.Updated()
		select {
		case <-c.life.Done():
			return
		case <-upd:
		case <-t.C:
		}
		now := time.Now()
		var gone []*endpoint
		c.endpoints.Load().byAddr.Range(func(_, v any) bool {
			e := v.(*endpoint)
			addr := e.addr
			e.mu.Lock()
			switch {
			case c.bal.InSubset(addr):
				e.removed = time.Time{}
			case e.removed.IsZero():
				e.removed = now
			}
			removed := e.removed
			e.mu.Unlock()
			if removed.IsZero() || now.Sub(removed) < c.opts.drainGrace {
				return true
			}
			if e.status().Pending == 0 {
				gone = append(gone, e)
			}
			return true
		})
		if len(gone) > 0 {
			c.drop(gone)
		}
	}
}

// drop shuts endpoints down and forgets them.
func (c *Client) drop(gone []*endpoint) {
	c.epMu.Lock()
	t := c.endpoints.Load()
	for _, e := range gone {
		if t.byAddr.CompareAndDelete(e.addr, e) {
			c.epN--
		}
	}
	// Fresh hints: the old ones may name the endpoints dropped.
	c.endpoints.Store(newEpTable(t.byAddr, c.epN))
	c.epMu.Unlock()
	var open []*conn
	for _, e := range gone {
		c.opts.logger.Info("rpcclient: drained endpoint", "service", c.service, "addr", e.addr)
		open = append(open, e.drain()...)
	}
	c.epMu.Lock()
	closed := c.closed.Load() // Close has taken draining already (it sets closed first)
	if !closed {
		c.draining = slices.DeleteFunc(c.draining, func(cn *conn) bool { return !cn.alive() })
		c.draining = append(c.draining, open...)
	}
	c.epMu.Unlock()
	if closed {
		for _, cn := range open {
			cn.close(ErrClosed)
		}
	}
}

// EndpointStatus is the connection side of one endpoint.
type EndpointStatus struct {
	Addr    string
	State   State
	Pending int    // requests waiting for a reply: calls, and a heartbeat ping while one is out
	Dials   uint64 // dials made so far
	// LastClose says why the endpoint's most recent connection closed
	// (wrapping ErrHeartbeat, ErrReadTimeout, ErrConnClosed, ...); nil
	// while none has. It outlives the reconnect, so a Ready endpoint may
	// show why its previous connection was dropped.
	LastClose error
}

// Endpoints returns the connection state of every endpoint the client has
// used, for status displays. Safe from any goroutine.
func (c *Client) Endpoints() []EndpointStatus {
	var out []EndpointStatus
	for _, e := range c.endpoints.Load().all() {
		out = append(out, e.status())
	}
	return out
}

// Close fails pending calls with ErrClosed, closes every connection, stops
// the balancer and, for a Client made by Dial, the watcher. It returns after
// every goroutine the Client started has exited, with the error of closing
// the watcher it owns (nil for a Client made by New, which leaves the
// watcher to its caller). A second Close does nothing more and returns the
// same error.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.closed.Store(true)
		c.cancel()
		c.epMu.Lock()
		eps := c.endpoints.Load().all()
		draining := c.draining
		c.draining = nil
		c.epMu.Unlock()
		for _, e := range eps {
			e.shutdown(ErrClosed)
		}
		for _, cn := range draining {
			cn.close(ErrClosed)
		}
		c.bal.Close()
		if c.ownsW {
			if err := c.w.Close(); err != nil {
				c.closeErr = fmt.Errorf("rpcclient: close the watcher of %q: %w", c.service, err)
			}
		}
		c.wg.Wait()
	})
	return c.closeErr
}
