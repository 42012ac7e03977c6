package rpcclient

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
)

// leg is one of the two requests of a hedged attempt.
type leg struct {
	addr   string
	done   func(error) // the balancer's Done
	cn     *conn
	pc     *pendingCall
	seq    uint64
	reply  any // a private reply value, copied into the caller's on a win
	ctx    context.Context
	cancel context.CancelFunc
	err    error
	over   bool
	// For the Observer: the leg's place among the call's attempts, when
	// it started, and whether it is the backup.
	n     int
	start time.Time
	hedge bool
}

// hedgeOutcome is what hedged reports to call.
type hedgeOutcome struct {
	// tried are the nodes a leg's request went to, and errs the legs'
	// errors in the order the legs ended: the last one is what the call
	// goes on from. Both are empty when no leg was sent, except for args
	// that do not encode: then the node they failed on, and that error.
	tried []string
	errs  []error
	// busy are nodes picked for a leg whose request never left: their
	// connection's write slot stayed busy with another request (or the
	// attempt's time ran out waiting for it). The call's next picks avoid
	// them.
	busy []string
	// unsentErr, when not nil, is the error of the last leg that failed on
	// its node (unsentAddr) before a byte of its request left, for a
	// reason other than a busy slot: an attempt that sent nothing, which
	// the call counts as its own loop counts one. Only when ok is false.
	unsentAddr string
	unsentErr  error
	won        bool // a leg's reply is in the caller's reply
	ok         bool // a leg was sent (or the args do not encode); false: go on as without hedging
	// held is a pick not yet done that the caller's normal path uses (see
	// hedged).
	held balancer.Result
}

