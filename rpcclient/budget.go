package rpcclient

import (
	"sync/atomic"

	"golang.org/x/time/rate"
)

// budget is a retry budget after Finagle's RetryBudget: every call deposits
// percent of a retry token, every retry withdraws a whole one, and a
// reserve refilled at minPerSec lets a quiet client retry at all. Deposits
// are capped so that a long calm period cannot bank a retry storm.
type budget struct {
	milli   atomic.Int64 // balance in thousandths of a retry
	deposit int64        // per call, in thousandths
	cap     int64
	reserve *rate.Limiter
}

// init sets b up for ratio retries per call and a reserve of minPerSec
// retries a second. A Client holds its budget by value.
func (b *budget) init(ratio, minPerSec float64) {
	b.deposit = int64(ratio * 1000)
	// Hold at most ten seconds' worth of the floor, or 100 retries.
	b.cap = max(int64(minPerSec*10*1000), 100*1000)
	// A floor of 0 is none: a limiter's burst is spent even at a rate of
	// 0, so a burst of 1 would still give one retry.
	burst := max(int(minPerSec), 1)
	if minPerSec == 0 {
		burst = 0
	}
	b.reserve = rate.NewLimiter(rate.Limit(minPerSec), burst)
}

// onCall records one call. It never blocks.
func (b *budget) onCall() {
	if b.deposit > 0 && b.milli.Load() < b.cap {
		b.milli.Add(b.deposit)
	}
}

// withdraw takes one retry token, reporting false when the budget is empty.
// A retry that then sends nothing (its wait cut short, its call ended
// before its attempt, a backup with no request out) gives it back with
// refund.
func (b *budget) withdraw() bool {
	for {
		v := b.milli.Load()
		if v < 1000 {
			break
		}
		if b.milli.CompareAndSwap(v, v-1000) {
			return true
		}
	}
	return b.reserve.Allow()
}

// refund gives back a token whose retry sent nothing. It goes to the bank
// of deposits even when it came from the reserve, whose tokens cannot be
// put back once taken: the total the budget allows is the same.
func (b *budget) refund() { b.milli.Add(1000) }
