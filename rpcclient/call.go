package rpcclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/rpc"
	"reflect"
	"slices"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
)

// Call invokes serviceMethod ("Service.Method") with args and decodes the
// reply into reply, which must be a non-nil pointer, or nil to discard the
// reply; any other reply fails the call with ErrCodec before anything is
// sent. It may be called from any goroutine and blocks until the reply, a
// final error, or ctx.
//
// ctx's deadline covers every attempt. A failed attempt is retried, on a node
// not tried yet when there is one, if all of these hold:
//   - its error is retryable: a dial or transport error, EOF, rpc.ErrShutdown,
//     a lost connection or an attempt timeout (not an rpc.ServerError, a codec
//     error or ctx);
//   - the request provably never left (a failed dial, an endpoint in
//     reconnect backoff), or the call is idempotent (Idempotent,
//     WithIdempotentMethods, or WithIdempotencyKey);
//   - attempts remain (WithMaxAttempts), the retry budget has a token
//     (WithRetryBudget), and the retry can start before the deadline.
//
// A call that is not idempotent and failed after its request may have
// reached the server returns an *Error wrapping ErrOutcomeUnknown; so does
// one whose ctx ended, or whose client closed, while it waited for the
// reply (the *Error then wraps ctx's error or ErrClosed too). On a failed
// dial the address is quarantined in the balancer and discovery is asked to
// refresh (ResolveNow); when no other node is left, Call waits for the
// refreshed set or the end of the address's reconnect backoff, whichever
// comes first, rather than redial the stale address at once. It waits so
// at most twice per call, each time at most the dial timeout and never past
// ctx: a call whose every node keeps failing to dial fails with the last
// dial error after at most three rounds of dials, however long its deadline.
//
// Every failure is an *Error. Call starts no goroutine per call; a call
// may start its endpoint's one background dial, which grows the pool
// (WithPoolSize above 1) or replaces a connection past its maximum age
// (WithMaxConnectionAge).
func (c *Client) Call(ctx context.Context, serviceMethod string, args, reply any, opts ...CallOption) error {
	start := c.now() // the zero time without an Observer
	var idem, keyed bool
	var hk *string
	timeout := c.timeout
	hedge := c.hedge
	for i := range opts {
		o := &opts[i]
		idem = idem || o.idempotent
		if o.hashed {
			hk = &o.hashKey
		}
		if o.timeoutSet {
			timeout = o.timeout
		}
		if o.hedgeSet {
			hedge = o.hedge
		}
		if o.keyed {
			if err := setKey(args, o.key); err != nil {
				return c.ended(serviceMethod, start, &Error{Method: serviceMethod, Err: err, Errs: []error{err}})
			}
			keyed = true
		}
	}
	if !idem && c.idemTable {
		idem = c.opts.idempotent[serviceMethod]
	}
	// A key makes a call that is not idempotent retryable (the server
	// recognises a repeat by it), but not hedged, and its failures may
	// leave the outcome unknown; a call idempotent on its own, keyed or
	// not, is just idempotent.
	keyed = keyed && !idem
	idem = idem || keyed
	if c.closed.Load() {
		return c.ended(serviceMethod, start, &Error{Method: serviceMethod, Err: ErrClosed, Errs: []error{ErrClosed}})
	}
	if reply != nil {
		// A reply that cannot receive a value (sum, not &sum; a nil
		// *T) is the caller's slip: refused before the request runs,
		// rather than found by the reader, whose failed decoding
		// closes the connection and every call on it.
		if rv := reflect.ValueOf(reply); rv.Kind() != reflect.Pointer || rv.IsNil() {
			err := fmt.Errorf("%w: the reply must be a non-nil pointer, not %T", ErrCodec, reply)
			return c.ended(serviceMethod, start, &Error{Method: serviceMethod, Err: err, Errs: []error{err}})
		}
	}
	c.budget.onCall()
	if hedge > 0 && idem && !keyed || hk != nil {
		return c.ended(serviceMethod, start, c.call(ctx, serviceMethod, args, reply, idem, keyed, timeout, hedge, hk, nil))
	}
	// The first attempt of most calls, kept apart from the retry loop: it
	// makes one pick and one attempt, and touches little else, so that a
	// call that succeeds pays for nothing it does not use (the loop's state,
	// its closures, the balancer's update channel). Everything past a
	// failed pick or a failed attempt is the loop's, in call.
	r, err := c.bal.Pick(ctx)
	if err != nil {
		return c.ended(serviceMethod, start, c.call(ctx, serviceMethod, args, reply, idem, keyed, timeout, hedge, nil, nil))
	}
	ep := c.endpoint(r.Endpoint.Addr)
	dialed, err := send(ctx, ep, serviceMethod, args, reply, timeout)
	if err == nil {
		r.Done(succeeded(dialed))
		if c.observed {
			c.observeAttempt(serviceMethod, r.Endpoint.Addr, 1, false, start, nil)
			c.observeCall(serviceMethod, start, nil)
		}
		return nil
	}
	return c.ended(serviceMethod, start, c.call(ctx, serviceMethod, args, reply, idem, keyed, timeout, hedge, nil,
		&attempt{r: r, err: err, dialed: dialed, start: start}))
}

