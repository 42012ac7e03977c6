package balancer

import (
	"context"
	"errors"
	"fmt"
)

var (
	// ErrNoEndpoints means discovery has no endpoints for the service: it
	// answered with an empty set, or has not answered yet.
	ErrNoEndpoints = errors.New("balancer: no endpoints")
	// ErrUnavailable means endpoints exist but none may be picked now: every
	// breaker is open or half-open with its probe out, or every node is
	// ejected or quarantined. Exclude never causes it: when every node
	// is excluded, Pick returns an excluded one.
	ErrUnavailable = errors.New("balancer: no endpoint available")
	// ErrClosed is returned by Pick after Close.
	ErrClosed = errors.New("balancer: closed")
	// Untimed is what a caller passes to Result.Done for a request that
	// succeeded but whose time was not all the node's: it waited for
	// something else first. rpcclient passes it for a call that waited
	// for its connection's dial, which may take a TLS handshake across a
	// region. It counts as a success for the breaker and outlier ejection,
	// and gives P2C no latency sample: a node whose first call carried a
	// 20 ms dial otherwise looked 100 times slower than its peers, and P2C
	// sent it next to nothing for seconds. The node is probed again soon
	// for a sample of its own.
	Untimed error = untimedError{}
)

type untimedError struct{}

func (untimedError) Error() string {
	return "balancer: success, not timed (the request waited for a dial)"
}

// Error is the error Pick returns. It names the service and says why nothing
// could be picked. It wraps ErrNoEndpoints or ErrUnavailable, and the
// discovery error when there is one.
type Error struct {
	// Service is the name given by WithService (rpcclient.Dial gives the
	// target's); empty when none was given, and the message then says the
	// service is unnamed.
	Service string
	// Kind is ErrNoEndpoints, ErrUnavailable or ErrClosed.
	Kind error
	// Total is the number of endpoints discovery lists; Open, Ejected and
	// Quarantined count why they could not be used.
	Total, Open, Ejected, Quarantined int
	// Refused counts the nodes that were pickable but whose breaker refused
	// the request: half-open with its probe out, or opened since the
	// balancer last looked. In panic mode the pickable nodes include the
	// ejected and quarantined ones, which are then counted twice (3 nodes,
	// 2 open, 1 ejected, 1 refusing: the ejected node's breaker refused).
	Refused int
	// Discovery is the watcher's last error, if any.
	Discovery error
}

// Error names the service and says why nothing could be picked.
func (e *Error) Error() string {
	msg := fmt.Sprintf("%v for service %q", e.Kind, e.Service)
	if e.Service == "" {
		msg = fmt.Sprintf("%v for an unnamed service (balancer.WithService names it)", e.Kind)
	}
	switch {
	case e.Kind == ErrNoEndpoints && e.Discovery == ErrNoStateYet:
		msg += ": " + ErrNoStateYet.Error()
	case e.Kind == ErrNoEndpoints && e.Discovery != nil:
		msg += fmt.Sprintf(": discovery failed: %v", e.Discovery)
	case e.Kind == ErrNoEndpoints:
		msg += ": discovery lists none"
	case e.Kind == ErrUnavailable:
		msg += fmt.Sprintf(": %d endpoints, %d with an open breaker, %d ejected, %d quarantined",
			e.Total, e.Open, e.Ejected, e.Quarantined)
		if e.Refused > 0 {
			msg += fmt.Sprintf(", %d refusing (breaker half-open with its probe out, or just opened)", e.Refused)
		}
		if e.Discovery != nil {
			msg += fmt.Sprintf("; discovery is failing too (the set is the last known good): %v", e.Discovery)
		}
	}
	return msg
}

// Unwrap returns Kind and the discovery error, for errors.Is and
// errors.As. The discovery error is the registry's, and so is any context
// error inside it (a request to the registry that timed out): through an
// Error, errors.Is finds neither context.Canceled nor
// context.DeadlineExceeded in it, which a caller would take for its own
// context's end.
func (e *Error) Unwrap() []error {
	if e.Discovery != nil {
		return []error{e.Kind, registryError{e.Discovery}}
	}
	return []error{e.Kind}
}

// registryError is a discovery error seen through an Error (see Unwrap).
type registryError struct{ err error }

func (r registryError) Error() string { return r.err.Error() }

func (r registryError) Is(target error) bool {
	return target != context.Canceled && target != context.DeadlineExceeded && errors.Is(r.err, target)
}

func (r registryError) As(target any) bool { return errors.As(r.err, target) }
