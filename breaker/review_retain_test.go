package breaker

import (
	"testing"
	"testing/synctest"
	"time"
)

// Events of a breaker that Retain drops are not reported: not those its
// breaker queues afterwards, and not those still queued behind a slow
// callback when Retain returns (the callback would otherwise see a state
// change of an address the caller has already let go of, and, for a
// gauge per address, recreate it after its removal).
func TestRetainDropsQueuedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var got []Event
		s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: time.Second, Jitter: -1},
			WithOnStateChange(func(e Event) {
				if len(got) == 0 {
					<-release // a slow callback: the next events queue meanwhile
				}
				got = append(got, e)
			}))
		defer s.Close()
		report(t, s.Get("a"), 1, errTransport) // delivered, and held in the callback
		synctest.Wait()
		report(t, s.Get("b"), 1, errTransport) // queued behind it
		s.Retain([]string{"a"})                // b leaves before its event is delivered
		close(release)
		synctest.Wait()
		for _, e := range got {
			if e.Addr == "b" {
				t.Fatalf("event %+v of a breaker dropped by Retain was reported after Retain returned", e)
			}
		}
		if len(got) != 1 {
			t.Fatalf("events %+v, want a's trip only", got)
		}
	})
}