// attempt is a request Call sent to one picked node and that failed: the
// pick and the error, which r's Done has not yet been told.
type attempt struct {
	r      balancer.Result
	err    error
	dialed bool      // it waited for a dial (see succeeded)
	start  time.Time // its pick's time, for the Observer; zero without one
}

// succeeded is the outcome of a request that succeeded for the balancer:
// balancer.Untimed when it waited for its connection's dial, whose time is
// not the node's latency (a new node's first call would otherwise look as
// slow as a TLS handshake to P2C); nil otherwise.
func succeeded(dialed bool) error {
	if dialed {
		return balancer.Untimed
	}
	return nil
}

// send sends one request on endpoint ep, dialling it if it has no
// connection, within the per-attempt timeout if there is one (timeout > 0).
// dialed says that it waited for a dial.
func send(ctx context.Context, ep *endpoint, serviceMethod string, args, reply any, timeout time.Duration) (dialed bool, err error) {
	actx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cn, dialed, err := ep.acquire(actx)
	if err != nil {
		return dialed, err
	}
	if err := cn.do(actx, serviceMethod, args, reply); err != nil {
		return dialed, redoIfAged(actx, ep, err, serviceMethod, args, reply)
	}
	return dialed, nil
}

// redoIfAged handles err, a failed request on one of ep's connections. A
// connection retired by age between get handing it out and the request's
// write (its replacement joined the pool in between) refuses the request
// before a byte leaves: the request then goes once more on what ep has now,
// rather than count as an attempt on a node that is fine. Any other error
// is returned as it is.
func redoIfAged(ctx context.Context, ep *endpoint, err error, serviceMethod string, args, reply any) error {
	if !isNotSent(err) || !errors.Is(err, errAged) {
		return err
	}
	cn, gerr := ep.get(ctx)
	if gerr != nil {
		return err
	}
	return cn.do(ctx, serviceMethod, args, reply)
}

