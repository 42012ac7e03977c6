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
	// The success path (Begin and End in the closed state) reads state
	// and the closed window's first fields, which share the first cache
	// line, and one bucket of the window, which is part of the Breaker
	// too: no pointer to chase on caches a round trip has left cold.
	state  atomic.Uint32 // the public State
	closed closedCounts  // the closed state's window, counted in front of gobreaker

	addr string
	set  *Set
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]

	openUntil atomic.Int64 // end of the open period, in Set.since time; valid while Open
	// turns counts the public transitions: each one stores state and then
	// adds one, under mu. admit reads it before and after gobreaker's
	// admission to tell that the half-open period it asked in is still the
	// one gobreaker answered in.
	turns   atomic.Uint64
	dropped atomic.Bool // set once by Retain, under Set.tmu

	mu    sync.Mutex // orders public transitions and their events; a leaf lock
	trips int        // consecutive trips since the breaker last closed; under mu

	// Guarded by Set.tmu: the breaker's place in the Set's timer heap.
	heapIdx int   // -1 when not in the heap
	due     int64 // deadline while in the heap, in Set.since time
}

func newBreaker(s *Set, addr string) *Breaker {
	b := &Breaker{addr: addr, set: s, heapIdx: -1}
	b.closed.init(int64(s.cfg.Window), s.since())
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

// Ticket is one request admitted by [Breaker.Begin]. Pass it to
// [Breaker.End] exactly once with the request's outcome. It is a small value
// (no allocation); the zero Ticket counts for nothing.
type Ticket struct {
	probe func(error) // gobreaker's done, for a request admitted outside the closed state
	t     ticket      // where a closed-state outcome is filed
}

// Key returns a comparable value that stands for t, and true, when t was
// admitted in the closed state. Two such tickets with the same key are the
// same value: ending either files the outcome in the same place, so a caller
// may keep one per key and reuse it (the balancer keeps one Done function per
// node and key, instead of one per request). A ticket from a half-open
// probe, or the zero Ticket, is unique: ok is false.
func (t Ticket) Key() (key uint64, ok bool) {
	if t.probe != nil || t.t == (ticket{}) {
		return 0, false
	}
	return uint64(t.t.stamp)<<32 | uint64(t.t.idx), true
}

// Begin asks whether one request may go to the node. Callers (the balancer,
// on the goroutine making the request) call it before each attempt and call
// [Breaker.End] with the returned Ticket and the attempt's error. It never
// blocks on I/O.
//
// Closed, it takes no lock and reads no clock (atomic loads only, while
// the Set's timer goroutine rolls the window; the first request after a
// quiet bucket reads the clock and takes a short lock to roll it) and
// allocates nothing.
// Half-open, it asks gobreaker, which admits Config.HalfOpenMaxRequests
// probes at a time. Open, it refuses with [ErrOpen]; a refused half-open
// request gets [ErrTooManyRequests].
func (b *Breaker) Begin() (Ticket, error) {
	switch State(b.state.Load()) {
	case Closed:
		if b.closed.armed.Load() {
			return Ticket{t: b.closed.current()}, nil
		}
		return Ticket{t: b.beginUnarmed()}, nil
	case Open:
		if b.set.since() < b.openUntil.Load() {
			return Ticket{}, ErrOpen
		}
		b.expire()
	}
	return b.admit()
}

// beginUnarmed admits a closed-state request when no roll is filed with the
// Set's timer goroutine (the first request, or the first after a quiet
// bucket): it rolls the window by the clock and files the next roll.
func (b *Breaker) beginUnarmed() ticket {
	t, next := b.closed.begin(b.set.since())
	if b.closed.armed.CompareAndSwap(false, true) && !b.set.scheduleRoll(b, next) {
		b.closed.armed.Store(false) // Set closed or breaker dropped: roll by the clock
	}
	return t
}

// fire is the Set's timer goroutine reaching b's deadline: the end of its
// open period, or, closed, the next bucket boundary of its window.
func (b *Breaker) fire() {
	switch State(b.state.Load()) {
	case Open:
		b.expire()
	case Closed:
		c := &b.closed
		next := c.roll(b.set.since())
		if !c.busy.Swap(false) || !b.set.scheduleRoll(b, next) {
			c.armed.Store(false) // no request in the last bucket: stop rolling
		}
	}
}

// End reports the outcome of a request admitted by [Breaker.Begin]; call it
// exactly once per Ticket, from any goroutine. [Classify] decides how err
// counts. A success in the closed state takes no lock (but the window's
// short lock, to roll it by the clock, when no request began for a bucket
// and the Set's timer goroutine stopped rolling it); a failure takes the
// window's short lock and, when it trips the breaker, gobreaker's. Outcomes
// of requests admitted before the breaker last changed state are ignored.
// err should have cheap, side-effect-free Unwrap, Is and As methods: it may
// be classified under a lock.
func (b *Breaker) End(t Ticket, err error) {
	if t.probe != nil {
		t.probe(err)
		return
	}
	switch Classify(err) {
	case Success:
		if !b.closed.armed.Load() {
			// No roll is filed: the window went quiet (or the Set
			// closed), and its buckets are as old as its last request.
			// Roll it by the clock, so that a success whose bucket aged
			// out meanwhile is dropped, as gobreaker drops it, rather
			// than end a failure run that is still in the window.
			b.closed.roll(b.set.since())
		}
		b.closed.success(t.t)
	case Failure:
		if b.closed.failure(t.t, b.set.since(), b.set.cfg.readyToTrip) {
			b.forceTrip()
		}
	}
}

// Allow is [Breaker.Begin] and [Breaker.End] in gobreaker's two-step form:
// when the request may proceed it returns done, which the caller must call
// exactly once with the attempt's error; otherwise done is nil and err is
// [ErrOpen] or [ErrTooManyRequests]. In the closed state done is a new
// closure (one small allocation); Begin and End allocate nothing.
func (b *Breaker) Allow() (done func(err error), err error) {
	t, err := b.Begin()
	if err != nil {
		return nil, err
	}
	if t.probe != nil {
		return t.probe, nil
	}
	return func(err error) { b.End(t, err) }, nil
}

// Test seams: when not nil, beforeAllow runs in admit between its look at
// the public state and gobreaker's admission, and afterAllow between the
// admission and the second look; tests change the state there.
var beforeAllow, afterAllow func()

// admit asks gobreaker once the public state let the request pass: a
// half-open breaker's probe. gobreaker's answer stands only when no public
// transition came between the request's look at the state and the answer;
// otherwise the admission belongs to another state than the one the
// request asked in, and is given back without counting:
//   - the breaker tripped meanwhile (gobreaker may already consider itself
//     half-open again): the request is refused;
//   - the probes closed it: the request belongs to the closed state's
//     window, not to gobreaker;
//   - it closed, tripped and turned half-open again, all within the
//     answer's time (possible with the 1 ms shortest open period): the
//     admission is a closed-state one, which gobreaker does not count as a
//     probe, and taking it for one would let a second probe run beside the
//     real one. The request is refused as one probe too many.
func (b *Breaker) admit() (Ticket, error) {
	turn := b.turns.Load()
	switch State(b.state.Load()) {
	case Open:
		return Ticket{}, ErrOpen // tripped since Begin looked
	case Closed:
		return Ticket{t: b.beginUnarmed()}, nil // closed since Begin looked
	}
	if beforeAllow != nil {
		beforeAllow()
	}
	done, err := b.cb.Allow()
	if err != nil {
		if err == gobreaker.ErrTooManyRequests {
			return Ticket{}, ErrTooManyRequests
		}
		return Ticket{}, ErrOpen
	}
	if afterAllow != nil {
		afterAllow()
	}
	if b.turns.Load() == turn {
		return Ticket{probe: done}, nil
	}
	done(errRaced)
	switch State(b.state.Load()) {
	case Open:
		return Ticket{}, ErrOpen
	case Closed:
		return Ticket{t: b.beginUnarmed()}, nil
	}
	return Ticket{}, ErrTooManyRequests
}

// forceTrip opens gobreaker after the closed-state window decided to trip:
// gobreaker sees one failure, and its ReadyToTrip (always true, see
// Config.settings) opens it, which calls onStateChange as any trip does.
// Called without locks held.
func (b *Breaker) forceTrip() {
	done, err := b.cb.Allow()
	if err != nil {
		return // gobreaker is not closed: it already tripped
	}
	done(errForcedTrip)
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
	b.turns.Add(1)
	if from != Open {
		s.emit(b, from, Open)
	}
	b.mu.Unlock()
	s.schedule(b, until)
}

// close closes a half-open breaker after its probes succeeded.
func (b *Breaker) close() {
	b.mu.Lock()
	b.closed.reset(b.set.since())
	b.trips = 0
	from := State(b.state.Swap(uint32(Closed)))
	b.turns.Add(1)
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
		b.turns.Add(1)
		b.set.emit(b, Open, HalfOpen)
	}
	b.mu.Unlock()
}
