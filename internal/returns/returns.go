// Package returns bounds a call that a test expects to return: the tests of
// promises such as "never blocks" and "Close waits for its goroutines" use
// it, with a bound generous enough for a loaded machine.
package returns

import (
	"testing"
	"time"
)

// Within runs fn on a new goroutine and fails t, from the calling (test)
// goroutine, if fn has not returned after d. what names the call in the
// failure. A fn that never returns is left running; goleak then reports it.
func Within(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s has not returned after %v", what, d)
	}
}