// call is Call's general path: hedging, retries, waits for discovery after
// failed dials, and the Error. first, when not nil, is an attempt Call
// already made, which call settles before it goes on. keyed says idem comes
// from an idempotency key: the call is retried, but is not idempotent, and
// says when it fails that its outcome is unknown if a request of it may
// have run without an answer.
func (c *Client) call(ctx context.Context, serviceMethod string, args, reply any, idem, keyed bool, timeout, hedge time.Duration, hk *string, first *attempt) error {
	var (
		triedBuf [4]string
		tried    = triedBuf[:0] // excluded from picks; reset when discovery refreshes
		everBuf  [4]string
		ever     = everBuf[:0] // every endpoint tried, for the Error
		errs     []error
		attempts int    // every attempt, dials included
		sent     int    // attempts whose request may have left
		waits    int    // waits for a refreshed endpoint set
		version  uint64 // discovery's version when the first dial failed
		lastErr  error
		unknown  bool // a request left and got no answer: it may have run
		retrying bool // a retry's token is taken and its backoff over; its attempt is not made yet
	)
	remember := func() { // before tried is reset, and for the Error
		for _, a := range tried {
			if !slices.Contains(ever, a) {
				ever = append(ever, a)
			}
		}
	}
	fail := func(extra ...error) error {
		if retrying {
			// The call ends before its retry's attempt: no retry came
			// of the token.
			retrying = false
			c.budget.refund()
		}
		errs = append(errs, extra...)
		if keyed && unknown && !slices.Contains(errs, ErrOutcomeUnknown) {
			errs = append(errs, ErrOutcomeUnknown)
		}
		remember()
		// A copy: ever's first slots live in Call's frame.
		return &Error{Method: serviceMethod, Attempts: attempts, Tried: slices.Clone(ever), Err: lastErr, Errs: errs}
	}
	// refresh waits for discovery to answer a ResolveNow after failed dials
	// (or for the endpoint's backoff to end), at most twice per call and
	// at most a dial timeout each time.
	refresh := func(upd <-chan struct{}, until time.Time) error {
		if waits >= 2 {
			return errNoFreshSet
		}
		waits++
		c.stats.refreshWaits.Add(1)
		limit := time.Now().Add(c.opts.dialTimeout)
		if until.IsZero() || until.After(limit) {
			until = limit
		}
		// Health changes (our own quarantines) also publish pickers; wait
		// for discovery's answer, the endpoint's backoff, or the limit.
		for c.bal.StateVersion() == version {
			if err := c.wait(ctx, upd, until); err != nil {
				return err
			}
			if !time.Now().Before(until) {
				return nil
			}
			upd = c.bal.Updated()
		}
		return nil
	}
	// retry takes a token from the retry budget and waits out the backoff
	// before the next retry, or returns the error that ends the call: the
	// retry could not start before the deadline (checked first, so that
	// such a call spends no token), the budget is spent, or ctx ended or
	// the client closed during the wait. The retry is counted in Stats when
	// its attempt is made (see the loop), not here: ctx may end, or the
	// client close, after the wait (or before a wait of 0, which reads
	// neither) and before the attempt, and the call then ends with no
	// retry made, giving its token back (fail).
	retry := func() error {
		d := c.opts.retryBackoff.Delay(sent-1, nil)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
			return fail() // the retry could not start before the deadline
		}
		if !c.budget.withdraw() {
			c.stats.budgetExhausted.Add(1)
			return fail(ErrRetryBudget)
		}
		if err := c.sleep(ctx, d); err != nil {
			c.budget.refund() // no retry came of it
			return fail(err)
		}
		retrying = true
		return nil
	}
	var held balancer.Result // a pick the hedged path made but did not use
	var avoid []string       // nodes the hedged path found busy writing: not picked while others are free
	// A keyed call is retried, but not hedged: it is not idempotent, and
	// its key lets the server recognise a repeat, not two requests at once
	// on two nodes (see WithHedging).
	if hedge > 0 && idem && !keyed {
		h := c.hedged(ctx, serviceMethod, args, reply, hedge, timeout, hk)
		legs, legErrs := h.tried, h.errs
		held, avoid = h.held, h.busy
		if h.won {
			return nil
		}
		if err := h.unsentErr; err != nil {
			// As the loop below records an attempt that sent nothing,
			// and ends the call as it would when ctx is over or the
			// client closed.
			attempts++
			cerr := expired(ctx)
			err = attemptTimedOut(ctx, err, timeout, h.unsentAddr)
			lastErr = err
			errs = append(errs, err)
			tried = append(tried, h.unsentAddr)
			switch {
			case cerr != nil:
				return fail(cerr)
			case c.closed.Load():
				return fail(ErrClosed)
			}
			c.stats.unsent.Add(1)
		}
		if h.ok {
			// Every leg is an attempt whose request left, including one
			// withdrawn when the other failed for good.
			attempts += len(legs)
			sent += len(legs)
			tried = append(tried, legs...)
			errs = append(errs, legErrs...)
			if len(legErrs) > 0 {
				lastErr = legErrs[len(legErrs)-1]
			}
			// A leg withdrawn, or one that failed without an answer.
			unknown = len(legErrs) < len(legs) || slices.ContainsFunc(legErrs, noAnswer)
			switch {
			case expired(ctx) != nil:
				return fail(expired(ctx))
			case c.closed.Load():
				return fail(ErrClosed)
			case lastErr == nil || !retryable(lastErr) || sent >= c.opts.maxAttempts:
				return fail()
			}
			if err := retry(); err != nil {
				return err
			}
		}
	}
	for {
		var a attempt
		if first != nil {
			a, first = *first, nil
		} else {
			upd := c.bal.Updated()
			var r balancer.Result
			var err error
			if held.Done == nil {
				r, err = c.pick(ctx, hk, tried, avoid)
			} else {
				r, held = held, balancer.Result{}
			}
			if err != nil && errors.Is(err, balancer.ErrNoStateYet) {
				// The first answer from discovery is on its way.
				if werr := c.wait(ctx, upd, time.Time{}); werr != nil {
					lastErr = err
					return fail(err, werr)
				}
				continue
			}
			if err != nil {
				prev := lastErr
				lastErr = err
				errs = append(errs, err)
				if c.closed.Load() {
					return fail(ErrClosed) // the balancer closed with the client
				}
				if isNotSent(prev) {
					rerr := refresh(upd, time.Time{})
					if rerr == nil {
						remember()
						tried = tried[:0]
						continue
					}
					if !errors.Is(rerr, errNoFreshSet) {
						return fail(rerr) // ctx ended or the client closed during the wait
					}
				}
				return fail(ctxErr(ctx)...)
			}
			addr := r.Endpoint.Addr
			ep := c.endpoint(addr)
			// lastErr is nil until an attempt or a pick failed: the
			// first attempt of a call made here (a hash key's, or one
			// whose first pick failed) tests nothing more than that.
			if lastErr != nil {
				if isNotSent(lastErr) && slices.Contains(tried, addr) {
					// Every other node is excluded or gone: wait for a fresh set
					// or for this endpoint's backoff, not a redial of a stale
					// address.
					r.Done(errNoOutcome) // nothing was sent
					ep.mu.Lock()
					until := ep.retryAt
					ep.mu.Unlock()
					if err := refresh(upd, until); err != nil {
						if errors.Is(err, errNoFreshSet) {
							return fail()
						}
						return fail(err)
					}
					remember()
					tried = tried[:0]
					continue
				}
				if retrying {
					// The retry's attempt, counted now that it is made:
					// unless ctx ended or the client closed since its
					// backoff, which ends the call with no retry.
					if cerr := expired(ctx); cerr != nil {
						r.Done(errNoOutcome)
						return fail(cerr)
					}
					if c.closed.Load() {
						r.Done(errNoOutcome)
						return fail(ErrClosed)
					}
					retrying = false
					c.stats.retries.Add(1)
				}
			}

			a = attempt{r: r, start: c.now()}
			a.dialed, a.err = send(ctx, ep, serviceMethod, args, reply, timeout)
		}
		attempts++
		r, err := a.r, a.err
		addr := r.Endpoint.Addr
		if err != nil {
			if cerr := expired(ctx); cerr != nil {
				// The caller's own deadline or cancellation: not the
				// node's fault, whatever error the transport reported.
				r.Done(cerr)
				c.observeAttempt(serviceMethod, addr, attempts, false, a.start, err)
				lastErr = err
				errs = append(errs, err)
				if !slices.Contains(tried, addr) {
					tried = append(tried, addr)
				}
				unknown = unknown || noAnswer(err)
				if !idem && noAnswer(err) {
					// The request may have reached the server, which
					// may run it still: the caller must be told. (Not
					// when the server's answer came before the deadline
					// was seen to pass.)
					return fail(cerr, ErrOutcomeUnknown)
				}
				return fail(cerr)
			}
			err = attemptTimedOut(ctx, err, timeout, addr)
		}
		// The pick is done before the report: a panic in the Observer
		// (the Call's) leaves no request in flight in the balancer.
		if err == nil {
			r.Done(succeeded(a.dialed))
			c.observeAttempt(serviceMethod, addr, attempts, false, a.start, nil)
			return nil
		}
		r.Done(nodeOutcome(err))
		c.observeAttempt(serviceMethod, addr, attempts, false, a.start, err)
		lastErr = err
		errs = append(errs, err)
		if !slices.Contains(tried, addr) {
			tried = append(tried, addr)
		}
		if c.closed.Load() {
			if !isNotSent(err) && !noAnswer(err) {
				// The server answered (its own error): that is the
				// call's outcome, known, and the call was no longer
				// pending when the client closed.
				return fail()
			}
			unknown = unknown || noAnswer(err)
			if !idem && noAnswer(err) {
				return fail(ErrClosed, ErrOutcomeUnknown)
			}
			return fail(ErrClosed)
		}
		// A failed dial (or a refusal during the backoff it started) was
		// handled where it failed (endpoint.run: backoff, quarantine,
		// ResolveNow); a refreshed set is one newer than discovery's
		// version then.
		if de := (*DialError)(nil); errors.As(err, &de) {
			// The newest set a dial failed on: after a refresh whose
			// new nodes fail too, the next refresh waits for a set
			// newer than theirs.
			version = max(version, de.version)
		}
		if be := (*BackoffError)(nil); errors.As(err, &be) {
			// A refusal by a node still in the backoff of a dial that
			// failed on an older set: the set it was refused on, which
			// may be a refresh already waited for, is what the next
			// refresh waits to be replaced. (Its dial error's version
			// alone made that refresh end at once, on the set the call
			// had just been refused on.)
			version = max(version, be.version)
		}
		if isNotSent(err) && !isEncodedLate(err) {
			// Nothing left this process: try another node at once. Such
			// retries are bounded by the nodes (each is tried once), the
			// refresh waits and ctx, not by attempts or the budget.
			if !retryable(err) {
				return fail()
			}
			c.stats.unsent.Add(1)
			continue
		}
		if isEncodedLate(err) {
			// Nothing left either, but for want of this side's time: the
			// args took longer to encode than the attempt had, and would
			// on any node (retiring its connection each time). Retried
			// as an attempt, bounded by WithMaxAttempts and the budget,
			// with no outcome unknown.
			sent++
			if !retryable(err) || sent >= c.opts.maxAttempts {
				return fail()
			}
			if err := retry(); err != nil {
				return err
			}
			continue
		}
		sent++
		unknown = unknown || noAnswer(err)
		switch {
		case !retryable(err):
			return fail()
		case !idem:
			return fail(ErrOutcomeUnknown)
		case sent >= c.opts.maxAttempts:
			return fail()
		}
		if err := retry(); err != nil {
			return err
		}
	}
}

