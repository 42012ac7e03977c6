package breaker

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Option configures a [Set] in [NewSet].
type Option func(*options)

type options struct {
	onStateChange func(Event)
	rand          func() float64 // jitter source; tests replace it
}

// Set holds the breakers of one client, keyed by address. The balancer
// creates one with [NewSet], calls [Set.Get] on a node's first pick and
// [Set.RetainFunc] when addresses leave, and [Set.Close] when done. All
// methods are safe for concurrent use.
type Set struct {
	cfg           Config // with defaults applied; read-only
	onStateChange func(Event)
	rand          func() float64
	epoch         time.Time // origin of since(); carries a monotonic reading

	mu       sync.RWMutex
	breakers map[string]*Breaker

	tmu       sync.Mutex // leaf lock
	timers    timerHeap
	stopped   bool
	timerWake chan struct{}

	emu       sync.Mutex // leaf lock
	events    []queuedEvent
	closed    bool
	eventWake chan struct{}

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// NewSet returns an empty Set using cfg (see [Config] for the defaults). It
// starts the Set's timer goroutine, plus an event goroutine when
// [WithOnStateChange] is given; [Set.Close] stops them. It does not block.
func NewSet(cfg Config, opts ...Option) *Set {
	o := options{rand: rand.Float64}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Set{
		cfg:           cfg.withDefaults(),
		onStateChange: o.onStateChange,
		rand:          o.rand,
		epoch:         time.Now(),
		breakers:      make(map[string]*Breaker),
		timerWake:     make(chan struct{}, 1),
		eventWake:     make(chan struct{}, 1),
		done:          make(chan struct{}),
	}
	s.wg.Add(1)
	go s.runTimers()
	if s.onStateChange != nil {
		s.wg.Add(1)
		go s.deliverEvents()
	}
	return s
}

// since is the Set's clock: monotonic nanoseconds since NewSet.
func (s *Set) since() int64 { return int64(time.Since(s.epoch)) }

// Get returns the breaker for addr, creating a closed one on first use. The
// balancer calls it on a node's first pick, from any goroutine; it takes a
// read lock (a write lock only to create) and never blocks otherwise. A
// breaker survives until Retain is called without its address.
func (s *Set) Get(addr string) *Breaker {
	s.mu.RLock()
	b := s.breakers[addr]
	s.mu.RUnlock()
	if b != nil {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b = s.breakers[addr]; b == nil {
		b = newBreaker(s, addr)
		s.breakers[addr] = b
	}
	return b
}

// Len returns the number of breakers in the Set.
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.breakers)
}

// Retain keeps the breakers whose address is in addrs and drops the others:
// their pending half-open timers are cancelled and they report no more
// events. It creates no breakers. It may be called from any goroutine; it
// does not block beyond short locks. (The balancer uses RetainFunc.)
func (s *Set) Retain(addrs []string) {
	keep := make(map[string]struct{}, len(addrs))
	for _, a := range addrs {
		keep[a] = struct{}{}
	}
	s.RetainFunc(func(addr string) bool {
		_, ok := keep[addr]
		return ok
	})
}

// RetainFunc is Retain with the address list given as a membership test,
// for a caller that already holds the addresses in a map: it allocates
// nothing when no breaker goes. keep is called under the Set's lock, once
// per breaker; it must not call the Set. The balancer calls it after a
// discovery update that removed addresses, or when the Set holds more
// breakers than the update lists nodes (a pick on an older snapshot made
// one for an address that had left); an update that only changes health or
// weights does not call it.
func (s *Set) RetainFunc(keep func(addr string) bool) {
	var gone []*Breaker
	s.mu.Lock()
	for addr, b := range s.breakers {
		if !keep(addr) {
			delete(s.breakers, addr)
			gone = append(gone, b)
		}
	}
	s.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	s.tmu.Lock()
	for _, b := range gone {
		b.dropped.Store(true)
		s.unschedule(b)
		b.closed.armed.Store(false) // no more timed rolls: Begin rolls by the clock
	}
	s.tmu.Unlock()
}

// Close stops the Set's goroutines and timers and waits for them to exit;
// events still queued are discarded. It is idempotent and always returns
// nil. Breakers keep working after Close, but open ones turn half-open only
// when Allow or State asks, and no events are reported.
func (s *Set) Close() error {
	s.closeOnce.Do(func() {
		s.tmu.Lock()
		s.stopped = true
		for _, b := range s.timers {
			b.heapIdx = -1
			b.closed.armed.Store(false) // no more timed rolls: Begin rolls by the clock
		}
		s.timers = nil
		s.tmu.Unlock()
		s.emu.Lock()
		s.closed = true
		s.events = nil
		s.emu.Unlock()
		close(s.done)
	})
	s.wg.Wait()
	return nil
}

// pendingTimers reports how many open deadlines the timer goroutine holds.
// For tests.
func (s *Set) pendingTimers() int {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return len(s.timers)
}
