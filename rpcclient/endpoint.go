package rpcclient

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// State is the connection state of an endpoint, after gRPC's connectivity
// states.
type State int

const (
	// Idle: no connection and none being made; the next call dials.
	Idle State = iota
	// Connecting: a dial is in progress; calls wait for it.
	Connecting
	// Ready: at least one connection is up.
	Ready
	// TransientFailure: the last dial failed. Until the reconnect backoff
	// elapses, an attempt on the endpoint gets a *BackoffError at once
	// (nothing sent, no dial) and the call moves to another node; with no
	// other node left, it waits for discovery's next answer or the end of
	// the backoff, then dials. A call waits so at most twice, each time at
	// most the dial timeout (see Client.Call).
	TransientFailure
	// Shutdown: the endpoint left discovery (draining) or the client
	// closed; no new calls.
	Shutdown
)

// String returns "idle", "connecting", "ready", "transient-failure" or
// "shutdown".
func (s State) String() string {
	return [...]string{"idle", "connecting", "ready", "transient-failure", "shutdown"}[s]
}

// endpoint holds the connections to one address: up to poolSize, dialed on
// demand, with reconnect backoff after failed dials.
type endpoint struct {
	addr string
	c    *Client
	seen atomic.Pointer[byte] // the bytes of the address string Call last found it by (see epTable)

	mu       sync.Mutex
	state    State
	conns    []*conn
	dialing  *dialAttempt // the dial under way; nil when none
	failures int          // consecutive failed dials with no connection up
	retryAt  time.Time
	// The same for dials that would grow a pool that has connections: they
	// back off on their own, so that they never delay a redial after the
	// last connection died.
	growFailures int
	growAt       time.Time
	lastErr      error
	lastClose    error     // why the last connection to close closed; nil before any did
	provenLost   time.Time // when the last connection that proved itself died (see lostLocked)
	removed      time.Time // when discovery dropped the address; zero while listed
	rr           atomic.Uint32
	dials        atomic.Uint64
}

// get returns a connection, bounded by ctx (the attempt's context). With no
// live connection it waits for a dial, starting one if none is under way;
// the dial runs on its own goroutine, bounded by the dial timeout and
// Close but not by ctx, so that a caller whose deadline is shorter than the
// dial timeout still lets the dial end and a failure count (backoff,
// quarantine, ResolveNow: see run). Errors are wrapped in errNotSent:
// no request was written.
//
// A call never waits for a dial while the endpoint has a connection: below
// the pool size, or on a connection past its maximum age (which the new one
// replaces: see run), it starts one extra dial in the background and goes
// on the connections the pool has.
//
// send calls acquire, which also says whether the call waited for a dial.
func (e *endpoint) get(ctx context.Context) (*conn, error) {
	cn, _, err := e.acquire(ctx)
	return cn, err
}

// acquire is get, and waited says that the call waited for a dial (its own
// or another call's): its time then holds the dial's, which is not the
// node's latency (see balancer.Untimed).
func (e *endpoint) acquire(ctx context.Context) (cn *conn, waited bool, err error) {
	// waited, for a dial: the next dial waits for another call
	for {
		e.mu.Lock()
		if e.state == Shutdown {
			e.mu.Unlock()
			return nil, waited, notSent(e.errShutDown())
		}
		if cn := e.liveLocked(); cn != nil {
			if !waited {
				e.growLocked(cn)
			}
			e.mu.Unlock()
			return cn, waited, nil
		}
		d := e.dialing
		if d == nil {
			if time.Now().Before(e.retryAt) {
				err := &BackoffError{Addr: e.addr, Last: e.lastErr, version: e.c.bal.StateVersion()}
				e.mu.Unlock()
				return nil, waited, notSent(err)
			}
			d = &dialAttempt{done: make(chan struct{}), until: time.Now().Add(e.c.opts.dialTimeout)}
			e.dialing = d
			e.state = Connecting
			e.c.wg.Add(1) // before Close's Wait: Close shuts this endpoint down under mu first
			go e.run(d)
		} else if e.state == Idle {
			// The pool's extra dial, which the pool's last connection
			// did not outlive: the call now waits for it.
			e.state = Connecting
		}
		e.mu.Unlock()
		select {
		case <-d.done:
			if d.err != nil && !d.grow {
				return nil, waited, notSent(d.err)
			}
			waited = true
			// Connected, or an extra connection's dial failed after the
			// pool's last connection died: look again.
		case <-ctx.Done():
			// The dial goes on; its outcome is what counts. Until it
			// ends, the node is out of picks: the calls that would come
			// next are no more patient than this one. Only while it is
			// under way (checked under mu, which run takes to end it
			// before it lifts the quarantine): a dial that has just
			// connected must not be quarantined after the fact.
			e.mu.Lock()
			// Not for an endpoint discovery dropped: the address may
			// be back, another endpoint's node (see run).
			if left := time.Until(d.until); !d.grow && left > 0 && e.dialing == d && e.state != Shutdown {
				e.c.bal.Quarantine(e.addr, left)
			}
			e.mu.Unlock()
			return nil, waited, notSent(&dialWaitError{Addr: e.addr, Err: ctx.Err()})
		case <-e.c.life.Done():
			return nil, waited, notSent(ErrClosed)
		}
	}
}

