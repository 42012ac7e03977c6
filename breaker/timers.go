package breaker

import (
	"container/heap"
	"time"
)

// timerHeap orders the breakers of a Set by their next deadline: the end of
// the open period of an open breaker, the next bucket boundary of a closed
// one whose window is in use. A breaker has at most one deadline. It is
// guarded by Set.tmu.
type timerHeap []*Breaker

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *timerHeap) Push(x any) {
	b := x.(*Breaker)
	b.heapIdx = len(*h)
	*h = append(*h, b)
}
func (h *timerHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	b.heapIdx = -1
	return b
}

// schedule files b's open deadline with the timer goroutine. Called from
// Breaker.trip, under gobreaker's lock: it only takes the leaf lock tmu and
// signals.
func (s *Set) schedule(b *Breaker, until int64) {
	s.tmu.Lock()
	if b.dropped.Load() || s.stopped {
		s.tmu.Unlock()
		return
	}
	b.due = until
	if b.heapIdx >= 0 {
		heap.Fix(&s.timers, b.heapIdx)
	} else {
		heap.Push(&s.timers, b)
	}
	first := s.timers[0] == b
	s.tmu.Unlock()
	if first {
		select {
		case s.timerWake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// scheduleRoll files the next bucket boundary of a closed breaker's window.
// It reports false when nothing can be filed (the Set is closed or b was
// dropped). A breaker that is no longer closed keeps its open deadline.
func (s *Set) scheduleRoll(b *Breaker, at int64) bool {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if b.dropped.Load() || s.stopped {
		return false
	}
	if State(b.state.Load()) != Closed {
		return true
	}
	b.due = at
	if b.heapIdx >= 0 {
		heap.Fix(&s.timers, b.heapIdx)
	} else {
		heap.Push(&s.timers, b)
	}
	if s.timers[0] == b {
		select {
		case s.timerWake <- struct{}{}:
		default:
		}
	}
	return true
}

// unschedule removes b from the timer heap. The caller holds tmu.
func (s *Set) unschedule(b *Breaker) {
	if b.heapIdx >= 0 {
		heap.Remove(&s.timers, b.heapIdx)
	}
}

// runTimers is the Set's timer goroutine: it turns open breakers half-open at
// the end of their open period, whether or not traffic asks for them, and
// rolls the windows of closed breakers in use at their bucket boundaries.
func (s *Set) runTimers() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []*Breaker
	for {
		now := s.since()
		s.tmu.Lock()
		for len(s.timers) > 0 && s.timers[0].due <= now {
			due = append(due, heap.Pop(&s.timers).(*Breaker))
		}
		next := time.Duration(-1)
		if len(s.timers) > 0 {
			next = time.Duration(s.timers[0].due - now)
		}
		s.tmu.Unlock()

		for i, b := range due {
			b.fire()
			due[i] = nil
		}
		due = due[:0]

		if next >= 0 {
			t.Reset(next)
		} else {
			t.Stop()
		}
		select {
		case <-s.done:
			return
		case <-s.timerWake:
		case <-t.C:
		}
	}
}
