package breaker

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestReadmeDefaultsAreTheCodes checks the breaker defaults in the README's
// balancer table (WithBreakers) against a zero Config with defaults applied.
func TestReadmeDefaultsAreTheCodes(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const want = "5 consecutive failures, or 50 % of ≥ 20 in a 10 s window; open 30 s × n (cap 300 s) ±20 %"
	found := false
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "| `WithBreakers(breaker.Config{})`") {
			found = true
			if cells := strings.Split(line, " | "); len(cells) < 2 || strings.TrimSpace(cells[1]) != want {
				t.Errorf("README row WithBreakers: %q, want the default %q", line, want)
			}
		}
	}
	if !found {
		t.Fatal("README has no WithBreakers row")
	}
	c := Config{}.withDefaults()
	if c.ConsecutiveFailures != 5 || c.FailureRatio != 0.5 || c.MinRequests != 20 || c.Window != 10*time.Second ||
		c.OpenTimeout != 30*time.Second || c.MaxOpenTimeout != 300*time.Second || c.Jitter != 0.2 || c.HalfOpenMaxRequests != 1 {
		t.Errorf("zero Config's defaults %+v, not the README's %q", c, want)
	}
	// 30 s x n, capped at 300 s: the third trip is 90 s, the eleventh 300 s
	// (jitter off: r = 0.5).
	if d := c.openPeriod(3, 0.5); d != 90*time.Second {
		t.Errorf("third open period %v, want 90s", d)
	}
	if d := c.openPeriod(11, 0.5); d != 300*time.Second {
		t.Errorf("eleventh open period %v, want the 300s cap", d)
	}
}
