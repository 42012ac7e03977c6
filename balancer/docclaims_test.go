package balancer

import "testing"

// TestSamplingGoesDownToOneIn256 pins Result's doc: a P2C pick is sampled
// every time under light traffic, down to one in 256 (the doc once said
// 64), the rate falling as traffic rises.
func TestSamplingGoesDownToOneIn256(t *testing.T) {
	var s sampling
	s.init()
	if m := s.mask.Load(); m != 0 {
		t.Fatalf("initial mask %d, want 0 (every pick)", m)
	}
	now := int64(1)
	for range 20 {
		now += 1000 // samples 1 µs apart: far more often than the 10 ms per node needed
		s.sampled(now, 3)
	}
	if m := s.mask.Load(); m != 255 {
		t.Fatalf("mask %d under fast traffic, want 255 (one in 256)", m)
	}
}
