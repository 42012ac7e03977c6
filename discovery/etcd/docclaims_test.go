package etcd

import (
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/backoff"
)

// TestDocumentedDefaultsAreTheCodes checks the defaults the package doc and
// the option docs state against the options the Watcher and the Registrar
// start from.
func TestDocumentedDefaultsAreTheCodes(t *testing.T) {
	o, r := defaultOptions(), defaultRegistrarOptions()
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"resolve interval 500 ms", o.resolveInterval == 500*time.Millisecond},
		{"progress interval 2 s", o.progressInterval == 2*time.Second},
		{"request timeout 5 s", o.requestTimeout == 5*time.Second && r.requestTimeout == 5*time.Second},
		{"max entries 100000", o.maxEntries == 100000},
		{"backoff 100 ms x2 up to 5 s, +-20 %", o.backoff == backoff.Policy{Base: 100 * time.Millisecond, Factor: 2, Max: 5 * time.Second, Jitter: 0.2} && r.backoff == o.backoff},
		{"lease TTL 10 s", r.ttl == 10*time.Second},
		{"revoke timeout 2 s", r.revokeTimeout == 2*time.Second},
	} {
		if !c.ok {
			t.Errorf("documented default %s is not the code's", c.what)
		}
	}
}
