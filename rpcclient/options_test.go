package rpcclient

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery/discoverytest"
)

// New rejects option values that would quietly break the client, and
// names the option and what is wrong.
func TestNewRejectsNonsenseOptions(t *testing.T) {
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithDialTimeout(0), "WithDialTimeout"},
		{WithDialTimeout(-time.Second), "WithDialTimeout"},
		{WithMaxMessageSize(0), "WithMaxMessageSize"},
		{WithMaxMessageSize(-1), "WithMaxMessageSize"},
		{WithRetryBudget(20, 10), "ratio must be in [0, 1]"},
		{WithRetryBudget(-1, 10), "WithRetryBudget"},
		{WithRetryBudget(0.2, -5), "minPerSecond"},
		{WithConnectBackoff(0, 1.6, time.Minute, 0.2), "base must be positive"},
		{WithConnectBackoff(time.Second, 0.5, time.Minute, 0.2), "factor"},
		{WithConnectBackoff(time.Second, 1.6, time.Millisecond, 0.2), "max must be at least base"},
		{WithConnectBackoff(time.Second, 1.6, time.Minute, 2), "jitter"},
		{WithHeartbeat(time.Second, 0), "WithHeartbeat"},
		{WithHeartbeat(-time.Second, time.Second), "WithHeartbeat"},
		{WithReadTimeout(-1), "WithReadTimeout"},
		{WithRetryBackoff(-1, time.Second), "WithRetryBackoff"},
		{WithRetryBackoff(time.Second, time.Millisecond), "WithRetryBackoff"},
		{WithAttemptTimeout(-1), "WithAttemptTimeout"},
		{WithDrainGrace(-1), "WithDrainGrace"},
		{WithHedging(-1), "WithHedging"},
		{WithMaxConnectionAge(-time.Second), "WithMaxConnectionAge"},
		{WithHTTPPath("_goRPC_"), `WithHTTPPath("_goRPC_")`},
		{WithHTTPPath("/a b"), `WithHTTPPath("/a b")`},
		{WithHTTPPath("/a\nX: y"), "must start with / and hold no spaces"},
		{func(o *options) { // the dialer would ignore the keepalive
			WithKeepAlive(time.Second)(o)
			WithDialer((&net.Dialer{}).DialContext)(o)
		}, "WithKeepAlive configures the default dialer"},
	} {
		w := discoverytest.NewAddrs("127.0.0.1:1")
		c, err := New(w, tc.opt)
		w.Close()
		if err == nil {
			c.Close()
			t.Errorf("New accepted an option that should name %q", tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v; want it to name %q", err, tc.want)
		}
	}
	// The zero values that mean "off" stay valid.
	w := discoverytest.NewAddrs("127.0.0.1:1")
	defer w.Close()
	c, err := New(w, WithHeartbeat(0, 0), WithReadTimeout(0), WithAttemptTimeout(0), WithHedging(0),
		WithRetryBudget(0, 0), WithRetryBackoff(0, 0), WithDrainGrace(0), WithMaxConnectionAge(0))
	if err != nil {
		t.Fatalf("New with the off values: %v", err)
	}
	c.Close()
}

// WithLogger(nil) keeps the default: a nil logger would crash the first
// dial failure's log line, on a goroutine of the client's.
func TestWithLoggerNilKeepsTheDefault(t *testing.T) {
	o := defaultOptions()
	WithLogger(nil)(&o)
	if o.logger == nil {
		t.Fatal("WithLogger(nil) left no logger")
	}
	o.logger.Warn("rpcclient: the default logger takes this") // would panic on nil
}

// WithRetryBackoff is "full jitter over base x 2^n, capped at max": the
// wait before the retry after n failed attempts is anywhere in
// [0, base x 2^n], and grows with n.
func TestWithRetryBackoffIsExponentialWithFullJitter(t *testing.T) {
	var o options
	WithRetryBackoff(10*time.Millisecond, time.Second)(&o)
	lo, hi := time.Hour, time.Duration(0)
	for range 2000 {
		d := o.retryBackoff.Delay(3, nil)
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi > 80*time.Millisecond || hi < 60*time.Millisecond {
		t.Errorf("WithRetryBackoff(10ms, 1s): the 4th wait reached %v at most over 2000 draws; want up to 10ms x 2^3 = 80ms", hi)
	}
	if lo > 10*time.Millisecond {
		t.Errorf("WithRetryBackoff(10ms, 1s): the 4th wait was %v at least over 2000 draws; want full jitter (from 0)", lo)
	}
}
