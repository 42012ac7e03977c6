package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/rpc"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// HeartbeatService and HeartbeatMethod name the server-side heartbeat that
// RegisterHeartbeat installs.
const (
	HeartbeatService = "Dialtone"
	HeartbeatMethod  = HeartbeatService + ".Ping"
)

// conn is one TCP connection speaking net/rpc. Unlike rpc.Client, a call
// that is abandoned (its context done) is removed from the pending table at
// once and its late reply is discarded, so nothing leaks; and a reader that
// sees the peer hang (heartbeat) or misbehave (oversized message) closes the
// connection and releases every pending call.
//
// One reader goroutine and one heartbeat goroutine belong to each conn; close
// stops both and waits for them.
type conn struct {
	addr   string
	nc     net.Conn
	codec  *codec
	opts   *options
	onDead func(*conn) // tells the endpoint, from the reader goroutine
	// onServes tells the endpoint, from the reader goroutine, that the
	// first reply came: the peer serves (see endpoint.connServes).
	onServes func(*conn)

	// wslot serializes writes. It is a channel so that a call waiting
	// behind a write that a hung peer blocks gives up at its deadline, and
	// the heartbeat's ping at its timeout.
	wslot chan struct{}
	wdl   time.Time // the write deadline set on nc; under wslot

	// retired is set when the connection takes no new calls: it closes
	// once its pending calls have their replies. That is when a request
	// could not be encoded (broken, set first: what of it was buffered or
	// sent leaves the gob stream unusable for writing, pings included), or
	// when a replacement for a connection past its maximum age joined the
	// pool (see markAged; the stream is fine, and the heartbeat goes on).
	retired atomic.Bool
	broken  atomic.Bool
	drained atomic.Bool // retired because its endpoint left discovery (see endpoint.drain)
	// expires is when the connection is past its maximum age (see
	// WithMaxConnectionAge); zero without one.
	expires time.Time

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]*pendingCall
	// reading is set while the reader holds a call it took out of pending
	// (its reply's body is arriving or being decoded), so that inflight
	// still counts it: the drain and a retired connection close only
	// once that reply is delivered. Set under mu, with the call's removal
	// from pending; cleared once the call has its outcome.
	reading atomic.Bool
	err     error // set once when the conn dies
	dead    chan struct{}

	reads atomic.Uint64 // messages read: a reply proves the connection (proven)
	born  time.Time     // when the connection was made
	// vouched is how many bytes written the peer has shown it read: a
	// reply to a request says the server read it, and all before it
	// (net/rpc reads requests in order). The reader sets it; the
	// heartbeat reads it.
	vouched atomic.Int64
	// counted is set once the endpoint has counted the connection's death
	// (endpoint.lostLocked); under the endpoint's mu.
	counted bool
	// bodySeq is the Seq of the call whose reply body the reader is
	// reading, 0 between bodies; abandon reads it.
	bodySeq atomic.Uint64
	wg      sync.WaitGroup
}

// pendingCall is one request waiting for its reply.
type pendingCall struct {
	reply any
	err   error
	done  chan struct{}
	end   atomic.Int64 // the bytes written by the end of the request; 0 until known
}

var pendingPool = sync.Pool{New: func() any { return &pendingCall{done: make(chan struct{}, 1)} }}

// newConn starts the connection's goroutines; they are counted in both the
// conn's own WaitGroup and the client's (cwg), so Client.Close can wait for
// every connection, including dead ones nobody closed.
func newConn(addr string, nc net.Conn, o *options, onDead, onServes func(*conn), cwg *sync.WaitGroup) *conn {
	c := &conn{
		addr: addr, nc: nc, opts: o, onDead: onDead, onServes: onServes,
		codec:   newCodec(nc, o.maxMessage),
		pending: make(map[uint64]*pendingCall),
		dead:    make(chan struct{}),
		wslot:   make(chan struct{}, 1),
		born:    time.Now(),
	}
	if o.maxConnAge > 0 {
		// In float, capped: an age near math.MaxInt64 jittered up
		// wrapped negative, and the connection was born past its age.
		age := min(float64(o.maxConnAge)*(0.9+0.2*rand.Float64()), math.MaxInt64/2)
		c.expires = c.born.Add(time.Duration(age))
	}
	c.wg.Add(1)
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		c.read()
	}()
	if o.heartbeat > 0 || o.readTimeout > 0 {
		c.wg.Add(1)
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			c.heartbeat()
		}()
	}
	return c
}

