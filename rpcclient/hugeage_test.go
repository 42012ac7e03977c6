package rpcclient

import (
	"context"
	"math"
	"testing"
	"time"
)

// A maximum connection age near math.MaxInt64 ("for ever") must not wrap
// the jittered age negative: every connection was then born past its age,
// and replaced by a new dial as soon as the one before it joined the pool.
func TestHugeMaxConnectionAgeKeepsTheConnection(t *testing.T) {
	addr := serveArith(t, &Arith{})
	for range 10 { // the jitter is random: about half the ages wrapped
		testHugeAge(t, addr)
	}
}

func testHugeAge(t *testing.T, addr string) {
	c, w := newTestClient(t, []string{addr}, WithMaxConnectionAge(math.MaxInt64))
	defer func() { c.Close(); w.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 20 {
		var r int
		if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for _, st := range c.Endpoints() {
		if st.Dials != 1 {
			t.Fatalf("%s: %d dials for 20 calls with a maximum connection age of %v; want 1", st.Addr, st.Dials, time.Duration(math.MaxInt64))
		}
	}
}
