package balancer

import (
	"context"
	"testing"
	"time"
)

// NodeStatus.Latency is documented as the peak-EWMA latency estimate for P2C
// and Maglev. Maglev samples no latency: a node whose requests take 30 ms
// must not show a made-up estimate (the seed every new node starts with).
func TestStatusLatencyOnlyWhereMeasured(t *testing.T) {
	as := addrs(1)
	b, _ := newTest(t, as, WithPolicy(Maglev(0)), WithoutBreakers())
	for range 3 {
		r, err := b.Pick(context.Background(), HashKey("k"))
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
		r.Done(nil)
	}
	st := b.Status()[0]
	if st.Latency != 0 && st.Latency < 30*time.Millisecond {
		t.Fatalf("Maglev node whose requests took 30 ms reports Latency %v", st.Latency)
	}
}