// do sends one request and waits for its reply, ctx, or the connection's
// death. The error is wrapped in errNotSent when nothing was written.
func (c *conn) do(ctx context.Context, method string, args, reply any) error {
	pc, seq, err := c.start(ctx, method, args, reply, waitAsCtxAllows)
	if err != nil {
		return err
	}
	if ctx.Done() == nil { // context.Background: a plain receive, not a select
		<-pc.done
		return c.finish(pc)
	}
	select {
	case <-pc.done:
		return c.finish(pc)
	case <-ctx.Done():
		if err := c.abandon(pc, seq, ctx.Err()); err != errAbandoned {
			return err
		}
		return ctx.Err()
	}
}

// start registers a pending call and writes its request. The reply will be
// decoded into reply; pc.done is signalled once. The caller then calls
// finish after pc.done, or abandon. ctx bounds the wait for the write slot
// and, through a write deadline, the write itself (its cancellation too,
// for a request larger than writeChunk: see countingWriter); a ctx already
// done when the slot is taken writes nothing. A slot another write holds is waited
// for as long as ctx allows with wait waitAsCtxAllows, and at most wait
// otherwise, after which the call fails with errWriteBusy (nothing sent):
// a hedged call's legs must not wait behind another request's long write
// (the first waits at most the hedge delay, a backup or a request moved to
// another node backupSlotWait), but may wait out a short one. A wait that
// ctx ends is a *slotWaitError.
func (c *conn) start(ctx context.Context, method string, args, reply any, wait time.Duration) (*pendingCall, uint64, error) {
	select {
	case c.wslot <- struct{}{}: // the common case: the slot is free (one channel, no select over three)
	default:
		if err := c.waitSlot(ctx, wait); err != nil {
			return nil, 0, err
		}
	}
	if c.retired.Load() && (c.broken.Load() || method != HeartbeatMethod) {
		<-c.wslot
		return nil, 0, notSent(&deadConnError{c.retiredErr()})
	}
	// A call whose context is already done sends nothing. Its deadline,
	// past, would time the write out at once, and a write that fails
	// closes the connection (the gob stream is unusable after it), failing
	// every other call on it for the one caller's lateness.
	if err := expired(ctx); err != nil {
		<-c.wslot
		return nil, 0, notSent(fmt.Errorf("rpcclient: %s: request not sent: %w", c.addr, err))
	}
	pc := pendingPool.Get().(*pendingCall)
	pc.reply, pc.err = reply, nil
	pc.end.Store(0)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		<-c.wslot
		pendingPool.Put(pc)
		return nil, 0, notSent(&deadConnError{err})
	}
	// Again under mu: a connection retired by age (markAged, which does
	// not take the write slot) since the look above may have found its
	// pending table empty in closeIfRetired, which counts it under mu,
	// and be closing: a request entered now would be written and then
	// failed by that close. One entered before the count keeps the
	// connection open until its reply.
	if c.retired.Load() && method != HeartbeatMethod {
		c.mu.Unlock()
		<-c.wslot
		pendingPool.Put(pc)
		return nil, 0, notSent(&deadConnError{c.retiredErr()})
	}
	c.seq++
	seq := c.seq
	c.pending[seq] = pc
	c.mu.Unlock()

	if dl, _ := ctx.Deadline(); !dl.Equal(c.wdl) {
		c.nc.SetWriteDeadline(dl) // the zero time: none
		c.wdl = dl
	}
	sent, werr := c.codec.write(ctx, &rpc.Request{ServiceMethod: method, Seq: seq}, args)
	// A request whose deadline passed (or, for a large one, whose ctx
	// was cancelled) while it was being encoded sent nothing, but what
	// gob buffered of it (type definitions included) leaves the stream
	// unusable for writing, as after an encoding error: the connection
	// is retired, not closed, and the calls in flight on it still get
	// their replies. Closing it failed them all for the one caller's
	// lateness.
	late := werr != nil && isEncodedLate(werr)
	if werr != nil && (late || errors.Is(werr, ErrCodec)) {
		c.broken.Store(true)
		c.retired.Store(true) // before the slot is free: no write follows this one
	}
	if werr == nil {
		pc.end.Store(c.codec.out.n.Load()) // before the slot is free: no other request's bytes yet
		<-c.wslot
		return pc, seq, nil
	}
	<-c.wslot
	c.mu.Lock()
	delete(c.pending, seq)
	c.mu.Unlock()
	if late {
		c.closeIfRetired()
		return nil, 0, notSent(fmt.Errorf("rpcclient: %s: request not sent: %w", c.addr, werr))
	}
	if errors.Is(werr, ErrCodec) {
		// The caller's args: the server never gets a whole request, so
		// nothing runs, and the node is not at fault. The calls in flight
		// on this connection still get their replies.
		c.closeIfRetired()
		return nil, 0, notSent(&encodeError{werr})
	}
	cause := fmt.Errorf("%w: write: %v", ErrConnClosed, werr)
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		cause = &localCloseError{cause} // the caller's deadline, not the peer
	}
	c.fail(cause)
	err := fmt.Errorf("%w: write to %s: %w", ErrConnClosed, c.addr, werr)
	if f := c.failure(); isNotSent(f) {
		// The connection died of a cause that says the peer read
		// nothing written on it (the reader's tlsRefusal: the server
		// refused the TLS handshake), this request included.
		return nil, 0, f
	}
	if !sent {
		// Not a byte of this request left: the peer died before it.
		return nil, 0, notSent(err)
	}
	return nil, 0, err
}

