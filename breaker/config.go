package breaker

import (
	"math"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Config tunes every breaker of a [Set]. The zero value is ready to use:
// each field documents its default and what zero means. The Set copies it in
// [NewSet]; later changes have no effect.
type Config struct {
	// ConsecutiveFailures trips a closed breaker after this many failures in
	// a row. Zero means 5; a negative value disables this rule.
	ConsecutiveFailures int

	// FailureRatio trips a closed breaker when failures / (successes +
	// failures) over Window reaches it, once at least MinRequests outcomes
	// were counted. Zero means 0.5; a negative value disables this rule; a
	// value above 1 never trips.
	FailureRatio float64

	// MinRequests is the number of counted outcomes (successes plus
	// failures; exclusions do not count) in Window before FailureRatio
	// applies. Zero or negative means 20.
	MinRequests int

	// Window is the rolling window over which a closed breaker counts. It is
	// split into 10 buckets (gobreaker's BucketPeriod), so outcomes age out
	// one bucket at a time. Zero or negative means 10 s; a window under
	// 10 ms is 10 ms (a bucket of 1 ms), one over 73 years is 73 years.
	Window time.Duration

	// OpenTimeout is the open period after the first trip. The n-th
	// consecutive trip (re-opening from half-open without closing in
	// between) stays open OpenTimeout x n, capped at MaxOpenTimeout. Zero or
	// negative means 30 s.
	OpenTimeout time.Duration

	// MaxOpenTimeout caps the open period before jitter. Zero or negative
	// means 300 s; a value below OpenTimeout means OpenTimeout.
	MaxOpenTimeout time.Duration

	// Jitter spreads every open period uniformly over +-Jitter of itself, so
	// that breakers tripped together do not half-open in lock-step. Zero
	// means 0.2; a negative value disables jitter; values above 1 mean 1.
	// An open period is never shorter than 1 ms, nor longer than 73 years.
	Jitter float64

	// HalfOpenMaxRequests is the number of probes a half-open breaker lets
	// through in one half-open period (not at once: a probe that finished
	// keeps its slot, except one whose outcome is excluded, such as the
	// caller's cancellation, which gives it back), and the number of
	// successes that close it; a failure opens it again. Zero or negative
	// means 1.
	HalfOpenMaxRequests int
}

// Defaults of Config, applied by NewSet.
const (
	defaultConsecutiveFailures = 5
	defaultFailureRatio        = 0.5
	defaultMinRequests         = 20
	defaultWindow              = 10 * time.Second
	windowBuckets              = 10
	minWindow                  = windowBuckets * time.Millisecond
	maxCount                   = int(^uint(0) >> 1 & math.MaxUint32) // gobreaker's counts are uint32
	maxWindow                  = time.Duration(math.MaxInt64 / 4)    // 73 years: rounding up to buckets cannot overflow
	defaultOpenTimeout         = 30 * time.Second
	defaultMaxOpenTimeout      = 300 * time.Second
	defaultJitter              = 0.2
	minOpenPeriod              = time.Millisecond
	maxOpenPeriod              = time.Duration(math.MaxInt64 / 4) // 73 years: Set.since() + it cannot overflow
)

// withDefaults returns c with its zero values replaced by the defaults and
// its disabled rules (negative values) set to 0.
func (c Config) withDefaults() Config {
	switch {
	case c.ConsecutiveFailures == 0:
		c.ConsecutiveFailures = defaultConsecutiveFailures
	case c.ConsecutiveFailures < 0:
		c.ConsecutiveFailures = 0
	}
	switch {
	case c.FailureRatio == 0:
		c.FailureRatio = defaultFailureRatio
	case c.FailureRatio < 0:
		c.FailureRatio = 0
	}
	if c.MinRequests <= 0 {
		c.MinRequests = defaultMinRequests
	}
	if c.Window <= 0 {
		c.Window = defaultWindow
	}
	c.Window = max(c.Window, minWindow) // Window: 5 (nanoseconds) meant seconds, most likely
	// A window meant as "for ever" (math.MaxInt64): rounded up to whole
	// buckets, here and in gobreaker, it wrapped negative, and the first
	// Get panicked slicing a negative number of buckets.
	c.Window = min(c.Window, maxWindow)

	if c.OpenTimeout <= 0 {
		c.OpenTimeout = defaultOpenTimeout
	}
	if c.MaxOpenTimeout <= 0 {
		c.MaxOpenTimeout = defaultMaxOpenTimeout
	}
	if c.MaxOpenTimeout < c.OpenTimeout {
		c.MaxOpenTimeout = c.OpenTimeout
	}
	switch {
	case c.Jitter == 0:
		c.Jitter = defaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	case c.Jitter > 1:
		c.Jitter = 1
	}
	if c.HalfOpenMaxRequests <= 0 {
		c.HalfOpenMaxRequests = 1
	}
	// gobreaker counts in uint32: a larger count (meant as "practically
	// never") kept only its low 32 bits, and 1<<32 consecutive failures
	// tripped at the first one.
	c.ConsecutiveFailures = min(c.ConsecutiveFailures, maxCount)
	c.HalfOpenMaxRequests = min(c.HalfOpenMaxRequests, maxCount)
	return c
}

// readyToTrip is the trip rule for a Config with defaults applied, in
// gobreaker's ReadyToTrip form. The closed-state window calls it under its
// lock after each failure of the current generation, counted or too old to
// count, as gobreaker does (see closedCounts.failure).
func (c *Config) readyToTrip(n gobreaker.Counts) bool {
	if c.ConsecutiveFailures > 0 && n.ConsecutiveFailures >= uint32(c.ConsecutiveFailures) {
		return true
	}
	if c.FailureRatio > 0 {
		total := uint64(n.TotalSuccesses) + uint64(n.TotalFailures)
		if total >= uint64(c.MinRequests) && float64(n.TotalFailures) >= c.FailureRatio*float64(total) {
			return true
		}
	}
	return false
}

// openPeriod is how long the n-th consecutive trip (n >= 1) stays open.
// r is a uniform random number in [0, 1).
func (c *Config) openPeriod(n int, r float64) time.Duration {
	d := c.MaxOpenTimeout
	if n >= 1 && time.Duration(n) <= c.MaxOpenTimeout/c.OpenTimeout {
		d = c.OpenTimeout * time.Duration(n)
	}
	f := float64(d)
	if c.Jitter > 0 {
		f *= 1 + c.Jitter*(2*r-1)
	}
	// In float, so that a period near math.MaxInt64 (an OpenTimeout meant
	// as "for ever") jittered up does not wrap negative, and capped so that
	// the deadline the Set adds it to does not either: either way the
	// breaker would half-open at once.
	return time.Duration(min(max(f, float64(minOpenPeriod)), float64(maxOpenPeriod)))
}

// settings builds the gobreaker settings of one breaker.
func (c *Config) settings(name string, onStateChange func(string, gobreaker.State, gobreaker.State)) gobreaker.Settings {
	return gobreaker.Settings{
		Name:         name,
		MaxRequests:  uint32(c.HalfOpenMaxRequests),
		Interval:     c.Window,
		BucketPeriod: c.Window / windowBuckets,
		// The Breaker owns the open period (see doc.go); gobreaker is always
		// ready to go half-open once the Breaker lets a request through.
		Timeout: time.Nanosecond,
		// The closed state is counted in front of gobreaker (closed.go),
		// which decides with c.readyToTrip; gobreaker sees a closed-state
		// failure only when that decision was made (forceTrip).
		ReadyToTrip:   func(gobreaker.Counts) bool { return true },
		OnStateChange: onStateChange,
		IsSuccessful:  isSuccessful,
		IsExcluded:    isExcluded,
	}
}