// dialAttempt is a dial under way; done is closed when it ends, and err is
// then its error (nil once its connection is in the pool).
type dialAttempt struct {
	done  chan struct{}
	err   error
	grow  bool      // an extra connection for a pool that has one
	until time.Time // when the dial times out: how long get's waiters quarantine the node for
}

// run makes the dial d, on its own goroutine (counted in the Client's
// WaitGroup), bounded by the dial timeout and by Close, not by the call that
// asked for it.
//
// A dial for an endpoint with no live connection that fails starts the
// reconnect backoff, quarantines the address in the balancer for as long,
// and asks discovery to refresh (ResolveNow; neither for an endpoint that
// discovery dropped meanwhile), before the callers waiting for
// it wake: their retries then pick another node, or wait for the refreshed
// set. When it succeeds, it ends the quarantine that a caller who gave up on
// it started (see get).
//
// An extra connection's dial (d.grow) that fails backs off on its own
// schedule (growFailures, growAt), so that it never delays a redial after
// the last connection died; the calls meanwhile use the connections the pool
// has. If the pool has none left by the time it fails (the last one died
// while it was under way), it is a failed dial like any other: the callers
// waiting for it must not redial at once.
func (e *endpoint) run(d *dialAttempt) {
	defer e.c.wg.Done()
	defer close(d.done) // after d.err is set
	cn, err := e.dial(e.c.life)
	var wait time.Duration
	var aged []*conn // connections past their age that cn replaces
	grow := d.grow
	e.mu.Lock()
	e.dialing = nil
	// An endpoint discovery dropped (drain) keeps its dial's outcome to
	// itself: the balancer's node for the address, if the address is
	// back, belongs to the endpoint made for it since, which this dial
	// says nothing about (see lostLocked).
	dropped := e.state == Shutdown
	switch {
	case err != nil && e.c.life.Err() != nil:
		err = ErrClosed
	case err != nil && d.grow && e.upLocked():
		e.growFailures++
		wait = e.c.opts.connectBackoff.Delay(e.growFailures-1, nil)
		e.growAt = time.Now().Add(wait)
	case err != nil:
		d.grow, grow = false, false // the pool has no connection left (see above); under mu, as get reads it
		if de, ok := err.(*DialError); ok {
			// Before ResolveNow, and before BackoffErrors share it: what
			// a refreshed set is newer than.
			de.version = e.c.bal.StateVersion()
		}
		e.failures++
		e.lastErr = err
		wait = e.c.opts.connectBackoff.Delay(e.failures-1, nil)
		e.retryAt = time.Now().Add(wait)
		// A retired connection takes no calls: it does not count. Shutdown
		// is final: an endpoint drained during the dial stays out.
		if e.state != Shutdown && e.liveLocked() == nil {
			e.state = TransientFailure
		}
	case e.state != Shutdown && cn.failure() != nil:
		// The peer closed it before it reached the pool: a failed dial,
		// which its death counts (connDead, lostLocked: backoff,
		// quarantine). Its waiters move on rather than start another.
		err = &DialError{Addr: e.addr, version: e.c.bal.StateVersion(),
			Err: fmt.Errorf("connection lost before any reply: %w", cn.failure())}
	case !e.adoptLocked(cn):
		err = e.errShutDown()
	default:
		if !d.grow {
			e.lastErr = nil
			// End a caller's quarantine while the dial hung; under mu,
			// so that it comes before any quarantine a death of cn sets (lostLocked).
			e.c.bal.Quarantine(e.addr, 0)
		}
		if e.c.opts.maxConnAge > 0 {
			for _, old := range e.conns {
				// The oldest aged one only: the pool's connections,
				// made together, age together, and each gets its own
				// replacement rather than leaving the pool short while
				// their calls drain.
				if old != cn && !old.retired.Load() && old.aged() && (len(aged) == 0 || old.born.Before(aged[0].born)) {
					aged = append(aged[:0], old)
				}
			}
			for _, old := range aged {
				old.markAged() // under mu: no get sees it aged and live meanwhile
			}
		}
		cn = nil // the pool's now
	}
	e.mu.Unlock()
	if cn != nil {
		cn.close(err) // the endpoint shut down during the dial, or cn died before it joined the pool
	}
	for _, old := range aged {
		old.closeIfRetired() // without mu: its close calls connDead
	}
	switch {
	case grow && wait > 0:
		e.c.opts.logger.Info("rpcclient: extra connection dial failed", "service", e.c.service, "addr", e.addr,
			"error", err, "next try in", wait)
	case grow, err == nil:
	case wait > 0 && dropped:
		e.c.opts.logger.Info("rpcclient: dial of a drained endpoint failed", "service", e.c.service, "addr", e.addr, "error", err)
	case wait > 0:
		e.c.bal.Quarantine(e.addr, wait)
		e.c.w.ResolveNow()
		e.c.opts.logger.Warn("rpcclient: dial failed", "service", e.c.service, "addr", e.addr, "error", err, "quarantine", wait)
	}
	d.err = err
}

