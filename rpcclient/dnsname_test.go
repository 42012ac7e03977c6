package rpcclient

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeDNS is a DNS server on loopback UDP that answers A and AAAA queries
// from a table the test controls: a name not in it gets NXDOMAIN, and a
// name in hang gets no answer at all.
type fakeDNS struct {
	mu    sync.Mutex
	addrs map[string][]netip.Addr // lower-case, absolute names
	hang  map[string]bool
	pc    net.PacketConn
	held  []heldAnswer // the answers to hang's queries, sent at cleanup
}

type heldAnswer struct {
	out  []byte
	from net.Addr
}

func newFakeDNS(t *testing.T) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDNS{addrs: map[string][]netip.Addr{}, hang: map[string]bool{}, pc: pc}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			out, hold := d.answer(buf[:n])
			if hold {
				d.mu.Lock()
				d.held = append(d.held, heldAnswer{out, from})
				d.mu.Unlock()
			} else if out != nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() {
		// Go's resolver goes on with a lookup whose ctx ended (up to the
		// resolv.conf timeout): answer the held queries, so that it ends.
		d.mu.Lock()
		for _, h := range d.held {
			pc.WriteTo(h.out, h.from)
		}
		d.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		pc.Close()
		<-done
	})
	return d
}

func (d *fakeDNS) set(name string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var as []netip.Addr
	for _, ip := range ips {
		as = append(as, netip.MustParseAddr(ip))
	}
	d.addrs[name] = as
}

func (d *fakeDNS) answer(q []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, false
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil, false
	}
	name := strings.ToLower(qs[0].Name.String())
	d.mu.Lock()
	ips, ok := d.addrs[name]
	hang := d.hang[name]
	d.mu.Unlock()
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !ok {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(qs[0])
	b.StartAnswers()
	for _, ip := range ips {
		rr := dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: 0}
		switch {
		case qs[0].Type == dnsmessage.TypeA && ip.Is4():
			b.AResource(rr, dnsmessage.AResource{A: ip.As4()})
		case qs[0].Type == dnsmessage.TypeAAAA && ip.Is6():
			b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: ip.As16()})
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil, false
	}
	return out, hang
}

// dialer returns a WithDialer dial that resolves through d only.
func (d *fakeDNS) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	server := d.pc.LocalAddr().String()
	nd := net.Dialer{Resolver: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dd net.Dialer
		return dd.DialContext(ctx, "udp", server)
	}}}
	return nd.DialContext
}

// An endpoint named by a host name ("localhost:port", as /etc/hosts
// resolves it): calls reach the server, the endpoint keeps the name, and
// "LocalHost:port" is the same endpoint.
func TestDNSNameLocalhost(t *testing.T) {
	var a Arith
	addr := serveArith(t, &a)
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "static:///localhost:"+port+",LocalHost:"+port); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("Dial with localhost and LocalHost: %v, want a duplicate-address error", err)
	}
	c, err := Dial(ctx, "static:///LocalHost:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var r int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &r); err != nil || r != 3 {
		t.Fatalf("call: %d, %v", r, err)
	}
	if eps := c.Endpoints(); len(eps) != 1 || eps[0].Addr != "localhost:"+port {
		t.Fatalf("endpoints %+v, want one at localhost:%s", eps, port)
	}
}