// hedged makes the first attempt of an idempotent call with a backup: after
// delay without a reply, the same request goes to another node with a ready
// connection, if the retry budget allows; the first reply wins.
//
// The first leg waits for its connection's write slot, which another
// request's write may hold, at most the delay (or the attempt's time). If
// the slot stays busy, the request goes to another connected node instead,
// as the backup would have gone: it waits at most backupSlotWait there,
// spends no retry token (only one request is out) and gets no backup. When
// the picked node has no ready connection, ok is false and held is that
// pick, not yet done: the caller's normal path uses it, so that it dials the
// node. (Dropping the pick and picking again would, with hedging on, keep a
// node that was never connected from ever being dialled by idempotent calls.)
func (c *Client) hedged(ctx context.Context, method string, args, reply any, delay, timeout time.Duration, hk *string) (out hedgeOutcome) {
	// reply is a non-nil pointer, or nil to discard the reply (Call
	// checked): the legs' replies are then discarded too.
	rv := reflect.ValueOf(reply)
	var (
		startErr  error     // the last start's, when it sent nothing
		startAddr string    // its node
		startBusy bool      // and it was busy
		startAt   time.Time // and when it started (for the Observer)
		n         int       // the legs started, each an attempt of the call
	)
	// observe reports a leg's attempt to the Observer, if there is one.
	observe := func(l *leg, err error) {
		c.observeAttempt(method, l.addr, l.n, l.hedge, l.start, err)
	}
	// start sends a leg's request once the connection's write slot is
	// free within wait (see conn.start); hedge says it is the backup. A
	// request that never left is recorded: its node in out.busy when the
	// slot was what it waited for.
	start := func(r balancer.Result, cn *conn, wait time.Duration, hedge bool) *leg {
		l := &leg{addr: r.Endpoint.Addr, done: r.Done, cn: cn, start: c.now(), hedge: hedge}
		if reply != nil {
			l.reply = reflect.New(rv.Type().Elem()).Interface()
		}
		l.ctx, l.cancel = ctx, func() {}
		if timeout > 0 {
			l.ctx, l.cancel = context.WithTimeout(ctx, timeout)
		}
		pc, seq, err := cn.start(l.ctx, method, args, l.reply, wait)
		if err != nil {
			// The slot stayed busy, or the attempt's own time ran out
			// waiting for it while the call's has not. (Not a write that
			// timed out: that is the node's failure, and an attempt.)
			var sw *slotWaitError
			busy := errors.Is(err, errWriteBusy) || (errors.As(err, &sw) && expired(ctx) == nil)
			l.cancel()
			r.Done(legOutcome(ctx, err))
			if isNotSent(err) {
				startErr, startAddr, startBusy, startAt = err, l.addr, busy, l.start
				if busy {
					out.busy = append(out.busy, l.addr)
				}
				return nil
			}
			// Part of the request may have left before the write failed:
			// an attempt, over already, which the caller counts and
			// retries by the usual rules.
			l.over, l.err = true, err
			out.errs = append(out.errs, err)
			n++
			l.n = n
			observe(l, err)
			return l
		}
		n++
		l.pc, l.seq, l.n = pc, seq, n
		return l
	}
	r1, err := c.pickFor(ctx, hk, nil)
	if err != nil {
		return out
	}
	cn1 := c.endpoint(r1.Endpoint.Addr).ready()
	if cn1 == nil {
		out.held = r1 // the normal path dials it
		return out
	}
	hedging := c.opts.maxAttempts >= 2 // a backup is a second attempt
	first := start(r1, cn1, delay, false)
	if first == nil && len(out.busy) > 0 {
		if r, cn := c.other(ctx, hk, r1.Endpoint.Addr); cn != nil {
			first, hedging = start(r, cn, backupSlotWait, false), false
		}
	}
	if first == nil {
		if ee := (*encodeError)(nil); errors.As(startErr, &ee) {
			// The args do not encode: another node would fail the same.
			// An attempt, on the node it failed on.
			out.tried, out.errs, out.ok = []string{startAddr}, []error{startErr}, true
			c.observeAttempt(method, startAddr, 1, false, startAt, startErr)
		} else if startErr != nil && !startBusy {
			// The node failed before a byte left (a write that timed
			// out on a full socket, a connection that died): the call
			// records it as an attempt that sent nothing.
			out.unsentAddr, out.unsentErr = startAddr, startErr
			c.observeAttempt(method, startAddr, 1, false, startAt, attemptTimedOut(ctx, startErr, timeout, startAddr))
		}
		return out
	}
	var hedge <-chan time.Time
	if hedging {
		// The delay counts from the first request's write.
		timer := time.NewTimer(delay)
		defer timer.Stop()
		hedge = timer.C
	}
	legs := []*leg{first}
	// A panic in the Observer (the Call's) must not leave a leg in
	// flight: its pick not done, its request pending. Every return
	// withdraws the legs still out already, so this does nothing then.
	defer func() { withdraw(legs) }()

	// end settles a leg: its outcome goes to the balancer, the winner's
	// reply to the caller. It returns the leg's error as recorded: a leg's
	// own timeout is an ErrAttemptTimeout, which is retryable. Any other
	// error (a server's, a dead connection's) is the leg's as it came,
	// as on the unhedged path: a server error is no timeout, and must not
	// count against the node as one. The balancer hears the error as on
	// the unhedged path too (nodeOutcome): a connection this side closed
	// for another caller's sake is no outcome of the node's.
	end := func(l *leg, err error) error {
		l.over = true
		l.cancel()
		err = attemptTimedOut(ctx, err, timeout, l.addr)
		l.err = err
		if err != nil {
			out.errs = append(out.errs, err)
		}
		l.done(legOutcome(ctx, err))
		observe(l, err)
		return err
	}
	// withdrawAll withdraws the legs still in flight (see withdraw), each
	// an attempt withdrawn for the Observer.
	withdrawAll := func() {
		for _, l := range legs {
			if !l.over {
				l.withdraw()
				observe(l, context.Canceled)
			}
		}
	}
	for {
		var done0, done1, ctx0, ctx1 <-chan struct{}
		if !legs[0].over {
			done0, ctx0 = legs[0].pc.done, legs[0].ctx.Done()
		}
		if len(legs) > 1 && !legs[1].over {
			done1, ctx1 = legs[1].pc.done, legs[1].ctx.Done()
		}
		if done0 == nil && done1 == nil {
			break // every leg failed
		}
		var l *leg
		var err error
		select {
		case <-hedge:
			hedge = nil
			if second := c.backup(ctx, hk, first.addr, start); second != nil {
				legs = append(legs, second)
			}
			continue
		case <-done0:
			l, err = legs[0], legs[0].cn.finish(legs[0].pc)
		case <-done1:
			l, err = legs[1], legs[1].cn.finish(legs[1].pc)
		case <-ctx0:
			l, err = legs[0], legs[0].timedOut()
		case <-ctx1:
			l, err = legs[1], legs[1].timedOut()
		}
		if err = end(l, err); err == nil {
			if l != first {
				c.stats.hedgeWins.Add(1) // the backup answered first
			}
			if reply != nil {
				rv.Elem().Set(reflect.ValueOf(l.reply).Elem())
			}
			withdrawAll()
			out.tried, out.errs, out.won, out.ok = addrs(legs), nil, true, true
			return out
		}
		if !retryable(err) || expired(ctx) != nil {
			withdrawAll() // not worth waiting for the other leg
			break
		}
	}
	out.tried, out.ok = addrs(legs), true
	return out
}

