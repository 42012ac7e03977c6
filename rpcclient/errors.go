package rpcclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"slices"
	"strings"
	"syscall"

	"github.com/dialtone-go/dialtone/breaker"
)

var (
	// ErrClosed is returned by Call after Close, and by calls pending when
	// Close was called.
	ErrClosed = errors.New("rpcclient: client closed")
	// ErrOutcomeUnknown means a call that is not idempotent failed after its
	// request may have reached the server: it may or may not have run, so
	// it was not retried.
	ErrOutcomeUnknown = errors.New("rpcclient: outcome unknown: the request may have been executed")
	// ErrAttemptTimeout is the error of an attempt that ran out of its
	// per-attempt timeout. It wraps breaker.ErrAttemptTimeout, so the node's
	// breaker counts it as a failure; its own text does not mention the
	// breaker, which did nothing.
	ErrAttemptTimeout error = attemptTimeoutError{}
	// ErrMessageTooLarge means a reply exceeded WithMaxMessageSize; the
	// connection is closed.
	ErrMessageTooLarge = errors.New("rpcclient: message too large")
	// ErrCodec is wrapped by encoding and decoding errors. They are not
	// retried: the same arguments would fail the same way. Nor do they
	// count against the node: args that do not encode, and a reply that
	// does not decode into the caller's value, are the caller's (a reply
	// closes its connection, whose gob stream it may leave out of step).
	ErrCodec = errors.New("rpcclient: codec error")
	// ErrHeartbeat means the peer stopped answering heartbeats; its
	// connection was closed and the calls on it released.
	ErrHeartbeat = errors.New("rpcclient: heartbeat timed out")
	// ErrReadTimeout means a server without the heartbeat sent nothing for
	// the read timeout while calls were pending; its connection was closed.
	ErrReadTimeout = errors.New("rpcclient: read timed out")
	// ErrConnClosed means the connection broke while the call was pending.
	ErrConnClosed = errors.New("rpcclient: connection closed")
	// ErrRetryBudget means a retry was needed but the retry budget was
	// empty; the call returns its last error with this one.
	ErrRetryBudget = errors.New("rpcclient: retry budget exhausted")
)

// errNotSent marks an attempt whose request provably never left this
// process: the dial failed, the endpoint was in reconnect backoff, or the
// connection was already closed before anything was written. Such an
// attempt may be retried even for a call that is not idempotent.
type errNotSent struct{ err error }

func (e *errNotSent) Error() string { return e.err.Error() }
func (e *errNotSent) Unwrap() error { return e.err }

func notSent(err error) error { return &errNotSent{err} }

func isNotSent(err error) bool {
	if err == nil { // the success path: no errors.As, whose target escapes
		return false
	}
	var ns *errNotSent
	return errors.As(err, &ns)
}

// DialError is the error of a failed dial to an endpoint.
type DialError struct {
	Addr string
	Err  error

	version uint64 // the balancer's StateVersion when the dial failed, before ResolveNow
}

// Error says which address failed to dial and why.
func (e *DialError) Error() string { return fmt.Sprintf("rpcclient: dial %s: %v", e.Addr, e.Err) }

// Unwrap returns the dial error.
func (e *DialError) Unwrap() error { return e.Err }

// BackoffError is returned for an endpoint whose reconnect backoff has not
// elapsed: no dial was attempted.
type BackoffError struct {
	Addr string
	Last error // the dial error that started the backoff

	version uint64 // the balancer's StateVersion when the endpoint refused the call
}

// Error names the address and the dial error that started its backoff.
func (e *BackoffError) Error() string {
	return fmt.Sprintf("rpcclient: %s in reconnect backoff after: %v", e.Addr, e.Last)
}

// Unwrap returns the dial error that started the backoff.
func (e *BackoffError) Unwrap() error { return e.Last }

// dialWaitError is the error of a call whose attempt ended while it waited
// for another call's dial to its endpoint: nothing was sent, and the dial's
// own outcome is what says something about the node.
type dialWaitError struct {
	Addr string
	Err  error
}

func (e *dialWaitError) Error() string {
	return fmt.Sprintf("rpcclient: waiting for the dial to %s: %v", e.Addr, e.Err)
}

func (e *dialWaitError) Unwrap() error { return e.Err }

// retryable reports whether an attempt's error may be retried at all, by
// its type: transport errors, dial errors, EOF, rpc.ErrShutdown and
// per-attempt timeouts are; application errors (rpc.ServerError), codec
// errors and the caller's own context are not.
func retryable(err error) bool {
	var se rpc.ServerError
	switch {
	case err == nil:
		return false
	case errors.As(err, &se), errors.Is(err, ErrCodec), errors.Is(err, ErrMessageTooLarge):
		return false
	case errors.Is(err, ErrAttemptTimeout), isNotSent(err):
		return true
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, rpc.ErrShutdown),
		errors.Is(err, ErrConnClosed), errors.Is(err, ErrHeartbeat), errors.Is(err, ErrReadTimeout),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// Error is the error Call returns when it fails. It says which method
// failed, after how many attempts, on which endpoints, and why.
// errors.Is and errors.As see through it to every attempt's error, so
// errors.As(err, &se) with se an rpc.ServerError, and errors.Is(err, context.Canceled),
// work as expected.
type Error struct {
	// Method is the serviceMethod given to Call.
	Method string
	// Attempts is the number of attempts made (dials included).
	Attempts int
	// Tried lists the endpoints tried, in order.
	Tried []string
	// Err is the last attempt's error, the cause.
	Err error
	// Errs holds every attempt's error, in order, plus any reason the
	// call stopped (ErrOutcomeUnknown, ErrRetryBudget, ErrClosed).
	Errs []error
}

// Error gives the method, the attempts, the endpoints tried, the stop reason
// and the last cause on one line.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rpcclient: %s failed after %d attempt", e.Method, e.Attempts)
	if e.Attempts != 1 {
		b.WriteByte('s')
	}
	if len(e.Tried) > 0 {
		fmt.Fprintf(&b, " on %s", strings.Join(e.Tried, ", "))
	}
	// The stop reasons, each once, unless the last cause says it already.
	var said []error
	for _, r := range e.Errs {
		stop := r == ErrOutcomeUnknown || r == ErrRetryBudget || r == ErrClosed
		// The caller's context, when it ended the call and the last
		// cause does not say so (a wait for discovery, a retry backoff).
		if r == context.Canceled || r == context.DeadlineExceeded {
			stop = !errors.Is(e.Err, r)
		}
		if stop && r != e.Err && !slices.Contains(said, r) {
			said = append(said, r)
			fmt.Fprintf(&b, " (%v)", r)
		}
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns every attempt's error and the stop reasons.
func (e *Error) Unwrap() []error { return e.Errs }

// attemptTimeoutError is ErrAttemptTimeout: "rpcclient: attempt timed out",
// unwrapping to breaker.ErrAttemptTimeout for the breaker's classification.
type attemptTimeoutError struct{}

func (attemptTimeoutError) Error() string { return "rpcclient: attempt timed out" }
func (attemptTimeoutError) Unwrap() error { return breaker.ErrAttemptTimeout }