// pick picks a node for a retry: one not in tried (nodes this call tried
// already) nor in avoid (nodes its hedged attempt found busy writing other
// requests) when there is one. When every node is in one list or the other,
// a busy node is better than one that already failed this call: Exclude is a
// preference, and the balancer's fallback might return either. hk is the
// call's hash key (HashKey), nil without one.
func (c *Client) pick(ctx context.Context, hk *string, tried, avoid []string) (balancer.Result, error) {
	if len(avoid) == 0 {
		return c.pickFor(ctx, hk, tried)
	}
	r, err := c.pickFor(ctx, hk, append(slices.Clip(tried), avoid...))
	if err == nil && slices.Contains(tried, r.Endpoint.Addr) {
		r.Done(errNoOutcome) // nothing sent; pick again among the busy ones
		r, err = c.pickFor(ctx, hk, tried)
	}
	return r, err
}

// pickFor picks a node other than those in exclude when there is one, by
// the hash key hk when it is not nil.
func (c *Client) pickFor(ctx context.Context, hk *string, exclude []string) (balancer.Result, error) {
	if hk == nil {
		return c.bal.Pick(ctx, balancer.Exclude(exclude...))
	}
	return c.bal.Pick(ctx, balancer.HashKey(*hk), balancer.Exclude(exclude...))
}