// adoptLocked adds a newly dialled connection to the pool, under e.mu. It
// returns false when the endpoint shut down during the dial; the caller then
// closes cn, after unlocking.
//
// A successful dial does not end the reconnect backoff: a peer that accepts
// and closes at once (a crashing server behind a live socket, a port reused
// by something else) would otherwise be redialled without pause. The backoff
// ends once a connection proves itself (see connServes, conn.proven and connDead), as
// gRPC's ends once the server's preface arrives.
func (e *endpoint) adoptLocked(cn *conn) bool {
	if e.state == Shutdown {
		return false
	}
	e.conns = append(e.conns, cn)
	e.state = Ready
	return true
}

func (e *endpoint) errShutDown() error {
	return fmt.Errorf("%w: endpoint %s shut down", ErrConnClosed, e.addr)
}

// ready returns a live connection without waiting for a dial, or nil. Like
// get, it may start the pool's background dial (growLocked).
func (e *endpoint) ready() *conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state == Shutdown {
		return nil
	}
	cn := e.liveLocked()
	if cn != nil {
		e.growLocked(cn) // as get does: hedged calls take connections here
	}
	return cn
}

// growLocked starts the endpoint's one background dial, under e.mu, when
// the pool has fewer connections that take calls than its size (retired
// ones still draining do not count), or cn, the connection a call is about
// to use, is past its maximum age (the new connection replaces it: see
// run), and no dial is under way or backing off.
//
// It is small enough to inline into get, which every call takes: with the
// default pool of one (which cn fills) and no maximum age it is two
// comparisons, and maybeGrowLocked, out of line, does the rest.
func (e *endpoint) growLocked(cn *conn) {
	if o := &e.c.opts; o.poolSize > 1 || o.maxConnAge > 0 {
		e.maybeGrowLocked(cn)
	}
}

// maybeGrowLocked is growLocked's decision and the dial's start.
func (e *endpoint) maybeGrowLocked(cn *conn) {
	size := e.c.opts.poolSize
	short := len(e.conns) < size || size > 1 && e.upCountLocked() < size
	if !short && !(e.c.opts.maxConnAge > 0 && cn.aged()) || e.dialing != nil || time.Now().Before(e.growAt) {
		return
	}
	d := &dialAttempt{done: make(chan struct{}), grow: true}
	e.dialing = d
	e.c.wg.Add(1) // before Close's Wait: Close shuts this endpoint down under mu first
	go e.run(d)
}