// waitAsCtxAllows is start's and waitSlot's wait for a write slot bounded
// by ctx alone.
const waitAsCtxAllows time.Duration = -1

// waitSlot waits for the write slot while another call writes, bounded by
// the connection's death, ctx and, unless it is waitAsCtxAllows, limit. On
// success the caller holds the slot.
func (c *conn) waitSlot(ctx context.Context, limit time.Duration) error {
	var over <-chan time.Time
	if limit >= 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		over = t.C
	}
	select {
	case c.wslot <- struct{}{}:
		return nil
	case <-c.dead:
		return notSent(&deadConnError{c.failure()})
	case <-ctx.Done():
		// Behind a write the peer does not drain: nothing of ours left.
		return notSent(&slotWaitError{fmt.Errorf("%w: %s: waiting to write: %w", ErrConnClosed, c.addr, ctx.Err())})
	case <-over:
		return notSent(errWriteBusy)
	}
}

// slotWaitError is start's error for a call whose ctx ended while it waited
// for the connection's write slot: nothing of its request left.
type slotWaitError struct{ err error }

func (e *slotWaitError) Error() string { return e.err.Error() }
func (e *slotWaitError) Unwrap() error { return e.err }

// localCloseError is the error of the calls on a connection that this side
// closed for one caller's sake: that caller's write deadline passed with its
// request half written (the gob stream is unusable after it), or its caller
// gave up on a reply still arriving (see abandon). The calls beside it lost
// the connection, and may be retried, but the node did nothing wrong: it is
// no outcome for its breaker (see nodeOutcome).
type localCloseError struct{ err error }

func (e *localCloseError) Error() string { return e.err.Error() }
func (e *localCloseError) Unwrap() error { return e.err }

// isLocalClose reports whether err closed a connection for one caller's
// sake: no sign about the peer (see endpoint.lostLocked).
func isLocalClose(err error) bool {
	var lc *localCloseError
	return errors.As(err, &lc)
}

// errWriteBusy is start's error for a connection whose write slot another
// request held for longer than the caller would wait. It wraps
// context.Canceled: nothing was sent, and it is no outcome of the node's.
var errWriteBusy = fmt.Errorf("rpcclient: connection busy writing another request: %w", context.Canceled)

