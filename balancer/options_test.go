package balancer

import "testing"

// WithLogger(nil) keeps the default: a nil logger would crash the first
// ejection's log line, on the balancer's goroutine.
func TestWithLoggerNilKeepsTheDefault(t *testing.T) {
	o := defaultOptions()
	WithLogger(nil)(&o)
	if o.logger == nil {
		t.Fatal("WithLogger(nil) left no logger")
	}
	o.logger.Warn("balancer: the default logger takes this") // would panic on nil
}
