package balancer

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestStateVersionMeansThePickerIsPublished: once StateVersion reports a
// State's version, Pick already chooses from that State. rpcclient relies
// on it when it waits for discovery's answer after a failed dial. Each of
// 2,000 States lists one new address; the test spins on StateVersion, not on
// Updated, and picks at once.
func TestStateVersionMeansThePickerIsPublished(t *testing.T) {
	b, w := newTest(t, []string{"10.9.0.1:80"}, WithPolicy(RoundRobin()), WithoutBreakers())
	ctx := context.Background()
	// newTest saw the first picker; its version is stored just after.
	for deadline := time.Now().Add(5 * time.Second); b.StateVersion() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the first State's version never showed")
		}
	}
	for i := range 2000 {
		addr := fmt.Sprintf("10.8.%d.%d:80", i/250, i%250+1)
		before := b.StateVersion()
		w.SetAddrs(addr)
		deadline := time.Now().Add(5 * time.Second)
		for b.StateVersion() == before {
			if time.Now().After(deadline) {
				t.Fatalf("State %d never applied", i)
			}
		}
		r, err := b.Pick(ctx)
		if err != nil {
			t.Fatalf("State %d: %v", i, err)
		}
		r.Done(nil)
		if r.Endpoint.Addr != addr {
			t.Fatalf("State %d: StateVersion moved on but Pick chose %s from an older picker, want %s", i, r.Endpoint.Addr, addr)
		}
	}
}
