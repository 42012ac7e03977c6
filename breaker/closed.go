package breaker

import (
	"sync"
	"sync/atomic"

	"github.com/sony/gobreaker/v2"
)

// closedCounts is the closed state's rolling window: the lock-free fast path
// in front of gobreaker (see "The closed state" in doc.go).
//
// It keeps what a closed gobreaker keeps for its trip decision, with the
// same rules: outcomes are filed in the bucket of the request's start, a
// window of n buckets of Window/10 each rolls one bucket at a time from the
// start of the generation, and the consecutive-failure run is trimmed as
// buckets age out exactly as gobreaker's rollingCounts does. Successes are
// counted with one compare-and-swap and no lock; failures, rolls and
// resets take mu.
//
// The window rolls on time: while requests arrive, the Set's timer goroutine
// rolls it at each bucket boundary (Breaker.fire), so that Begin reads the
// current bucket from an atomic instead of the clock. A request that begins
// while that goroutine is late is filed in the previous bucket, as if it had
// begun a moment earlier. Failures roll the window themselves, by the clock,
// before they are counted and judged. A breaker without traffic for a whole
// bucket is not woken: the next Begin rolls it by the clock and re-arms it.
type closedCounts struct {
	// Begin's fields first (see Breaker): armed is set while a roll at the
	// next boundary is filed with the Set's timer goroutine; busy records
	// that a request began since the last roll, so that the timer goroutine
	// keeps rolling only windows in use; cur is the current bucket's index,
	// age % len(buckets).
	armed atomic.Bool
	busy  atomic.Bool
	cur   atomic.Uint32
	// consec is the run of failures since the last counted success
	// (gobreaker's Counts.ConsecutiveFailures). Failures add under mu; a
	// success zeroes it without the lock.
	consec  atomic.Uint32
	buckets []bucket // inline[:n] for the usual n

	period int64 // bucket length in ns; > 0
	// start is the generation's origin, in Set.since time, and age the index
	// of the current bucket counted from it (gobreaker's rollingCounts.age).
	// Both are written under mu and read by Begin without it.
	start atomic.Int64
	age   atomic.Uint64

	mu       sync.Mutex
	stamps   uint32 // last bucket stamp handed out; under mu
	tripping bool   // a trip was decided and not yet undone by a reset; under mu

	inline [windowBuckets + 1]bucket

	// first is the last stamp handed out before the generation began:
	// tickets of this generation carry later stamps, those of earlier
	// generations this one or earlier. Under mu. It comes last so that
	// the fields the success path reads keep their places.
	first uint32
}

// bucket is one slice of the window. Its word packs a stamp (high 32 bits),
// new each time the bucket is cleared, with its successes (low 32 bits): a
// success reported with an old stamp belongs to a bucket that has since
// aged out or to an earlier generation, and is dropped, as gobreaker drops
// it. (A failure with an old stamp is not counted either, but see failure.)
type bucket struct {
	word     atomic.Uint64
	consec   atomic.Uint32 // failures in a row within the bucket; zeroed by its successes
	failures uint32        // under mu
}

// ticket identifies where a closed-state request's outcome is filed.
type ticket struct {
	idx   uint32
	stamp uint32
}

// init sets up an empty window of the given length starting at now. A
// window is windowBuckets buckets, or one more when its length does not
// divide evenly, held inline; a window under windowBuckets x 10 ns needs
// more and gets its own array.
func (c *closedCounts) init(window int64, now int64) {
	period := window / windowBuckets
	n := (window + period - 1) / period // gobreaker rounds Interval up to whole buckets
	c.period = period
	if n <= int64(len(c.inline)) {
		c.buckets = c.inline[:n]
	} else {
		c.buckets = make([]bucket, n)
	}
	c.mu.Lock()
	c.resetLocked(now)
	c.mu.Unlock()
}

// current files a request in the current bucket, without a lock or a clock
// read; Begin uses it while the window is armed.
func (c *closedCounts) current() ticket {
	if !c.busy.Load() {
		c.busy.Store(true)
	}
	i := c.cur.Load()
	return ticket{idx: i, stamp: uint32(c.buckets[i].word.Load() >> 32)}
}

// begin files a request admitted at now, rolling the window by the clock
// first. It returns the start of the next bucket, for arming the roll.
func (c *closedCounts) begin(now int64) (ticket, int64) {
	next := c.roll(now)
	return c.current(), next
}

// roll rolls the window to now and returns the start of the next bucket.
func (c *closedCounts) roll(now int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.growLocked(now)
	return c.boundaryLocked()
}

// boundaryLocked is the start of the bucket after the current one.
func (c *closedCounts) boundaryLocked() int64 {
	return c.start.Load() + int64(c.age.Load()+1)*c.period
}

// success counts a success without a lock. A stale ticket is dropped.
func (c *closedCounts) success(t ticket) {
	b := &c.buckets[t.idx]
	for {
		w := b.word.Load()
		if uint32(w>>32) != t.stamp {
			return
		}
		if b.word.CompareAndSwap(w, w+1) {
			break
		}
	}
	// Zero the runs only when they are not zero already, so that successes
	// on several cores do not all write these cache lines.
	if b.consec.Load() != 0 {
		b.consec.Store(0)
	}
	if c.consec.Load() != 0 {
		c.consec.Store(0)
	}
}