// errRetired closes a connection retired after a request could not be
// encoded, or whose ctx ended while it was encoded (see errEncodedLate),
// and errAged one replaced after its maximum age.
var (
	errRetired = fmt.Errorf("%w: retired after a request could not be sent whole (its args did not encode, or its ctx ended while they were encoded)", ErrConnClosed)
	errAged    = fmt.Errorf("%w: replaced after its maximum age", ErrConnClosed)
	errDrained = fmt.Errorf("%w: its endpoint left discovery and was drained", ErrConnClosed)
)

// isRetired reports whether err closed a retired connection: this side's
// decision, no sign about the peer.
func isRetired(err error) bool {
	return errors.Is(err, errRetired) || errors.Is(err, errAged) || errors.Is(err, errDrained)
}

// markAged retires a connection past its maximum age: it takes no new
// calls, and closes once its calls in flight have their replies, which the
// caller starts with closeIfRetired once it has released the endpoint's
// lock (closing calls back into the endpoint). Its heartbeat goes on.
func (c *conn) markAged() { c.retired.Store(true) }

// aged reports whether the connection is past its maximum age.
func (c *conn) aged() bool { return !c.expires.IsZero() && time.Now().After(c.expires) }

// retiredErr returns why the connection was retired.
func (c *conn) retiredErr() error {
	if c.broken.Load() {
		return errRetired
	}
	if c.drained.Load() {
		return errDrained
	}
	return errAged
}

// encodeError is the error of a call whose args could not be encoded. It
// is the caller's, not the node's, and is not retried.
type encodeError struct{ err error }

func (e *encodeError) Error() string { return e.err.Error() }
func (e *encodeError) Unwrap() error { return e.err }