// liveLocked returns one of the pool's live connections in turn, or nil;
// under e.mu. A connection that died is dropped here if its reader has not
// yet taken it out (connDead): between its death and that, a busy process
// could otherwise hand it to call after call, each failing at once.
//
// A retired connection (see conn.retired) is skipped but kept: it closes
// itself once its calls have their replies, and Close must still find it.
func (e *endpoint) liveLocked() *conn {
	for tries := len(e.conns); tries > 0 && len(e.conns) > 0; tries-- {
		i := 0
		if len(e.conns) > 1 { // the default pool of one needs no turn-taking
			i = int(e.rr.Add(1)) % len(e.conns)
		}
		cn := e.conns[i]
		if !cn.alive() {
			e.conns = slices.Delete(e.conns, i, i+1)
			e.lostLocked(cn)
			// The turns that follow walk a shorter slice: they must look
			// at each connection left, or the live one may be missed.
			tries = len(e.conns) + 1
			continue
		}
		if !cn.retired.Load() {
			return cn
		}
	}
	if e.state == Ready {
		e.state = Idle
	}
	return nil
}

// dial makes one connection, bounded by the dial timeout, ctx and Close.
func (e *endpoint) dial(ctx context.Context) (*conn, error) {
	e.dials.Add(1)
	dctx, cancel := context.WithTimeout(ctx, e.c.opts.dialTimeout)
	defer cancel()
	defer context.AfterFunc(e.c.life, cancel)()
	nc, err := e.c.opts.dialConn(dctx, e.addr)
	if err != nil {
		return nil, &DialError{Addr: e.addr, Err: err}
	}
	return newConn(e.addr, nc, &e.c.opts, e.connDead, e.connServes, &e.c.wg), nil
}

// connServes is called by cn's reader when the first reply arrives on it:
// the peer serves, and the series of failed dials (and of connections lost
// before any reply) that the reconnect backoffs count ends, as gRPC's ends
// once the server's preface arrives (see adoptLocked). Without it the
// series ended only when a connection that had proved itself died of the
// peer: one closed on this side (retired by age, a caller's write
// deadline) left it standing, and the next failed dial, however isolated,
// backed off as its next step, toward the 120 s cap; a replacement for an
// aged connection that failed once then left the old connection serving
// for minutes. A backoff under way is not cut short.
func (e *endpoint) connServes(*conn) {
	e.mu.Lock()
	e.failures, e.growFailures = 0, 0
	e.mu.Unlock()
}

// connDead is called when a connection dies, by the goroutine that found
// it dead (its reader, its heartbeat, or a call whose write failed).
func (e *endpoint) connDead(cn *conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastClose = cn.failure()
	for i, x := range e.conns {
		if x == cn {
			e.conns = append(e.conns[:i], e.conns[i+1:]...)
			break
		}
	}
	if len(e.conns) == 0 && e.state == Ready {
		e.state = Idle
	}
	e.lostLocked(cn)
}

// lostLocked counts the death of cn toward the reconnect backoff, once per
// connection, under e.mu: from connDead, or from liveLocked when it drops
// cn first (a concurrent call could otherwise start a dial before the
// death counts).
//
// A connection that proved itself (conn.proven) ends the reconnect backoff
// and any quarantine, and asks discovery to refresh. One that died before it did counts as a failed dial:
// the peer took the TCP connection but not the calls. Like a failed dial
// (see run), it starts or lengthens the backoff (of the pool's extra
// connections when others are up), quarantines the address for as long
// and asks discovery to refresh. Neither counts: a connection closed on
// this side (Close, a drain, a retired connection's end, a caller's write
// deadline), or one that lived beside a proven connection that died since
// it was made (a server restart takes both).
//
// The balancer's Quarantine and the watcher's ResolveNow only set state and
// signal, so they are called under e.mu, ordered with run's.
func (e *endpoint) lostLocked(cn *conn) {
	if cn.counted {
		return
	}
	cn.counted = true
	err := cn.failure()
	switch {
	case e.state == Shutdown || isRetired(err) || isLocalClose(err) || e.c.life.Err() != nil:
	case cn.proven():
		e.provenLost = time.Now()
		e.failures, e.growFailures = 0, 0
		if e.retryAt.After(e.provenLost) {
			e.retryAt = time.Time{}
			e.c.bal.Quarantine(e.addr, 0)
		}
		e.growAt = time.Time{}
		if e.state == TransientFailure {
			e.state = Idle
		}
		// The peer went away (a crash, a kill, a move): ask discovery
		// to refresh now, as grpc-go re-resolves when a ready connection
		// is lost. Waiting for a redial to fail is not enough: the
		// breaker, outlier ejection or P2C's cost may keep the node
		// unpicked, and unredialled, for the whole ejection time.
		// ResolveNow is coalesced and rate-limited.
		e.c.w.ResolveNow()
	case cn.born.Before(e.provenLost):
	case e.upLocked():
		e.growFailures++
		e.growAt = time.Now().Add(e.c.opts.connectBackoff.Delay(e.growFailures-1, nil))
	default:
		e.failures++
		e.lastErr = &DialError{Addr: e.addr, version: e.c.bal.StateVersion(), // before ResolveNow: see run
			Err: fmt.Errorf("connection lost %v after connect, before any reply: %w", cn.age().Round(time.Millisecond), err)}
		wait := e.c.opts.connectBackoff.Delay(e.failures-1, nil)
		e.retryAt = time.Now().Add(wait)
		e.state = TransientFailure
		e.c.bal.Quarantine(e.addr, wait)
		e.c.w.ResolveNow()
		e.c.opts.logger.Warn("rpcclient: connection lost before any reply", "service", e.c.service, "addr", e.addr,
			"error", e.lastErr, "quarantine", wait)
	}
}

