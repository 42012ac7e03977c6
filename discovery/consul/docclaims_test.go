package consul

import (
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/backoff"
)

// TestDocumentedDefaultsAreTheCodes checks the defaults the package doc and
// the option docs state against defaultOptions.
func TestDocumentedDefaultsAreTheCodes(t *testing.T) {
	o := defaultOptions()
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"WithWaitTime: 60 s", o.waitTime == 60*time.Second},
		{"WithQueryRate: 20/s, burst 10", o.queryRate == 20 && o.queryBurst == 10},
		{"error backoff: 200 ms x2, capped at 10 s, +-20 %", o.errBackoff == backoff.Policy{Base: 200 * time.Millisecond, Factor: 2, Max: 10 * time.Second, Jitter: 0.2}},
		{"WithResolveInterval: 500 ms", o.resolveInterval == 500*time.Millisecond},
		{"WithRequestTimeout: 10 s (README: 10 s)", o.requestTimeout == 10*time.Second},
		{"body cap 64 MiB, 100,000 entries", o.maxBodyBytes == 64<<20 && o.maxEntries == 100_000},
	} {
		if !c.ok {
			t.Errorf("documented default %s is not the code's", c.what)
		}
	}
}