// failure returns why the connection died; nil while it lives. A cause
// marked not sent (notSent) says that the peer read nothing written on the
// connection; only the reader sets one, for a TLS handshake the server
// refused (tlsRefusal).
func (c *conn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// closeIfRetired closes a retired connection once no call is pending. Every
// path that takes a call out of the pending table calls it; retired is set
// before the retiring call leaves the table, so the last one out sees it.
func (c *conn) closeIfRetired() {
	if c.retired.Load() && c.inflight() == 0 {
		c.fail(c.retiredErr())
	}
}

// deadConnError is start's refusal of a connection that had already died:
// its death was reported when it happened, so a call that finds it dead and
// sends nothing says nothing new about the node.
type deadConnError struct{ err error }

func (e *deadConnError) Error() string { return e.err.Error() }
func (e *deadConnError) Unwrap() error { return e.err }

// finish returns the outcome of a call whose done was signalled.
func (c *conn) finish(pc *pendingCall) error {
	err := pc.err
	pendingPool.Put(pc)
	return err
}

// errAbandoned is abandon's result when the call was withdrawn before the
// reader took it.
var errAbandoned = errors.New("rpcclient: call abandoned")

// abandon withdraws a pending call. If the reader already took it (and may
// be decoding into its reply), abandon waits for the reader to finish, so
// that nobody writes the reply after the caller moved on, and returns the
// call's outcome; otherwise errAbandoned, and a late reply is discarded.
//
// A reply whose body is still on its way after abandonGrace (the reader
// waits on the socket for it) closes the connection, which ends the
// reader's decoding at once: a large reply on a slow link would otherwise
// hold the caller long past its deadline, and it blocks every other reply
// on the connection anyway. A body that has arrived and is only being
// decoded is waited for: closing would end nothing but the calls beside it.
// The calls beside lost the connection for this caller's sake (a
// *localCloseError, no outcome of the node's); this caller's own error is
// the connection's loss with cause, its ctx's error: a per-attempt timeout
// that fired while the node's reply trickled in is the node's slowness, as
// one that fired before the reply started (see attemptTimedOut), and the
// caller's own deadline or cancellation is the caller's.
func (c *conn) abandon(pc *pendingCall, seq uint64, cause error) error {
	if c.unpend(seq) {
		return errAbandoned // pc is dropped, not pooled: the reader no longer knows it
	}
	select {
	case <-pc.done:
		return c.finish(pc)
	default:
	}
	t := time.NewTicker(abandonGrace)
	defer t.Stop()
	for {
		select {
		case <-pc.done:
			return c.finish(pc)
		case <-t.C:
			// waiting first: the reader clears bodySeq before it reads
			// the next header, so a wait seen here with bodySeq still
			// seq is a wait for this body. A look that falls between
			// two reads of the socket is repeated at the next tick.
			if c.codec.in.waiting.Load() && c.bodySeq.Load() == seq {
				closed := &localCloseError{fmt.Errorf("%w: %s: a reply was still arriving %v after its caller gave up", ErrConnClosed, c.addr, abandonGrace)}
				c.fail(closed)
				<-pc.done
				if err := c.finish(pc); !errors.Is(err, closed) {
					return err // the reply, or the connection's death, came first
				}
				return fmt.Errorf("%w: %s: its reply was still arriving %v after the attempt ended: %w", ErrConnClosed, c.addr, abandonGrace, cause)
			}
		}
	}
}

// drop withdraws a pending call whose reply value nobody else reads (a
// hedged leg's private reply). Unlike abandon, it neither waits for a reply
// the reader has already taken nor closes the connection when that reply's
// body is slow to arrive: the reader finishes it into the private value,
// and the other calls on the connection get their replies after it. pc is
// not pooled unless it was still pending.
func (c *conn) drop(pc *pendingCall, seq uint64) {
	if c.unpend(seq) {
		return // dropped, as abandon does: the reader no longer knows it
	}
	select {
	case <-pc.done:
		pendingPool.Put(pc) // the reader is done with it
	default: // the reader still holds it: left to the garbage collector
	}
}

// unpend removes call seq from the pending table and reports whether it was
// still there, the reader not having taken its reply; then a retired
// connection whose last call it was closes.
func (c *conn) unpend(seq uint64) bool {
	c.mu.Lock()
	_, mine := c.pending[seq]
	delete(c.pending, seq)
	c.mu.Unlock()
	if mine {
		c.closeIfRetired()
	}
	return mine
}

// abandonGrace is how long abandon waits for a reply body the reader has
// started before it looks whether the body is still on its way. 4 MiB (the
// default size cap) take 4 ms at 1 GB/s.
const abandonGrace = 10 * time.Millisecond

// read is the reader goroutine: it matches replies to pending calls.
func (c *conn) read() {
	defer c.wg.Done()
	broken, err := c.readReplies()
	// Every other call pending on the connection lost it through no fault
	// of its own, even when the cause was an oversized or undecodable
	// reply: ErrConnClosed, which a retry may survive, with the cause as
	// text only, so that it is not mistaken for the non-retryable
	// ErrMessageTooLarge or ErrCodec that the broken call alone gets.
	cause := fmt.Errorf("%w: %s: %v", ErrConnClosed, c.addr, err)
	if c.codec.in.n.Load() == 0 {
		if refused := tlsRefusal(c.addr, err); refused != nil {
			// The server refused the TLS handshake: the requests
			// written were never read (see tlsRefusal).
			cause = notSent(refused)
		}
	}
	if broken != nil && (errors.Is(broken.err, ErrCodec) || errors.Is(broken.err, ErrMessageTooLarge)) {
		// One call's reply body did not decode into its caller's value
		// (a reply of the wrong type, a panic in its GobDecode) or was
		// over the size cap: this side closes the connection for that
		// call's sake, as for a caller's write deadline. An oversized
		// reply counts against the node, once; one that does not decode
		// counts for nothing (see replyError). The calls beside are no
		// outcome of its (a *localCloseError, see nodeOutcome), and the
		// death is no sign the peer went away (see endpoint.lostLocked).
		// Each of them counted as a failure: one bad reply with four
		// calls beside it opened a healthy node's breaker.
		cause = &localCloseError{cause}
	}
	c.fail(cause)
	// Wake the caller of the unreadable reply only once the connection is
	// out of its endpoint, so that its next call does not land on it.
	if broken != nil {
		broken.done <- struct{}{}
	}
}

// readReplies reads replies and hands them to their calls until the
// connection fails, and returns the call whose reply could not be read, if
// any, and why it failed. A panic in the caller's own decoding of a reply (a
// GobDecode or UnmarshalBinary method) fails that call with an ErrCodec,
// like a reply that does not decode: on this goroutine no caller could
// recover it, and it would end the process. The rest of that message is
// unread, so the connection closes. The recovery is deferred once for the
// connection's life, not once per reply.
func (c *conn) readReplies() (broken *pendingCall, err error) {
	var decoding *pendingCall // the call whose reply body is being decoded
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decoding the reply panicked: %v", p)
			if decoding != nil {
				decoding.err = c.bodyError(err)
				broken = decoding
			}
		}
	}()
	var resp rpc.Response
	for {
		resp = rpc.Response{}
		if err = c.codec.readHeader(&resp); err != nil {
			return nil, err
		}
		if c.reads.Add(1) == 1 && c.onServes != nil {
			c.onServes(c)
		}
		c.mu.Lock()
		pc := c.pending[resp.Seq]
		delete(c.pending, resp.Seq)
		c.reading.Store(pc != nil)
		c.mu.Unlock()
		if pc != nil {
			if end := pc.end.Load(); end > c.vouched.Load() {
				c.vouched.Store(end)
			}
		}
		var body any
		if pc != nil && resp.Error == "" {
			body = pc.reply
		}
		if pc != nil {
			c.bodySeq.Store(resp.Seq)
		}
		decoding = pc
		err = c.codec.readBody(body)
		decoding = nil
		if pc != nil {
			c.bodySeq.Store(0)
		}
		if err != nil {
			if pc != nil {
				pc.err = c.bodyError(err)
				broken = pc
			}
			return broken, err
		}
		if pc != nil {
			if resp.Error != "" {
				pc.err = rpc.ServerError(resp.Error)
			}
			pc.done <- struct{}{}
			c.reading.Store(false)
		}
		c.closeIfRetired() // the next read then ends the loop
	}
}

