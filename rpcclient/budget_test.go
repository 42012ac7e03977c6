package rpcclient

import (
	"testing"
)

// WithRetryBudget(0, 0) allows no retry: no share of calls, no floor.
func TestZeroRetryBudgetAllowsNoRetry(t *testing.T) {
	var b budget
	b.init(0, 0)
	for i := range 100 {
		b.onCall()
		if b.withdraw() {
			t.Fatalf("call %d: a budget of 0 %% and 0/s gave a retry token", i)
		}
	}
	// And a floor of 1/s allows one now, not more.
	b.init(0, 1)
	if !b.withdraw() || b.withdraw() {
		t.Fatal("a floor of 1/s: want one token now, and one only")
	}
}

// Deposits are capped (budget's doc): a long calm period cannot bank a
// retry storm. 100000 calls at a ratio of 0.2 would bank 20000 retries
// uncapped; the cap is 100 (ten seconds of a 10/s floor, or 100), plus the
// floor's burst of 10.
func TestRetryBudgetDepositsAreCapped(t *testing.T) {
	var b budget
	b.init(0.2, 10)
	for range 100000 {
		b.onCall()
	}
	n := 0
	for b.withdraw() && n < 100000 {
		n++
	}
	if n > 100+10+1 {
		t.Fatalf("after 100000 calls at 20 %% and 10/s, %d retries in a row were allowed; want at most 111 (the cap of 100, the floor's burst of 10)", n)
	}
	if n < 100 {
		t.Fatalf("after 100000 calls at 20 %% and 10/s, %d retries in a row were allowed; want the cap of 100 at least", n)
	}
}
