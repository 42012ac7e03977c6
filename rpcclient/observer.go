package rpcclient

import "time"

// Observer is told of every attempt and every call a Client makes: the hook
// for metrics and tracing (WithObserver). Each method is called on the
// goroutine of the Call it reports, synchronously, before Call returns:
// it must not block, and should do little more than count (a histogram
// update, a counter increment, a span's end). A panic in it is the Call's.
// Calls run concurrently, so the methods are called concurrently too.
type Observer interface {
	// ObserveAttempt reports one attempt when its outcome is known: a
	// request sent to one node, or one that failed on its node before
	// it left (a failed dial, a node in reconnect backoff, a connection
	// lost before the write). The attempts reported for a call are the
	// ones its Error.Attempts counts, each reported once: picks given up
	// before anything was tried on their node (a busy write slot on a
	// hedged call, the end of ctx before a retry's attempt) are not.
	// Reports come as the outcomes are known, which for a hedged call
	// is not the order the attempts started (AttemptInfo.Attempt): its
	// request withdrawn when the other answered comes after that one.
	ObserveAttempt(AttemptInfo)
	// ObserveCall reports one Call, after its last attempt's report,
	// with the error Call returns.
	ObserveCall(CallInfo)
}

// AttemptInfo describes one attempt of a call (see Observer).
type AttemptInfo struct {
	Method string // "Service.Method"
	Addr   string // the node's address
	// Attempt is the attempt's place in its call: 1 for the first, 2 for
	// the next to start (a retry, or a hedged call's backup), and so on.
	Attempt int
	// Hedge says the attempt is a hedged call's backup request
	// (WithHedging, Hedge).
	Hedge bool
	// Start is when the attempt's node was picked, and Duration how long
	// the attempt took from there: the dial, if it waited for one, the
	// write, and the wait for the reply.
	Start    time.Time
	Duration time.Duration
	// Err is nil for an attempt that got its reply, and otherwise the
	// attempt's error as the call saw it: a *DialError, a BackoffError,
	// ErrAttemptTimeout (wrapped), an rpc.ServerError, a transport error,
	// or ctx's error. A hedged call's request withdrawn because the other
	// one answered first, or failed for good, reports context.Canceled.
	Err error
}

// CallInfo describes one Call (see Observer).
type CallInfo struct {
	Method   string    // "Service.Method"
	Start    time.Time // when Call was called
	Duration time.Duration
	Err      error // what Call returned: nil or an *Error
}

// WithObserver sets an Observer that Call tells of every attempt and every
// call. Default: none, and Call then reads no clock for it. nil keeps the
// default.
func WithObserver(o Observer) Option {
	return func(opts *options) {
		if o != nil {
			opts.observer = o
		}
	}
}

// now returns the time when the client has an Observer, and the zero time
// otherwise: the hot path reads no clock for an observer it does not have.
func (c *Client) now() time.Time {
	if !c.observed {
		return time.Time{}
	}
	return time.Now()
}

// observeAttempt reports an attempt of method on addr, the n-th of its
// call, that started at start and ended now with err. It does nothing
// without an Observer.
func (c *Client) observeAttempt(method, addr string, n int, hedge bool, start time.Time, err error) {
	if !c.observed {
		return
	}
	c.opts.observer.ObserveAttempt(AttemptInfo{Method: method, Addr: addr, Attempt: n, Hedge: hedge,
		Start: start, Duration: time.Since(start), Err: err})
}

// observeCall reports a call of method that started at start and ends now
// with err, and returns err. It does nothing more without an Observer.
func (c *Client) observeCall(method string, start time.Time, err error) error {
	if c.observed {
		c.opts.observer.ObserveCall(CallInfo{Method: method, Start: start, Duration: time.Since(start), Err: err})
	}
	return err
}
