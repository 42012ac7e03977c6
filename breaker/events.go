package breaker

import "time"

// Event reports one state change of one breaker to the function given to
// [WithOnStateChange].
type Event struct {
	Addr     string    // the breaker's address
	From, To State     // the change
	At       time.Time // when the breaker changed state
}

// WithOnStateChange makes the Set call fn for every state change of its
// breakers. fn runs on a single goroutine owned by the Set, one event at a
// time, in the order the changes happened (in particular in order per
// breaker), never under a breaker's lock: it may call [Breaker.State],
// [Breaker.Allow] or [Set.Get]. It must not call [Set.Close] (nor close
// what owns the Set, such as a balancer.Balancer): Close waits for the
// goroutine that runs fn, and would wait for ever; hand it to another
// goroutine instead. A slow fn delays later events only; events
// queue without bound meanwhile and never block a breaker. Events of
// breakers dropped by Retain are not reported, including those still
// queued when Retain returns (only one that fn is already handling
// completes), and events still queued when Close is called are discarded.
// Default: no callback and no goroutine.
func WithOnStateChange(fn func(Event)) Option {
	return func(o *options) { o.onStateChange = fn }
}

// emit queues an event. Callers hold b.mu (and often gobreaker's lock), so it
// only appends under the leaf lock emu and signals the delivery goroutine.
func (s *Set) emit(b *Breaker, from, to State) {
	if s.onStateChange == nil || b.dropped.Load() {
		return
	}
	e := Event{Addr: b.addr, From: from, To: to, At: time.Now()}
	s.emu.Lock()
	if s.closed {
		s.emu.Unlock()
		return
	}
	s.events = append(s.events, queuedEvent{e, b})
	s.emu.Unlock()
	select {
	case s.eventWake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// queuedEvent is an event waiting for the callback, with its breaker: one
// that Retain drops meanwhile has its queued events discarded.
type queuedEvent struct {
	e Event
	b *Breaker
}

// deliverEvents is the Set's event goroutine: it hands queued events to the
// callback until Close, skipping those of breakers Retain dropped since
// they were queued.
func (s *Set) deliverEvents() {
	defer s.wg.Done()
	var spare []queuedEvent
	for {
		select {
		case <-s.done:
			return
		case <-s.eventWake:
		}
		s.emu.Lock()
		batch := s.events
		s.events = spare[:0]
		s.emu.Unlock()
		for _, q := range batch {
			select {
			case <-s.done:
				return
			default:
			}
			if q.b.dropped.Load() {
				continue
			}
			s.onStateChange(q.e)
		}
		clear(batch)
		spare = batch
	}
}