// failure counts a failure reported at now and asks readyToTrip, with the
// counts gobreaker would hand it, whether to trip. It returns true once per
// generation, when the trip is decided; the caller then trips gobreaker.
//
// A failure whose bucket has aged out (its request began more than Window
// ago, in this generation) is not counted but still asks readyToTrip with
// the current counts, as gobreaker's onFailure does: the counts may have
// reached the trip rule since the last failure, through successes. A
// ticket of an earlier generation, the zero ticket, or a failure while a
// decided trip is under way, is dropped without asking (gobreaker drops an
// earlier generation's outcome at once).
func (c *closedCounts) failure(t ticket, now int64, readyToTrip func(gobreaker.Counts) bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.growLocked(now)
	if c.tripping || t == (ticket{}) {
		return false
	}
	// The run readyToTrip judges is the one this failure made: a success
	// on another core may zero c.consec at any moment (success takes no
	// lock), and judging a run reloaded after that would drop this
	// failure from it, a result no serial order of the two gives (gobreaker
	// judges either the longer run or, success first, a run of one).
	run := c.consec.Load()
	if b := &c.buckets[t.idx]; uint32(b.word.Load()>>32) == t.stamp {
		b.failures++
		b.consec.Add(1)
		run = c.consec.Add(1)
	} else if int32(t.stamp-c.first) <= 0 {
		return false // an earlier generation's (wrap-safe: stamps grow by one)
	}
	if testHookCounted != nil {
		testHookCounted()
	}
	n := c.countsLocked()
	n.ConsecutiveFailures = run
	if !readyToTrip(n) {
		return false
	}
	c.tripping = true
	return true
}

// countsLocked sums the live buckets into gobreaker's Counts (the fields a
// closed breaker's ReadyToTrip reads).
func (c *closedCounts) countsLocked() gobreaker.Counts {
	n := gobreaker.Counts{ConsecutiveFailures: c.consec.Load()}
	for i := range c.buckets {
		b := &c.buckets[i]
		n.TotalSuccesses += uint32(b.word.Load())
		n.TotalFailures += b.failures
	}
	return n
}

func (c *closedCounts) ageAt(now int64) uint64 {
	d := now - c.start.Load()
	if d < 0 {
		return 0
	}
	return uint64(d / c.period)
}

// growLocked rolls the window forward to the bucket of now, clearing the
// buckets that age out (gobreaker's rollingCounts.grow).
func (c *closedCounts) growLocked(now int64) {
	age, cur := c.ageAt(now), c.age.Load()
	if age <= cur {
		return
	}
	n := uint64(len(c.buckets))
	if age-cur >= n {
		c.clearLocked()
		c.setAgeLocked(age)
		return
	}
	for cur < age {
		cur++
		i := cur % n
		c.trimRunLocked(i)
		c.clearBucketLocked(i)
		c.setAgeLocked(cur)
	}
}

// setAgeLocked makes age the current bucket; the bucket must be ready.
func (c *closedCounts) setAgeLocked(age uint64) {
	c.age.Store(age)
	c.cur.Store(uint32(age % uint64(len(c.buckets))))
}

// trimRunLocked shortens the consecutive-failure run by the oldest bucket's
// tail when the run reaches back into that bucket, as gobreaker's
// rollingCounts.subtract does: the run reaches back when it equals the
// bucket's own tail of failures plus every failure in the newer buckets.
func (c *closedCounts) trimRunLocked(oldest uint64) {
	b := &c.buckets[oldest]
	tail := b.consec.Load()
	total := tail
	for i := range c.buckets {
		if uint64(i) != oldest {
			total += c.buckets[i].failures
		}
	}
	if run := c.consec.Load(); run == total {
		if testHookCounted != nil {
			testHookCounted()
		}
		// A compare-and-swap, not a store: a success on another core
		// may have zeroed the run since the load, and the trim must not
		// bring it back.
		c.consec.CompareAndSwap(run, run-min(run, tail))
	}
}

// testHookCounted, set only by tests, runs in failure and trimRunLocked
// at the moment a success on another core could zero the run between
// their read of it and their use.
var testHookCounted func()

func (c *closedCounts) clearBucketLocked(i uint64) {
	b := &c.buckets[i]
	c.stamps++
	b.word.Store(uint64(c.stamps) << 32)
	b.consec.Store(0)
	b.failures = 0
}

func (c *closedCounts) clearLocked() {
	for i := range c.buckets {
		c.clearBucketLocked(uint64(i))
	}
	c.consec.Store(0)
}

// resetLocked starts a new generation at now: an empty window whose buckets
// count from now, and tickets from before are stale.
func (c *closedCounts) resetLocked(now int64) {
	c.first = c.stamps
	c.clearLocked()
	c.start.Store(now)
	c.setAgeLocked(0)
	c.tripping = false
	c.armed.Store(false)
	c.busy.Store(false)
}

// reset starts a new generation; the breaker calls it when it closes.
func (c *closedCounts) reset(now int64) {
	c.mu.Lock()
	c.resetLocked(now)
	c.mu.Unlock()
}