// attemptTimedOut returns err, the error of an attempt on addr, as an
// ErrAttemptTimeout when the attempt's own timeout (timeout > 0) ended it
// and ctx, the call's, has not ended: a retryable failure of the node, not
// the caller's deadline. A failed dial (or a refusal in the backoff one
// started) is not: a dial that timed out did so on the dial timeout, which
// net reports as a context.DeadlineExceeded, however much of the attempt's
// time was left.
func attemptTimedOut(ctx context.Context, err error, timeout time.Duration, addr string) error {
	if timeout > 0 && errors.Is(err, context.DeadlineExceeded) && expired(ctx) == nil && !isDialFailure(err) {
		return fmt.Errorf("%w after %v on %s: %w", ErrAttemptTimeout, timeout, addr, err)
	}
	return err
}

// isDialFailure reports whether err is a failed dial's, or a refusal during
// the reconnect backoff a failed dial started.
func isDialFailure(err error) bool {
	var de *DialError
	var be *BackoffError
	return errors.As(err, &de) || errors.As(err, &be)
}

// noAnswer reports whether err, an attempt's error, is that of a request
// that may have left and run without the server's answer reaching the
// caller: not one that sent nothing, nor the server's own error reply, nor
// a reply that came and could not be read (ErrCodec, ErrMessageTooLarge:
// the server ran the request and answered).
func noAnswer(err error) bool {
	var se rpc.ServerError
	return err != nil && !isNotSent(err) && !errors.As(err, &se) &&
		!errors.Is(err, ErrCodec) && !errors.Is(err, ErrMessageTooLarge)
}

// errNoFreshSet ends a call whose dials failed and whose refresh waits are
// spent.
var errNoFreshSet = errors.New("rpcclient: no fresh endpoints")

