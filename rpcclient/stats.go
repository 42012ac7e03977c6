package rpcclient

import (
	"errors"
	"sync/atomic"
	"time"
)

// Stats counts what a Client did beyond one successful attempt per call,
// since New: the numbers an operator reads to see how often calls fail, and
// to tune retries, the retry budget and hedging. Every field only grows;
// export them as counters and take rates over time.
//
// A call that succeeds at its first attempt counts nowhere, so that the
// success path pays for no shared write: count calls, per method and with
// their latency, around Call.
type Stats struct {
	// Failed counts calls that returned an error, for any reason.
	Failed uint64
	// OutcomeUnknown counts the failed calls whose error wraps
	// ErrOutcomeUnknown: a request that may have run left no answer, and
	// the call could not be retried.
	OutcomeUnknown uint64
	// Retries counts attempts made after an attempt whose request may
	// have reached its node (or whose args took longer to encode than its
	// attempt timeout allowed: see WithMaxAttempts). Each took a token
	// from the retry budget (WithRetryBudget) and counts against
	// WithMaxAttempts. A hedged call's backup is no retry (Hedges counts
	// it), nor is an attempt after one that sent nothing (Unsent). A
	// retry whose own dial fails counts here and in Unsent. A retry is
	// counted when its attempt starts, after its backoff and its pick: one
	// whose call ended before that (ctx, Close) is none, and its token
	// goes back to the budget.
	Retries uint64
	// BudgetExhausted counts retries, and backup requests of hedged
	// calls, that the retry budget refused.
	BudgetExhausted uint64
	// Unsent counts attempts that failed before their request left this
	// process: a failed dial, a node in reconnect backoff, a connection
	// lost before the write. The call moved on to another node (or waited
	// for discovery, see RefreshWaits) without a retry token, and without
	// counting the next attempt as a retry. Args that took too long to
	// encode are not counted here (see Retries), nor are backups of hedged
	// calls that sent nothing.
	Unsent uint64
	// RefreshWaits counts the times a call waited for discovery to answer
	// a refresh (ResolveNow) because every node it could pick had failed
	// to dial.
	RefreshWaits uint64
	// Hedges counts backup requests sent (WithHedging, Hedge), each once,
	// and HedgeWins those whose reply the call returned: it came before
	// the first request's, or after that one failed. A backup took a
	// token from the retry budget and counts against WithMaxAttempts, but
	// is not in Retries; the retries of a hedged call whose requests both
	// failed are. Few wins for many hedges say the hedging delay is too
	// short.
	Hedges, HedgeWins uint64
}

// counters are the Client's counters. They live apart from the fields every
// call reads, and only the paths of failed attempts and hedges write them.
type counters struct {
	failed, outcomeUnknown, retries, budgetExhausted atomic.Uint64
	unsent, refreshWaits, hedges, hedgeWins          atomic.Uint64
}

// Stats returns the Client's counters. It may be called from any goroutine,
// also after Close; each field is read atomically, but not all of them at
// one instant.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Failed:          s.failed.Load(),
		OutcomeUnknown:  s.outcomeUnknown.Load(),
		Retries:         s.retries.Load(),
		BudgetExhausted: s.budgetExhausted.Load(),
		Unsent:          s.unsent.Load(),
		RefreshWaits:    s.refreshWaits.Load(),
		Hedges:          s.hedges.Load(),
		HedgeWins:       s.hedgeWins.Load(),
	}
}

// ended counts err, the error Call returns, if it is one, reports the call
// of method that started at start to the Observer, if there is one, and
// returns err.
func (c *Client) ended(method string, start time.Time, err error) error {
	if err != nil {
		c.stats.failed.Add(1)
		if errors.Is(err, ErrOutcomeUnknown) {
			c.stats.outcomeUnknown.Add(1)
		}
	}
	return c.observeCall(method, start, err)
}
