package discovery

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrClosed is returned by Next after the watcher was closed.
var ErrClosed = errors.New("discovery: watcher closed")

// Publisher holds the latest State of a watcher and hands it to the consumer.
// It is the shared core of every Watcher in dialtone, and may be used to
// write new ones.
//
// The producer (the watcher's goroutine) calls Update, SetError and
// SetErrorKeeping; the consumer calls Next. Intermediate states are coalesced: Next returns the
// newest State, never a queue of old ones. No method blocks on the consumer,
// and no channel is sent on under the lock. All methods are safe for
// concurrent use. The zero Publisher is ready to use.
type Publisher struct {
	mu       sync.Mutex
	state    State
	changed  chan struct{} // closed and replaced on every publication
	closed   bool
	returned uint64 // Version of the last State returned by Next
}

// Update publishes a successful registry answer. eps must be sanitized and
// sorted by ID (see Sanitize); Update copies the slice, so the caller may
// reuse it. A new Version is published if the set differs from the current
// one or the previous State carried an error; otherwise only Synced moves.
// It reports whether a new Version was published.
func (p *Publisher) Update(eps []Endpoint, synced time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if p.state.Version > 0 && p.state.Err == nil && endpointsEqual(p.state.Endpoints, eps) {
		p.state.Synced = synced
		return false
	}
	cp := slices.Clone(eps)
	if cp == nil {
		cp = []Endpoint{}
	}
	if !slices.IsSortedFunc(cp, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) }) {
		slices.SortStableFunc(cp, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) })
	}
	reuseUnchanged(cp, p.state.Endpoints)
	p.publishLocked(State{Endpoints: cp, Synced: synced})
	return true
}

// reuseUnchanged replaces each endpoint of eps that equals the one with
// its ID in prev by prev's, so that an update hands on the Tags and Meta of
// the endpoints it leaves unchanged: a consumer (the balancer) then tells
// them unchanged by identity instead of comparing every entry. Both are
// sorted by ID.
func reuseUnchanged(eps, prev []Endpoint) {
	j := 0
	for i := range eps {
		for j < len(prev) && prev[j].ID < eps[i].ID {
			j++
		}
		if j < len(prev) && prev[j].ID == eps[i].ID && prev[j].Equal(eps[i]) {
			eps[i] = prev[j]
		}
	}
}

// SetError records a backend error. The endpoints stay the last known good
// set. A new Version is published when the previous State had no error or a
// different one; a repeated error only replaces Err, so a watcher that keeps
// failing does not wake its consumer on every attempt.
func (p *Publisher) SetError(err error) bool {
	if err == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.setErrorLocked(err, p.state.Endpoints)
}

// setErrorLocked publishes err with eps, a subset of the current
// endpoints; a repeated error with the same set only replaces Err.
func (p *Publisher) setErrorLocked(err error, eps []Endpoint) bool {
	if p.closed {
		return false
	}
	prev := p.state.Err
	if prev != nil && p.state.Version > 0 && prev.Error() == err.Error() && len(eps) == len(p.state.Endpoints) {
		p.state.Err = err
		return false
	}
	p.publishLocked(State{Endpoints: eps, Err: err, Synced: p.state.Synced})
	return true
}

// SetErrorKeeping records a registry answer that is unusable as a whole
// but says for certain that some endpoints of the last known good set are
// gone: every entry it lists is invalid, and some IDs of the set are no
// longer listed (deleted, deregistered or critical). The endpoints for
// which keep reports true stay; the others leave the set, so that a
// deregistered node is not published again as good. It is SetError when
// keep keeps them all. keep is called with the Publisher's lock held and
// must not call back into it.
func (p *Publisher) SetErrorKeeping(err error, keep func(Endpoint) bool) bool {
	if err == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	eps := p.state.Endpoints
	kept := make([]Endpoint, 0, len(eps))
	for _, e := range eps {
		if keep(e) {
			kept = append(kept, e)
		}
	}
	if len(kept) == len(eps) {
		kept = eps // the published slice stays shared, as SetError's does
	}
	return p.setErrorLocked(err, kept)
}

func (p *Publisher) publishLocked(s State) {
	s.Version = p.state.Version + 1
	p.state = s
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// Current returns the latest State without waiting; its Version is 0 before
// the first publication.
func (p *Publisher) Current() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// Next blocks until a State newer than the last one Next returned has been
// published, and returns it. It returns ctx.Err() when ctx is done and
// ErrClosed after Close. Next is meant for one consumer goroutine; concurrent
// callers share the notion of "last returned".
func (p *Publisher) Next(ctx context.Context) (State, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return State{}, ErrClosed
		}
		if p.state.Version > p.returned {
			p.returned = p.state.Version
			s := p.state
			p.mu.Unlock()
			return s, nil
		}
		if p.changed == nil {
			p.changed = make(chan struct{})
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return State{}, ctx.Err()
		case <-ch:
		}
	}
}

// Close makes every pending and future Next return ErrClosed. It is
// idempotent and never blocks.
func (p *Publisher) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}
