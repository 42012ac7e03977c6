package rpcclient

import (
	"context"
	"errors"
	"fmt"
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
}

// hedged makes the first attempt of an idempotent call with a backup: after
// delay without a reply, the same request goes to another node with a ready
// connection, if the retry budget allows; the first reply wins. It reports
// the endpoints it used and, when no leg won, the legs' errors in the order
// the legs ended: the last one is what the call goes on from. ok is false
// when nothing could be sent (the caller then proceeds as without hedging).
// When the picked node has no ready connection, ok is false and held is that
// pick, not yet done: the caller's normal path uses it, so that it dials the
// node. (Dropping the pick and picking again would, with hedging on, keep a
// node that was never connected from ever being dialled by idempotent calls.)
func (c *Client) hedged(ctx context.Context, method string, args, reply any, delay, timeout time.Duration) (tried []string, errs []error, won, ok bool, held balancer.Result) {
	rv := reflect.ValueOf(reply)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil, nil, false, false, balancer.Result{}
	}
	var startErr error
	// start sends a leg's request once the connection's write slot is
	// free within wait (see conn.start): the first leg's within the
	// delay, the backup's within backupSlotWait.
	start := func(r balancer.Result, cn *conn, wait time.Duration) *leg {
		l := &leg{addr: r.Endpoint.Addr, done: r.Done, cn: cn, reply: reflect.New(rv.Type().Elem()).Interface()}
		l.ctx, l.cancel = ctx, func() {}
		if timeout > 0 {
			l.ctx, l.cancel = context.WithTimeout(ctx, timeout)
		}
		pc, seq, err := cn.start(l.ctx, method, args, l.reply, wait)
		if err != nil {
			l.cancel()
			r.Done(nodeOutcome(err))
			if isNotSent(err) {
				startErr = err
				return nil
			}
			// Part of the request may have left before the write failed:
			// an attempt, over already, which the caller counts and
			// retries by the usual rules.
			l.over, l.err = true, err
			errs = append(errs, err)
			return l
		}
		l.pc, l.seq = pc, seq
		return l
	}
	r1, err := c.bal.Pick(ctx)
	if err != nil {
		return nil, nil, false, false, balancer.Result{}
	}
	cn1 := c.endpoint(r1.Endpoint.Addr).ready()
	if cn1 == nil {
		return nil, nil, false, false, r1 // the normal path dials it
	}
	// The delay counts from here, the wait for a busy connection's write
	// slot included: the first leg waits for it at most the delay, and
	// if another request's write holds it that long, the request goes to
	// another node instead, as the backup would have. Only one request is
	// out then, so it spends no retry token, and there is no backup.
	timer := time.NewTimer(delay)
	defer timer.Stop()
	hedge := timer.C
	first := start(r1, cn1, delay)
	if first == nil && errors.Is(startErr, errWriteBusy) {
		if r, cn := c.other(ctx, r1.Endpoint.Addr); cn != nil {
			first, hedge = start(r, cn, waitAsCtxAllows), nil
		}
	}
	if first == nil {
		if ee := (*encodeError)(nil); errors.As(startErr, &ee) {
			// The args do not encode: another node would fail the same.
			return []string{r1.Endpoint.Addr}, []error{startErr}, false, true, balancer.Result{}
		}
		return nil, nil, false, false, balancer.Result{}
	}
	legs := []*leg{first}

	// end settles a leg: its outcome goes to the balancer, the winner's
	// reply to the caller. It returns the leg's error as recorded: a leg's
	// own timeout is an ErrAttemptTimeout, which is retryable. Any other
	// error (a server's, a dead connection's) is the leg's as it came,
	// as on the unhedged path: a server error is no timeout, and must not
	// count against the node as one.
	end := func(l *leg, err error) error {
		l.over = true
		l.cancel()
		if timeout > 0 && errors.Is(err, context.DeadlineExceeded) && expired(ctx) == nil {
			err = fmt.Errorf("%w after %v on %s: %w", ErrAttemptTimeout, timeout, l.addr, err)
		}
		l.err = err
		if err != nil {
			errs = append(errs, err)
		}
		l.done(err)
		return err
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
			if c.opts.maxAttempts < 2 {
				continue // a backup is a second attempt
			}
			if second := c.backup(ctx, first.addr, start); second != nil {
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
			rv.Elem().Set(reflect.ValueOf(l.reply).Elem())
			withdraw(legs)
			return addrs(legs), nil, true, true, balancer.Result{}
		}
		if !retryable(err) || expired(ctx) != nil {
			withdraw(legs) // not worth waiting for the other leg
			return addrs(legs), errs, false, true, balancer.Result{}
		}
	}
	return addrs(legs), errs, false, true, balancer.Result{}
}

// other picks a node other than addr that has a connection up, for a leg
// of a hedged call. It returns the pick and the connection, or a nil
// connection (and the pick already done) when there is none.
func (c *Client) other(ctx context.Context, addr string) (balancer.Result, *conn) {
	r, err := c.bal.Pick(ctx, balancer.Exclude(addr))
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
func (c *Client) backup(ctx context.Context, firstAddr string, start func(balancer.Result, *conn, time.Duration) *leg) *leg {
	r, cn := c.other(ctx, firstAddr)
	if cn == nil {
		return nil
	}
	if !c.budget.withdraw() {
		r.Done(context.Canceled)
		return nil
	}
	l := start(r, cn, backupSlotWait)
	if l == nil {
		c.budget.refund() // the backup sent nothing
	}
	return l
}

// backupSlotWait is how long a backup waits for its connection's write
// slot, which another request's write holds, before it is given up. The
// hedged call's loop waits with it, so the first leg's reply waits too:
// long enough for a small request's write, short against a large upload's.
const backupSlotWait = time.Millisecond

// timedOut withdraws a leg whose context ended; if its reply was already
// being read, it returns that outcome instead.
func (l *leg) timedOut() error {
	err := l.cn.abandon(l.pc, l.seq)
	if err == errAbandoned {
		err = l.ctx.Err()
	}
	return err
}

// withdraw abandons the legs still in flight. It is not their nodes' fault,
// so the balancer hears context.Canceled, which it does not count.
func withdraw(legs []*leg) {
	for _, o := range legs {
		if !o.over {
			o.over = true
			o.cancel()
			o.cn.abandon(o.pc, o.seq)
			o.done(context.Canceled)
		}
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
