package breaker

import (
	"sync"
	"sync/atomic"

	"github.com/sony/gobreaker/v2"
)

// State is the state of a [Breaker].
type State uint32

const (
	// Closed lets every request through and counts outcomes.
	Closed State = iota
	// HalfOpen lets Config.HalfOpenMaxRequests probes through.
	HalfOpen
	// Open refuses every request with ErrOpen until its open period ends.
	Open
)

// String returns "closed", "half-open" or "open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	default:
		return "unknown"
	}
}

// Breaker is the circuit breaker of one address. Get one from [Set.Get]; its
// methods are safe from any goroutine. A Breaker dropped by [Set.Retain] or
// left behind by [Set.Close] keeps working for calls still holding it, but
// no longer reports events and leaves its open state only when asked (by
// Allow or State).
type Breaker struct {
	addr string
	set  *Set
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]

	state     atomic.Uint32 // the public State
	openUntil atomic.Int64  // end of the open period, in Set.since time; valid while Open
	dropped   atomic.Bool   // set once by Retain, under Set.tmu

	mu    sync.Mutex // orders public transitions and their events; a leaf lock
	trips int        // consecutive trips since the breaker last closed; under mu

	// Guarded by Set.tmu: the breaker's place in the Set's timer heap.
	heapIdx int   // -1 when not in the heap
	due     int64 // deadline while in the heap, in Set.since time
}

func newBreaker(s *Set, addr string) *Breaker {
	b := &Breaker{addr: addr, set: s, heapIdx: -1}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](s.cfg.settings(addr, b.onStateChange))
	return b
}

// Addr returns the address the breaker guards, as given to [Set.Get].
func (b *Breaker) Addr() string { return b.addr }

// State returns the breaker's state. It never blocks for long (at most a
// short leaf lock when an open period has just ended) and may be called from
// any goroutine, including a [WithOnStateChange] callback.
func (b *Breaker) State() State {
	st := State(b.state.Load())
	if st == Open && b.set.since() >= b.openUntil.Load() {
		b.expire()
		st = State(b.state.Load())
	}
	return st
}

// Allow asks whether one request may go to the node. Callers (the balancer,
// on the goroutine making the request) call it before each attempt. It never
// blocks on I/O; it takes gobreaker's short lock unless the breaker is open.
//
// When the request may proceed, Allow returns done, which the caller must
// call exactly once with the attempt's error; [Classify] decides how it
// counts. Otherwise done is nil and err is [ErrOpen] or [ErrTooManyRequests].
// done is gobreaker's own callback: it takes gobreaker's lock and calls
// Classify under it, so the error passed should have cheap, side-effect-free
// Unwrap, Is and As methods.
func (b *Breaker) Allow() (done func(err error), err error) {
	if State(b.state.Load()) == Open {
		if b.set.since() < b.openUntil.Load() {
			return nil, ErrOpen
		}
		b.expire()
	}
	return b.admit()
}

// admit asks gobreaker once the public state let the request pass.
func (b *Breaker) admit() (done func(err error), err error) {
	done, err = b.cb.Allow()
	if err != nil {
		if err == gobreaker.ErrTooManyRequests {
			return nil, ErrTooManyRequests
		}
		return nil, ErrOpen
	}
	if State(b.state.Load()) == Open {
		// The breaker tripped between the check above and gobreaker's
		// admission; gobreaker may already consider itself half-open. Give
		// the slot back without counting and refuse.
		done(errRaced)
		return nil, ErrOpen
	}
	return done, nil
}

// onStateChange is gobreaker's OnStateChange hook. It runs under gobreaker's
// lock, so it only records: atomics, the leaf locks b.mu and the Set's queue
// locks, and no user code.
func (b *Breaker) onStateChange(_ string, from, to gobreaker.State) {
	switch {
	case to == gobreaker.StateOpen:
		b.trip()
	case from == gobreaker.StateHalfOpen && to == gobreaker.StateClosed:
		b.close()
	}
	// Open -> HalfOpen is ignored: gobreaker goes there lazily on whatever
	// call comes first, and the public transition is made by expire.
}

// trip opens the breaker for the period of its next consecutive trip.
func (b *Breaker) trip() {
	s := b.set
	b.mu.Lock()
	b.trips++
	until := s.since() + int64(s.cfg.openPeriod(b.trips, s.rand()))
	b.openUntil.Store(until)
	from := State(b.state.Swap(uint32(Open)))
	if from != Open {
		s.emit(b, from, Open)
	}
	b.mu.Unlock()
	s.schedule(b, until)
}

// close closes a half-open breaker after its probes succeeded.
func (b *Breaker) close() {
	b.mu.Lock()
	b.trips = 0
	from := State(b.state.Swap(uint32(Closed)))
	if from != Closed {
		b.set.emit(b, from, Closed)
	}
	b.mu.Unlock()
}

// expire turns an open breaker half-open if its open period has ended. The
// Set's timer goroutine calls it at the deadline; Allow and State call it
// when they notice the deadline first.
func (b *Breaker) expire() {
	b.mu.Lock()
	if State(b.state.Load()) == Open && b.set.since() >= b.openUntil.Load() {
		b.state.Store(uint32(HalfOpen))
		b.set.emit(b, Open, HalfOpen)
	}
	b.mu.Unlock()
}
