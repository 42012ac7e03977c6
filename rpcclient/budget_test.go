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
