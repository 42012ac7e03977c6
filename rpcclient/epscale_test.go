package rpcclient

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/dialtone-go/dialtone/discovery"
)

// TestEndpointCreationIsNotQuadratic checks that the client's endpoint
// bookkeeping grows by amortised constant work per address: the first
// call to each of 10,000 endpoints (a client warming up on a large
// service, or 1 % churn a second bringing new addresses) must not copy the
// whole table each time. A copy-on-write map copied on every new address
// allocated some 500 KB per address at 10,000 (2.8 s of work, under epMu,
// to reach them all).
func TestEndpointCreationIsNotQuadratic(t *testing.T) {
	s, _ := discovery.NewStatic()
	defer s.Close()
	c, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := make([]string, 11000)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.1.%d.%d:9000", i>>8, i&255)
	}
	for _, a := range addrs[:10000] {
		c.endpoint(a)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for _, a := range addrs[10000:] {
		c.endpoint(a)
	}
	runtime.ReadMemStats(&m1)
	per := (m1.TotalAlloc - m0.TotalAlloc) / 1000
	t.Logf("%d bytes allocated per new endpoint at 10,000", per)
	if per > 8<<10 {
		t.Fatalf("adding an endpoint to a client of 10,000 allocates %d bytes (want <= 8 KB): the table is copied whole", per)
	}
	if got := len(c.Endpoints()); got != 11000 {
		t.Fatalf("Endpoints() = %d, want 11000", got)
	}
}
