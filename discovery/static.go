package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Static is a Watcher over a fixed set of endpoints that the program may
// replace with Update. It starts no goroutine.
type Static struct {
	pub Publisher
}

// NewStatic returns a Static watcher whose first State holds eps. Invalid or
// duplicated endpoints make it fail with an error naming each of them (one
// line each, errors.Join); use Sanitize first to drop them instead.
func NewStatic(eps ...Endpoint) (*Static, error) {
	s := &Static{}
	if err := s.Update(eps...); err != nil {
		return nil, err
	}
	return s, nil
}

// StaticAddrs is NewStatic for plain addresses: each endpoint's ID is its
// address and its weight 1.
func StaticAddrs(addrs ...string) (*Static, error) {
	eps := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = Endpoint{ID: a, Addr: a, Weight: 1}
	}
	return NewStatic(eps...)
}

// Update replaces the set. It is all or nothing: if any endpoint is invalid
// or duplicated, nothing changes and the error names every one that is
// (errors.Join of Sanitize's reasons). It copies the endpoints' Tags and
// Meta, so the caller may change and reuse them afterwards. Safe from any
// goroutine.
func (s *Static) Update(eps ...Endpoint) error {
	valid, rejected := Sanitize(eps)
	if len(rejected) > 0 {
		errs := make([]error, len(rejected))
		for i, r := range rejected {
			errs[i] = r.Err
		}
		return errors.Join(errs...)
	}
	// The published State must not share the caller's Tags and Meta: a
	// change to them would rewrite it, and make the next Update look like
	// no change.
	for i := range valid {
		valid[i].Tags = slices.Clone(valid[i].Tags)
		valid[i].Meta = maps.Clone(valid[i].Meta)
	}
	s.pub.Update(valid, time.Now())
	return nil
}

// Next implements Watcher.
func (s *Static) Next(ctx context.Context) (State, error) { return s.pub.Next(ctx) }

// ResolveNow implements Watcher; a static set has nothing to refresh.
func (s *Static) ResolveNow() {}

// Close implements Watcher.
func (s *Static) Close() error {
	s.pub.Close()
	return nil
}

// buildStatic serves static:///host:port,host:port.
func buildStatic(_ context.Context, t Target) (Watcher, error) {
	if len(t.Hosts) > 0 {
		return nil, fmt.Errorf("%w %q: authority: static targets take no authority (want static:///host:port,host:port)", ErrBadTarget, truncate(t.String()))
	}
	if len(t.Query) > 0 {
		return nil, fmt.Errorf("%w %q: query: static targets take no options", ErrBadTarget, truncate(t.String()))
	}
	if t.Path == "" {
		return nil, fmt.Errorf("%w %q: path: no addresses (want static:///host:port,host:port)", ErrBadTarget, truncate(t.String()))
	}
	addrs := strings.Split(t.Path, ",")
	for _, a := range addrs {
		if err := ValidateAddr(a); err != nil {
			return nil, fmt.Errorf("%w %q: path: %w", ErrBadTarget, truncate(t.String()), err)
		}
	}
	w, err := StaticAddrs(addrs...)
	if err != nil {
		return nil, fmt.Errorf("%w %q: path: %w", ErrBadTarget, truncate(t.String()), err)
	}
	return w, nil
}
