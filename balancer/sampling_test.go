package balancer

import (
	"context"
	"testing"
	"time"
)

// The sampling rate halves with each sample that comes sooner than half
// what each node needs, down to one request in 256, holds between half and
// twice the need, and goes back to every request at once after a gap of
// more than twice the need.
func TestSamplingFollowsTheRequestRate(t *testing.T) {
	const minMask, maxMask = 1<<minSampleShift - 1, 1<<maxSampleShift - 1
	var s sampling
	s.init()
	want := int64(sampleEvery) / 3 // 3 ready nodes
	now := int64(time.Hour)
	steps := []struct {
		gap  int64
		mask uint64
	}{
		{now, minMask}, // the first sample: no earlier one
		{want / 10, 1},
		{want / 10, 3},
		{want / 10, 7},
		{want / 10, 15},
		{want / 10, 31},
		{want / 10, 63},
		{want / 10, 127},
		{want / 10, 255},
		{want / 10, maxMask}, // capped
		{want, maxMask},      // between half and twice the need: held
		{2 * want, maxMask},
		{2*want + 1, minMask}, // the traffic fell: back to every request at once
		{want, minMask},
		{want/2 - 1, 1},
	}
	for i, st := range steps {
		if i > 0 {
			now += st.gap
		}
		s.sampled(now, 3)
		if got := s.mask.Load(); got != st.mask {
			t.Fatalf("step %d (gap %v): mask %d, want %d", i, time.Duration(st.gap), got, st.mask)
		}
	}
	// The need scales with the ready nodes: with 1,000 of them a sample
	// every 5 µs is not too many (10 ms / 1,000 = 10 µs each).
	var big sampling
	big.init()
	big.sampled(now, 1000)
	now += 5 * int64(time.Microsecond)
	big.sampled(now, 1000)
	if got := big.mask.Load(); got != minMask {
		t.Fatalf("1,000 nodes, a sample 5 µs after the last: mask %d, want %d", got, minMask)
	}
	big.sampled(now+int64(time.Microsecond), 1000)
	if got := big.mask.Load(); got != 1 {
		t.Fatalf("1,000 nodes, a sample 1 µs after the last: mask %d, want 1", got)
	}
}

// A busy P2C balancer samples one request in 256, still samples, and goes
// back to every request with the first sample after its traffic pauses.
func TestP2CSamplesLessUnderFastTraffic(t *testing.T) {
	as := addrs(3)
	b, _ := newTest(t, as, WithPolicy(P2C()), WithoutBreakers())
	nodes := b.set.Load().nodes
	stamps := func() (sum int64) {
		for _, n := range nodes {
			sum += n.stamp.Load()
		}
		return sum
	}
	pick := func() {
		r, err := b.Pick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		r.Done(nil)
	}
	const maxMask = 1<<maxSampleShift - 1
	deadline := time.Now().Add(5 * time.Second)
	picks := 0
	for b.samp.mask.Load() != maxMask {
		if picks%1000 == 0 && time.Now().After(deadline) {
			t.Fatalf("after %d picks back to back in 5 s the sampling mask is %d, want %d", picks, b.samp.mask.Load(), maxMask)
		}
		pick()
		picks++
	}
	t.Logf("one request in 256 sampled after %d picks back to back", picks)
	before := stamps()
	for i := 0; stamps() == before; i++ {
		if i == 100_000 {
			t.Fatal("no latency sample in 100,000 picks at one in 256")
		}
		pick()
	}
	// A pause of more than twice the need (10 ms / 3 nodes, doubled).
	time.Sleep(3 * sampleEvery)
	before = stamps()
	for i := 0; stamps() == before; i++ {
		if i == 100_000 {
			t.Fatal("no latency sample in 100,000 picks after the pause")
		}
		pick()
	}
	if got := b.samp.mask.Load(); got != 1<<minSampleShift-1 {
		t.Fatalf("the first sample after a 30 ms pause left the mask at %d, want %d", got, 1<<minSampleShift-1)
	}
}