// bodyError is the error of a call whose reply body could not be read. A
// reply cut short (the peer died or reset mid-reply, or the heartbeat or
// Close closed the connection) is a connection failure, retryable for an
// idempotent call; only a body that arrived and does not decode is a codec
// error.
func (c *conn) bodyError(err error) error {
	dead := c.failure()
	var ne net.Error
	switch {
	case dead != nil:
		return fmt.Errorf("%w (while reading a reply)", dead)
	case errors.Is(err, ErrMessageTooLarge), errors.Is(err, errBadFraming):
		return err // the peer's
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w: %s: reply cut short: %w", ErrConnClosed, c.addr, err)
	}
	return &replyError{fmt.Errorf("%w: reading the reply: %w", ErrCodec, err)}
}

// replyError is a call's reply body that arrived and does not decode into
// the caller's value, an ErrCodec: the caller's reply type is not the one
// the method replies with (a bug at the call site, or a client and servers
// of different versions), or the caller's own decoding (a GobDecode method)
// failed or panicked. Every node would answer the call the same way, so it
// is no outcome of the node's (see nodeOutcome): were it a failure, a call
// site with the wrong type opened every node's breaker in a few calls, and
// the client's other calls all failed for the open period. The connection
// closes all the same (see conn.read): the message's type definitions, if
// it brought any, did not reach this side's decoder.
type replyError struct{ err error }

func (e *replyError) Error() string { return e.err.Error() }
func (e *replyError) Unwrap() error { return e.err }

// fail closes the connection once and releases every pending call with err.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	close(c.dead)
	c.mu.Unlock()
	c.nc.Close()
	// Take the connection out of its endpoint before waking the callers,
	// so that their next calls do not find it (they would get a not-sent
	// error and move on, but need not).
	if c.onDead != nil {
		c.onDead(c)
	}
	for _, pc := range pending {
		pc.err = err
		pc.done <- struct{}{}
	}
}