// A name that does not resolve (NXDOMAIN): a DialError that says so, the
// address quarantined, and a call that is not idempotent goes to the other
// node.
func TestDNSNameNXDOMAIN(t *testing.T) {
	dns := newFakeDNS(t)
	var a Arith
	live := serveArith(t, &a)
	nx := "nosuch.test:4000"
	c, _ := newTestClient(t, []string{nx, live}, WithDialer(dns.dialer()), WithBalancer())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 20 {
		var r int
		if err := c.Call(ctx, "Arith.Add", Pair{i, 1}, &r); err != nil || r != i+1 {
			t.Fatalf("call %d: %d, %v", i, r, err)
		}
	}
	if st := endpointStatus(c, nx); st.Dials != 1 {
		t.Fatalf("%s dialed %d times, want 1 (backoff)", nx, st.Dials)
	}
	if !quarantinedIn(c, nx) {
		t.Fatalf("%s not quarantined", nx)
	}
	for _, n := range c.Balancer().Status() {
		if n.Endpoint.Addr == nx && n.Breaker.String() != "closed" {
			t.Fatalf("%s breaker %v, want closed", nx, n.Breaker)
		}
	}

	only, _ := newTestClient(t, []string{nx}, WithDialer(dns.dialer()), WithMaxAttempts(1))
	var r int
	err := only.Call(ctx, "Arith.Add", Pair{1, 1}, &r)
	var de *DialError
	if !errors.As(err, &de) || errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "no such host") || !strings.Contains(err.Error(), "nosuch.test") {
		t.Fatalf("call to an unresolvable name: %v, want a DialError saying no such host", err)
	}
	t.Logf("error: %v", err)
}

// A resolver that never answers: the dial is bounded by the dial timeout,
// and the call by its ctx.
func TestDNSNameHangingResolver(t *testing.T) {
	dns := newFakeDNS(t)
	dns.mu.Lock()
	dns.hang["hang.test."] = true
	dns.mu.Unlock()
	c, _ := newTestClient(t, []string{"hang.test:4000"}, WithDialer(dns.dialer()), WithDialTimeout(300*time.Millisecond), WithMaxAttempts(1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	var r int
	err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &r)
	if el := time.Since(start); err == nil || el > 2*time.Second {
		t.Fatalf("call with a hanging resolver: %v after %v, want a failure within ~300ms", err, el)
	}
	t.Logf("error: %v", err)

	c2, _ := newTestClient(t, []string{"hang.test:4000"}, WithDialer(dns.dialer()), WithDialTimeout(30*time.Second), WithMaxAttempts(1))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	start = time.Now()
	err = c2.Call(ctx2, "Arith.Add", Pair{1, 1}, &r)
	if el := time.Since(start); err == nil || el > 2*time.Second {
		t.Fatalf("call with a hanging resolver and a 200ms ctx: %v after %v", err, el)
	}
	t.Logf("error: %v", err)
	start = time.Now()
	c2.Close()
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Close took %v with a dial hung in the resolver", el)
	}
}

// A name with several addresses, the first refusing: the dial falls back.
func TestDNSNameFallback(t *testing.T) {
	dns := newFakeDNS(t)
	var a Arith
	addr := serveArithAt(t, &a, "127.0.0.2:0")
	_, port, _ := net.SplitHostPort(addr)
	dns.set("multi.test.", "127.0.0.3", "127.0.0.2")
	dns.set("dual.test.", "::1", "127.0.0.2")
	for _, name := range []string{"multi.test", "dual.test"} {
		c, _ := newTestClient(t, []string{name + ":" + port}, WithDialer(dns.dialer()), WithMaxAttempts(1))
		var r int
		if err := c.Call(context.Background(), "Arith.Add", Pair{1, 1}, &r); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// FAULTS.md row 24: the A record changes; with WithMaxConnectionAge the
// traffic moves to the new address.
func TestDNSNameRecordChanges(t *testing.T) {
	dns := newFakeDNS(t)
	var a1, a2 Arith
	addr := serveArithAt(t, &a1, "127.0.0.2:0")
	_, port, _ := net.SplitHostPort(addr)
	serveArithAt(t, &a2, "127.0.0.3:"+port)
	dns.set("moving.test.", "127.0.0.2")
	c, _ := newTestClient(t, []string{"moving.test:" + port}, WithDialer(dns.dialer()), WithMaxConnectionAge(300*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var r int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &r); err != nil {
		t.Fatal(err)
	}
	dns.set("moving.test.", "127.0.0.3")
	for a2.calls.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatalf("no call reached the new address (old got %d)", a1.calls.Load())
		}
		if err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &r); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := a1.calls.Load()
	time.Sleep(700 * time.Millisecond)
	for range 20 {
		if err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &r); err != nil {
			t.Fatal(err)
		}
	}
	if m := a1.calls.Load(); m > n+1 {
		t.Fatalf("old address still got %d calls after the max age", m-n)
	}
}
