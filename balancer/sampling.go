package balancer

import (
	"sync/atomic"
	"time"
)

// P2C samples the latency of one request in 2^k, with k between
// minSampleShift and maxSampleShift. A sampled request reads the clock twice
// (at its pick and at its Done) and goes through the call pool, which on
// many machines costs more than the rest of the pick and its Done; a 10 s
// EWMA needs far fewer samples than a busy client makes, and the in-flight
// counts that P2C also weighs are exact whatever the rate. A client whose
// traffic is light samples every request: a serial caller has nothing in
// flight to tell the nodes apart, and a node that turned slow must be
// noticed at its first slow request, not at the eighth on average.
//
// The rate follows the traffic: while sampled requests end more often than
// each ready node needs (every sampleEvery per node), k grows by one per
// sample up to maxSampleShift; a sample that comes after a gap twice the
// need puts k back to minSampleShift at once, so that a client whose
// traffic falls does not wait long for its next samples (at most 2^k
// requests). k settles where 2^k requests take between half and twice the
// need: over 3 nodes (a need of 3.3 ms), every request below about 600
// requests a second, 1 in 8 at 2,400 to 4,800, 1 in 32 at 10,000, 1 in 256
// above about 77,000.
const (
	minSampleShift = 0 // every request
	maxSampleShift = 8 // one request in 256
	// sampleEvery is how often each ready node should get a latency
	// sample when the traffic allows it: the EWMA's 10 s time constant
	// then blends about a thousand samples.
	sampleEvery = 10 * time.Millisecond
)

// sampling is a Balancer's latency sampling rate. mask is read by every
// P2C pick; last is written by every sampled Done. They sit on separate
// cache lines so that the writes do not evict the reads' line on other
// cores.
type sampling struct {
	mask atomic.Uint64 // a pick is sampled when its sampling bits & mask are 0
	_    [56]byte
	last atomic.Int64 // mono time of the last sampled Done
	_    [56]byte
}

func (s *sampling) init() { s.mask.Store(1<<minSampleShift - 1) }

// sampled adapts the rate to a sample that ended at now (mono), with ready
// nodes in the picker. Done calls it from any goroutine; racing callers
// may each adjust mask once, and a lost update is corrected by the next
// sample.
func (s *sampling) sampled(now int64, ready int) {
	gap := now - s.last.Swap(now)
	want := int64(sampleEvery) / int64(max(ready, 1))
	m := s.mask.Load()
	switch {
	case gap > 2*want:
		if m != 1<<minSampleShift-1 {
			s.mask.CompareAndSwap(m, 1<<minSampleShift-1)
		}
	case gap < want/2 && m < 1<<maxSampleShift-1:
		s.mask.CompareAndSwap(m, m<<1|1)
	}
}