// heartbeat watches the connection. When it has been silent for a
// heartbeat interval it pings the server, and closes the connection when the
// ping gets no answer within the heartbeat timeout. A server without the
// heartbeat service answers the ping with an error, which counts as alive;
// from then on the connection is guarded by a read deadline instead: with
// calls pending and nothing read for the read timeout, it is closed. With
// the heartbeat off, the read deadline guards it from the start, checked
// every readTimeoutTick.
func (c *conn) heartbeat() {
	defer c.wg.Done()
	every, pinging := c.opts.heartbeat, true
	if every <= 0 {
		every, pinging = readTimeoutTick(c.opts.readTimeout), false
	}
	t := time.NewTicker(every)
	defer t.Stop()
	// seen is the bytes read at the last look: the peer speaks while
	// they move, a large reply's body included.
	seen := c.codec.in.n.Load()
	// graceEnd is when the patience a backlog the peer has not vouched for
	// earns ends (see digestGrace); zero until a ping times out behind it.
	var graceEnd time.Time
	var silentSince time.Time
	for {
		select {
		case <-c.dead:
			return
		case now := <-t.C:
			if cur := c.codec.in.n.Load(); cur != seen {
				seen = cur // the peer spoke during the last interval
				silentSince, graceEnd = time.Time{}, time.Time{}
				continue
			}
			// Without a ping, silence with calls pending is the sign,
			// as long as the read timeout: the peer may be working on
			// a slow call. So for a connection whose stream broke
			// (broken), on which nothing more may be written, not even a
			// ping: its calls in flight still get their replies (see
			// start), however slow.
			var limit time.Duration
			var kind error
			if c.broken.Load() || !pinging {
				if c.inflight() == 0 || c.opts.readTimeout <= 0 {
					silentSince = time.Time{}
					continue
				}
				limit, kind = c.opts.readTimeout, ErrReadTimeout
			}
			if limit > 0 {
				if silentSince.IsZero() {
					silentSince = now
				} else if now.Sub(silentSince) >= limit {
					c.fail(fmt.Errorf("%w: %s sent nothing for %v with calls pending", kind, c.addr, now.Sub(silentSince)))
					return
				}
				continue
			}
		}
		pingAt := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.heartbeatTimeout)
		in, out := 1, 0
		wrote, acked, read := c.codec.out.n.Load(), c.acked(), c.codec.in.n.Load()
		err := c.do(ctx, HeartbeatMethod, &in, &out)
		cancel()
		timedOut := errors.Is(err, context.DeadlineExceeded)
		// A reader that is not waiting on the socket is busy on this
		// side (decoding a large or slow reply, or starved of CPU): the
		// ping's answer may be there, unread. Only a reader waiting for
		// bytes that do not come says the peer is silent.
		//
		// Likewise a ping that waited for the write slot while another
		// request held it without writing: that request is being
		// encoded, on this side, and nothing of it has reached the peer
		// to answer yet (a large value can take seconds; every attempt
		// of it used to lose its connection to the heartbeat, on a
		// silent connection, before a byte left).
		notSent := isNotSent(err)
		moved := timedOut && (!c.codec.in.waiting.Load() || c.movedSince(wrote, acked, read, notSent) ||
			notSent && c.encoding())
		switch {
		case moved:
			graceEnd = time.Time{} // it starts when nothing moves
		case timedOut && graceEnd.IsZero() && c.tookAll(err):
			graceEnd = pingAt.Add(c.opts.heartbeatTimeout + digestGrace(wrote-c.vouched.Load()))
		}
		var se rpc.ServerError
		switch {
		case err == nil:
		case errors.As(err, &se):
			pinging = false // no heartbeat service on this server
		case moved:
			// The ping timed out behind other traffic that is still
			// moving: a large request the peer keeps taking (the ping
			// may not even have got out), or a large reply still
			// coming in, or being decoded here, or a request still
			// being encoded here. The peer is slow, or
			// this side is, not the peer hung; ping again later.
			continue
		case timedOut && time.Now().Before(graceEnd):
			// The peer took a large backlog since it last spoke (all
			// of it: nothing moves) and may still be reading it, say
			// a sidecar that buffered a large request and passes it
			// on slowly; the ping is behind it. Ping again later.
			continue
		case timedOut:
			c.fail(fmt.Errorf("%w: %s did not answer within %v", ErrHeartbeat, c.addr, c.opts.heartbeatTimeout))
			return
		case isRetired(err) && c.alive():
			// The stream broke while the ping waited for the write slot:
			// the silence watch above goes on for the calls in flight.
			continue
		default:
			return // the connection died; the reader reported it
		}
		seen = c.codec.in.n.Load()
		graceEnd = time.Time{}
	}
}