// upCountLocked returns how many of the pool's connections take calls;
// under e.mu.
func (e *endpoint) upCountLocked() int {
	n := 0
	for _, cn := range e.conns {
		if cn.takesCalls() {
			n++
		}
	}
	return n
}

// upLocked reports whether the pool has a connection that takes calls;
// under e.mu. Unlike liveLocked it changes nothing.
func (e *endpoint) upLocked() bool {
	for _, cn := range e.conns {
		if cn.takesCalls() {
			return true
		}
	}
	return false
}

// status returns the endpoint's state, its pending calls, its dials and
// why its last connection closed.
func (e *endpoint) status() EndpointStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := EndpointStatus{Addr: e.addr, State: e.state, Dials: e.dials.Load(), LastClose: e.lastClose}
	if st.State == Ready && !e.upLocked() {
		// Its connections are all retired (draining their calls) or
		// dead: none takes calls, and the next call finds it Idle
		// (liveLocked) and dials, or waits for the dial under way.
		st.State = Idle
	}
	switch {
	case !e.removed.IsZero():
		// Draining (see Client.maintain): no new calls. The endpoint's
		// own state is kept, so that it serves again at once if the
		// address comes back within the grace period.
		st.State = Shutdown
	case e.dialing != nil && (st.State == Idle || st.State == TransientFailure):
		// The pool's extra dial, which its last connection did not
		// outlive (connDead, liveLocked) or which outlived a backoff
		// set meanwhile: the next call waits for it (see get), as
		// Connecting says, rather than dial or get a BackoffError.
		st.State = Connecting
	case st.State == TransientFailure && !time.Now().Before(e.retryAt):
		st.State = Idle
	}
	for _, cn := range e.conns {
		st.Pending += cn.inflight()
	}
	return st
}

// drain shuts down an endpoint that discovery dropped: no new calls, and
// its connections retire (as by age), each closing once its calls in
// flight have their replies. Client.maintain found none in flight, but a
// call that picked the address on an older set may have entered one
// since. It returns the connections still open, which Close must close.
func (e *endpoint) drain() []*conn {
	e.mu.Lock()
	e.state = Shutdown
	conns := e.conns
	e.conns = nil
	for _, cn := range conns {
		cn.drained.Store(true)
		cn.retired.Store(true) // after drained: start reads retired, then retiredErr
	}
	e.mu.Unlock()
	var open []*conn
	for _, cn := range conns {
		cn.closeIfRetired()
		if cn.alive() {
			open = append(open, cn)
		}
	}
	return open
}

// shutdown stops new calls and closes the connections, failing their
// pending calls with err. It waits for the connections' goroutines.
func (e *endpoint) shutdown(err error) {
	e.mu.Lock()
	e.state = Shutdown
	conns := e.conns
	e.conns = nil
	e.mu.Unlock()
	for _, cn := range conns {
		cn.close(err)
	}
}
