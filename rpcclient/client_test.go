package rpcclient

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/dialtone-go/dialtone/discovery"
)

// TestEndpointHintsFindTheRightEndpoint checks the lookup's hints
// (epTable): an address found by a string at the same place but of another
// length, a copy of an address at another place, and an address dropped
// and used again must each find their own endpoint.
func TestEndpointHintsFindTheRightEndpoint(t *testing.T) {
	c, _ := newTestClient(t, []string{"127.0.0.1:1"})
	long := strings.Clone("127.0.0.1:8080")
	short := long[:len(long)-1] // the same bytes, one shorter: 127.0.0.1:808
	for range 3 {               // the first round fills the hints, the next ones hit them
		if e := c.endpoint(long); e.addr != long {
			t.Fatalf("endpoint(%q) = the endpoint of %q", long, e.addr)
		}
		if e := c.endpoint(short); e.addr != short {
			t.Fatalf("endpoint(%q) = the endpoint of %q", short, e.addr)
		}
	}
	first := c.endpoint(long)
	if e := c.endpoint(strings.Clone(long)); e != first {
		t.Fatal("a copy of the address found another endpoint")
	}
	if e := c.endpoint(long); e != first {
		t.Fatal("the address found another endpoint after a copy of it was looked up")
	}
	c.drop([]*endpoint{first})
	again := c.endpoint(long)
	if again == first {
		t.Fatal("a dropped endpoint was found again")
	}
	if again.addr != long {
		t.Fatalf("endpoint(%q) after the drop = the endpoint of %q", long, again.addr)
	}
	if got := len(c.Endpoints()); got != 2 {
		t.Fatalf("the client lists %d endpoints, want 2 (%s and %s)", got, long, short)
	}
}

// TestEndpointHintsUnderConcurrentLookups looks up many addresses, with
// strings at many places, from several goroutines, while endpoints are
// dropped: every lookup must find its own address's endpoint (run with
// -race).
func TestEndpointHintsUnderConcurrentLookups(t *testing.T) {
	c, _ := newTestClient(t, []string{"127.0.0.1:1"})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				addr := fmt.Sprintf("127.0.0.%d:%d", 1+i%7, 1000+(i+g)%13)
				if e := c.endpoint(addr); e.addr != addr {
					t.Errorf("endpoint(%q) = the endpoint of %q", addr, e.addr)
					return
				}
				if g == 0 && i%100 == 0 {
					c.drop([]*endpoint{c.endpoint(addr)})
				}
			}
		})
	}
	wg.Wait()
}

// TestEndpointHintsSpreadOverSlots checks that the hint slots of address
// strings spread: strings of one size class lie a fixed stride apart, and
// the first version, which took the pointer's bits 4-9, put 32 addresses of
// 49-64 bytes on 16 slots. A uniform hash over twice as many slots as
// endpoints gives each endpoint a slot of its own about 60 % of the time,
// and uses about 0.79 slots per endpoint.
func TestEndpointHintsSpreadOverSlots(t *testing.T) {
	for _, n := range []int{32, 1000} {
		byAddr := new(sync.Map)
		var addrs []string
		for i := range n {
			a := fmt.Sprintf("backend-%04d.prod.eu-west-1.compute.internal:8080", i)
			addrs = append(addrs, a)
			byAddr.Store(a, &endpoint{addr: a})
		}
		tb := newEpTable(byAddr, n)
		if len(tb.hints) < 2*n {
			t.Fatalf("%d endpoints, %d hint slots; want at least %d", n, len(tb.hints), 2*n)
		}
		slots := map[*atomic.Pointer[endpoint]]bool{}
		for _, a := range addrs {
			slots[tb.hint(unsafe.StringData(a))] = true
		}
		if len(slots) < 6*n/10 {
			t.Fatalf("%d addresses use %d of %d hint slots; want at least %d", n, len(slots), len(tb.hints), 6*n/10)
		}
	}
	// The same without the heap's say: 1,000 strings a fixed stride apart,
	// for every size class's stride from 16 to 512 bytes. A uniform hash
	// uses about 790 of the 2,048 slots; one multiply used as few as 177
	// for some strides, and the heap's layout decided whether the loop
	// above saw it (it failed one full run in about ten).
	tb := newEpTable(new(sync.Map), 1000)
	buf := make([]byte, 1000*512)
	for stride := 16; stride <= 512; stride += 16 {
		slots := map[*atomic.Pointer[endpoint]]bool{}
		for i := range 1000 {
			slots[tb.hint(&buf[i*stride])] = true
		}
		if len(slots) < 700 {
			t.Errorf("1000 strings %d bytes apart use %d of %d hint slots; want at least 700", stride, len(slots), len(tb.hints))
		}
	}
}

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
