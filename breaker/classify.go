package breaker

import (
	"context"
	"errors"
	"net/rpc"
)

// Outcome is what one request's result means for its node's breaker.
type Outcome uint8

const (
	// Success counts for the node: the request completed, or the server
	// answered with an application error.
	Success Outcome = iota
	// Failure counts against the node: transport errors, per-attempt
	// timeouts, anything not recognised as a success or an exclusion.
	Failure
	// Excluded is not counted at all: the caller gave up (its context was
	// cancelled or its deadline passed), which says nothing about the node.
	Excluded
)

// String returns "success", "failure" or "excluded".
func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	case Excluded:
		return "excluded"
	default:
		return "unknown"
	}
}

// Classify sorts the error of one attempt. It is a pure function, safe from
// any goroutine, and never blocks. The done function returned by
// [Breaker.Allow] applies it, in this order:
//
//   - nil: Success.
//   - wraps [ErrAttemptTimeout]: Failure, even if it also wraps
//     context.DeadlineExceeded.
//   - wraps context.Canceled or context.DeadlineExceeded itself (the values
//     a context returns): Excluded. A caller whose transport error arrived
//     after its own context ended should pass ctx.Err() (or wrap it)
//     instead, so the node is not blamed. A per-attempt timeout made with
//     context.WithTimeout ends the same way, and is Excluded too: make it
//     with context.WithTimeoutCause and [ErrAttemptTimeout] (see there).
//     The network's own timeouts (a dial or read deadline, net/http's
//     Client.Timeout and Transport.ResponseHeaderTimeout) answer errors.Is
//     for context.DeadlineExceeded too, but they are the node's: Failure.
//   - an [rpc.ServerError] anywhere in the chain: Success (the node answered).
//   - anything else: Failure.
//
// Errors are matched with errors.Is and errors.As, never by their text. A
// caller that needs other rules maps its error before calling done (for
// example done(nil) for an application error of its own type).
func Classify(err error) Outcome {
	if err == nil {
		return Success
	}
	if errors.Is(err, ErrAttemptTimeout) {
		return Failure
	}
	if callerGaveUp(err) {
		return Excluded
	}
	var se rpc.ServerError
	if errors.As(err, &se) {
		return Success
	}
	return Failure
}

// callerGaveUp reports whether err's chain holds context.Canceled or
// context.DeadlineExceeded themselves. errors.Is would also match the net
// package's timeout errors, which say so for context.DeadlineExceeded
// (since Go 1.23) although no context ended: a blackholed node whose dials
// time out would then never be blamed.
func callerGaveUp(err error) bool {
	for err != nil {
		if err == context.Canceled || err == context.DeadlineExceeded {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if callerGaveUp(e) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// isExcluded and isSuccessful are gobreaker's IsExcluded and IsSuccessful
// hooks. gobreaker calls them under its lock, which is why they are this
// package's own pure code and not a user-supplied function.
func isExcluded(err error) bool {
	return err != nil && (err == errRaced || Classify(err) == Excluded)
}

func isSuccessful(err error) bool {
	return err == nil || Classify(err) == Success
}
