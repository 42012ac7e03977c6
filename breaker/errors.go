package breaker

import (
	"errors"
	"fmt"

	"github.com/sony/gobreaker/v2"
)

var (
	// ErrOpen is returned by [Breaker.Allow] while the breaker is open: the
	// node failed recently and gets no traffic until its open period ends.
	// It wraps gobreaker.ErrOpenState, so errors.Is matches either.
	ErrOpen = fmt.Errorf("breaker: %w", gobreaker.ErrOpenState)

	// ErrTooManyRequests is returned by [Breaker.Allow] while the breaker is
	// half-open and its probes (Config.HalfOpenMaxRequests) are all in
	// flight. It wraps gobreaker.ErrTooManyRequests.
	ErrTooManyRequests = fmt.Errorf("breaker: half-open: %w", gobreaker.ErrTooManyRequests)

	// ErrAttemptTimeout marks a per-attempt timeout. The caller (rpcclient)
	// wraps it, e.g. fmt.Errorf("call %s: %w", method, ErrAttemptTimeout),
	// when its own attempt timer fires, so that [Classify] counts the
	// attempt as a node failure even when it also wraps
	// context.DeadlineExceeded. A caller that bounds each attempt with a
	// context makes it the context's cause instead,
	// context.WithTimeoutCause(ctx, d, ErrAttemptTimeout), and passes on
	// the error net/http (which returns the cause) gives it; with
	// context.WithTimeout, the attempt's expiry is context.DeadlineExceeded
	// itself, which Classify takes for the caller's own and does not count.
	ErrAttemptTimeout = errors.New("breaker: attempt timed out")

	// errRaced is reported to gobreaker for a request it admitted while
	// the public state changed under it (tripped, closed, or closed,
	// tripped and half-open again: see Breaker.admit); it is always
	// excluded.
	errRaced = errors.New("breaker: raced with a change of state")

	// errForcedTrip is the one failure reported to a closed gobreaker,
	// when the closed-state window decided to trip (see forceTrip).
	errForcedTrip = errors.New("breaker: trip decided by the closed-state window")
)