// encoding reports whether a request holds the write slot without being in
// the connection's hands: it is being encoded, on this side (see
// countingWriter.writing). It is called by the heartbeat goroutine, whose
// ping does not hold the slot then.
func (c *conn) encoding() bool {
	return len(c.wslot) > 0 && !c.codec.out.writing.Load()
}

// readTimeoutTick is how often a connection without the heartbeat checks
// its read timeout d: an eighth of it, at least 10 ms, so that a hung peer
// is found within d plus an eighth or so.
func readTimeoutTick(d time.Duration) time.Duration {
	return max(d/8, 10*time.Millisecond)
}

// tookAll reports whether the peer's kernel has taken every byte written,
// the ping (whose outcome is err) included: room in its buffers says the
// peer reads, if slowly. A peer whose buffers are full (a request still
// going out, or bytes unacknowledged) reads nothing: it gets no grace.
// Where the kernel does not tell (see acked), a ping that got out counts.
func (c *conn) tookAll(err error) bool {
	return !isNotSent(err) && c.acked() >= c.codec.out.n.Load()
}

// minDigestRate is the slowest rate, in bytes per second, at which the
// heartbeat expects a peer to take in what was written to it: a ping
// behind a backlog of n bytes the peer has already taken from the socket
// gets the heartbeat timeout plus n / minDigestRate to be answered.
const minDigestRate = 1 << 20

// digestGrace is the extra time the heartbeat gives a peer to read a
// backlog of n bytes written since it last spoke (see minDigestRate).
func digestGrace(n int64) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(float64(n) / minDigestRate * float64(time.Second))
}

// acked returns how many bytes of what was written the peer has taken: the
// bytes the connection accepted, less those the kernel still holds unacked.
// Where the kernel does not tell (platforms other than Linux) it is the
// bytes the connection accepted: they show a request still going out while
// the ping waits for the connection, but not one still draining from the
// kernel's buffer after the ping was written, so there a ping stuck behind
// such a request closes the connection as before. It is called by the
// heartbeat goroutine.
func (c *conn) acked() int64 {
	n := c.codec.out.n.Load()
	if q, ok := unacked(c.nc); ok {
		n -= q
	}
	return n
}

// movedSince reports whether the peer took bytes written before a ping
// (wrote: the bytes written then; acked: how many of them it had taken) or
// sent any since (read: the bytes read then). When the ping was not sent,
// every byte written is another call's. A hung peer's kernel still takes
// what fits in its receive buffer, and then nothing: the next ping fails.
func (c *conn) movedSince(wrote, acked, read int64, pingNotSent bool) bool {
	if pingNotSent {
		wrote = math.MaxInt64
	}
	return min(c.acked(), wrote) > acked || c.codec.in.n.Load() != read
}

// provenAfter is how long a connection must live, when no reply has come
// on it, to prove that its peer takes calls (see conn.proven).
const provenAfter = time.Second

// proven reports whether the connection showed that its peer serves: a
// reply (to a call or a ping) came, or it lived for provenAfter and did not
// die of the peer's silence (the heartbeat or the read timeout). A peer
// that accepts and closes at once, or accepts and never answers, never
// proves a connection, so its endpoint stays in reconnect backoff (see
// endpoint.connDead). Call it once the connection died.
func (c *conn) proven() bool {
	if c.reads.Load() > 0 {
		return true
	}
	err := c.failure()
	return c.age() >= provenAfter && !errors.Is(err, ErrHeartbeat) && !errors.Is(err, ErrReadTimeout)
}

// age returns how long ago the connection was made.
func (c *conn) age() time.Duration { return time.Since(c.born) }

// inflight returns the number of calls waiting for their replies: those
// pending and the one whose reply the reader is reading.
func (c *conn) inflight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.pending)
	if c.reading.Load() {
		n++
	}
	return n
}

// takesCalls reports whether the connection takes new calls: alive and
// not retired.
func (c *conn) takesCalls() bool { return c.alive() && !c.retired.Load() }

// alive reports whether the connection can take calls.
func (c *conn) alive() bool {
	select {
	case <-c.dead:
		return false
	default:
		return true
	}
}

// close closes the connection, failing pending calls with err, and waits
// for its goroutines.
func (c *conn) close(err error) {
	c.fail(err)
	c.wg.Wait()
}
