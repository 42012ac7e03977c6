// Package returns serves the tests of promises such as "never blocks" and
// "Close waits for its goroutines": Within bounds a call a test expects to
// return, with a bound generous enough for a loaded machine, and Loop keeps
// callers busy around it.
package returns

import (
	"sync"
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

// Loop calls fn over and over on n goroutines until stop is called; stop
// waits for them to return. Call stop once.
func Loop(n int, fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				fn()
			}
		})
	}
	return func() { close(done); wg.Wait() }
}