// wait blocks until the balancer publishes a new picker, until (if not
// zero), ctx is done, or the client closes.
func (c *Client) wait(ctx context.Context, upd <-chan struct{}, until time.Time) error {
	var timer <-chan time.Time
	if !until.IsZero() {
		d := time.Until(until)
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-upd:
		return nil
	case <-timer:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.life.Done():
		return ErrClosed
	}
}

// sleep waits d, bounded by ctx and Close.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.life.Done():
		return ErrClosed
	}
}

// expired returns ctx's error, or context.DeadlineExceeded once its deadline
// has passed even if its timer has not fired yet (a transport timeout can
// beat it).
func expired(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

func ctxErr(ctx context.Context) []error {
	if err := ctx.Err(); err != nil {
		return []error{err}
	}
	return nil
}

// setKey gives args their idempotency key before the first attempt. An
// explicit key is always set. With key "", a key args already carry (set by
// the caller, or by an earlier Call with the same args, so that calling
// again after ErrOutcomeUnknown is recognised as a repeat) is kept, and
// otherwise a random one is made.
func setKey(args any, key string) error {
	ka, ok := args.(KeyedArgs)
	if !ok {
		return fmt.Errorf("rpcclient: WithIdempotencyKey: %T does not implement rpcclient.KeyedArgs", args)
	}
	if key == "" && ka.IdempotencyKey() != "" {
		return nil
	}
	if key == "" {
		var b [16]byte
		rand.Read(b[:])
		key = hex.EncodeToString(b[:])
	}
	ka.SetIdempotencyKey(key)
	if got := ka.IdempotencyKey(); got != key {
		// A key that did not stick (SetIdempotencyKey with a value
		// receiver sets a copy) would let the call be retried after it
		// may have run with no key, or another one, for the server to
		// recognise it by.
		return fmt.Errorf("rpcclient: WithIdempotencyKey: %T did not keep the key: IdempotencyKey returns %q after SetIdempotencyKey(%q) (pass a pointer, and give SetIdempotencyKey a pointer receiver)", args, got, key)
	}
	return nil
}

// nodeOutcome is what an attempt's error tells the balancer's breakers and
// outlier detection about the node. Attempts that sent nothing are no
// outcome there:
//   - A failed dial is the reconnect backoff's business. The call quarantines
//     the address, and the balancer lets a probe through when the backoff
//     ends. Counting dials in the breaker too would keep a node that is back
//     out for the breaker's whole open period: a one-node service restarted
//     after 8 s of downtime stayed unavailable for 28.7 s after it was back.
//   - A refusal during the backoff, or by a connection that had already died,
//     repeats what the failed dial or the connection's death already said.
//   - An attempt that ended while waiting for another call's dial sent
//     nothing; that dial's outcome is what counts. So did one that ended
//     while waiting for the connection's write slot, which another call's
//     write held (a large upload); that write's outcome counts.
//   - Args that do not encode are the caller's fault, and so are args
//     whose encoding outlasted the attempt's deadline or cancellation
//     (nothing was sent).
//
// Nor is a reply that arrived and does not decode into the caller's value
// (a *replyError): every node would answer the call so.
//
// Nor is an attempt whose connection this side closed for another caller's
// sake (a write that caller's deadline cut short, or a reply still arriving
// after its caller gave up): a *localCloseError. The request was sent, so
// the call treats it as any lost connection, but the node did nothing.
//
// Everything else, including a connection that dies with the request sent,
// counts.
func nodeOutcome(err error) error {
	if err == nil { // the success path: no errors.As, whose targets escape
		return nil
	}
	var de *DialError
	var be *BackoffError
	var dc *deadConnError
	var dw *dialWaitError
	var ee *encodeError
	var sw *slotWaitError
	var re *replyError
	// ErrClosed: this client's Close failed the call (a connection it
	// closed, a dial it ended), which says nothing about the node either.
	if errors.As(err, &de) || errors.As(err, &be) || errors.As(err, &dc) || errors.As(err, &dw) || errors.As(err, &ee) || errors.As(err, &sw) || errors.As(err, &re) ||
		isLocalClose(err) || errors.Is(err, ErrClosed) || isEncodedLate(err) {
		return errNoOutcome
	}
	return err
}

// errNoOutcome is what a pick that sent nothing reports to the balancer's
// Done: it wraps context.Canceled, which breaker.Classify excludes, so the
// node's breaker and ejection count neither a success nor a failure.
var errNoOutcome = fmt.Errorf("rpcclient: no request sent: %w", context.Canceled)