// legOutcome is what a leg's error tells the balancer about its node: as on
// the unhedged path (call), a leg that failed once the caller's own ctx had
// ended is ctx's error, whatever the transport reported (a write its
// deadline or cancellation cut short), and otherwise nodeOutcome.
func legOutcome(ctx context.Context, err error) error {
	if err != nil {
		if cerr := expired(ctx); cerr != nil {
			return cerr
		}
	}
	return nodeOutcome(err)
}

// other picks a node other than addr that has a connection up, for a leg
// of a hedged call. It returns the pick and the connection, or a nil
// connection (and the pick already done) when there is none.
func (c *Client) other(ctx context.Context, hk *string, addr string) (balancer.Result, *conn) {
	r, err := c.pickFor(ctx, hk, []string{addr})
	if err != nil {
		return balancer.Result{}, nil
	}
	var cn *conn
	if r.Endpoint.Addr != addr {
		cn = c.endpoint(r.Endpoint.Addr).ready()
	}
	if cn == nil {
		r.Done(context.Canceled) // not an outcome: nothing was sent
	}
	return r, cn
}

// backup starts the second leg on a node other than firstAddr that has a
// connection up, if the retry budget allows; nil otherwise. The budget is
// asked last, so that a backup with no node to go to spends no token.
func (c *Client) backup(ctx context.Context, hk *string, firstAddr string, start func(balancer.Result, *conn, time.Duration, bool) *leg) *leg {
	r, cn := c.other(ctx, hk, firstAddr)
	if cn == nil {
		return nil
	}
	if !c.budget.withdraw() {
		c.stats.budgetExhausted.Add(1)
		r.Done(context.Canceled)
		return nil
	}
	l := start(r, cn, backupSlotWait, true)
	if l == nil {
		c.budget.refund() // the backup sent nothing
		return nil
	}
	c.stats.hedges.Add(1)
	return l
}

// backupSlotWait is how long a backup, or a request moved off a busy first
// node, waits for its connection's write slot, which another request's
// write holds, before it is given up. The hedged call's loop waits with it,
// so the first leg's reply waits too: long enough for a small request's
// write, short against a large upload's.
const backupSlotWait = time.Millisecond

// timedOut withdraws a leg whose context ended; if its reply was already
// being read, it returns that outcome instead.
func (l *leg) timedOut() error {
	err := l.cn.abandon(l.pc, l.seq, l.ctx.Err())
	if err == errAbandoned {
		err = l.ctx.Err()
	}
	return err
}

// withdraw abandons the legs still in flight. It is not their nodes' fault,
// so the balancer hears context.Canceled, which it does not count. A leg's
// reply is its own (see leg.reply), so a reply the reader has already
// taken is left to it (conn.drop): the call does not wait for it, and its
// connection, which the other calls on it still need, is not closed for it.
func withdraw(legs []*leg) {
	for _, o := range legs {
		o.withdraw()
	}
}

// withdraw abandons l if it is still in flight (see withdraw).
func (l *leg) withdraw() {
	if !l.over {
		l.over = true
		l.cancel()
		l.cn.drop(l.pc, l.seq)
		l.done(context.Canceled)
	}
}

func addrs(legs []*leg) []string {
	var out []string
	for _, l := range legs {
		if !slices.Contains(out, l.addr) {
			out = append(out, l.addr)
		}
	}
	return out
}
