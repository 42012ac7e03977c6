package balancer

import (
	"math"
	"testing"
)

// A MaxEjectedShare of +Inf (or anything above 1) means no cap short of
// every node, and NaN the default, as the other shares of this package
// treat NaN: not a cap of one node, which a float-to-int conversion of
// their product gave.
func TestEjectionCapOfHugeAndNaNShares(t *testing.T) {
	for _, tc := range []struct {
		share float64
		n     int
		want  int
	}{{math.Inf(1), 100, 100}, {1e300, 100, 100}, {2, 100, 100}, {math.NaN(), 100, 10}, {math.Inf(-1), 100, 10}} {
		c := OutlierConfig{MaxEjectedShare: tc.share}.withDefaults()
		if got := c.maxEjected(tc.n); got != tc.want {
			t.Errorf("MaxEjectedShare %v: %d of %d nodes may be ejected, want %d", tc.share, got, tc.n, tc.want)
		}
	}
}
