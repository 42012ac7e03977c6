package rpcclient

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
)

// A client on the IPv6 loopback: a static target listing one server under
// two spellings and another once has two endpoints at the canonical
// spellings, calls reach both, and a dial to a closed [::1] port fails
// with a DialError naming the address.
func TestIPv6LoopbackStaticTarget(t *testing.T) {
	var a1, a2 Arith
	addr1, addr2 := serveArithAt(t, &a1, "[::1]:0"), serveArithAt(t, &a2, "[::1]:0")
	_, port1, _ := net.SplitHostPort(addr1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, "static:///[0:0::1]:"+port1+","+addr1+","+addr2)
	if err == nil || !strings.Contains(err.Error(), "already used") {
		// Static refuses duplicates: the two spellings are one address.
		if err == nil {
			c.Close()
		}
		t.Fatalf("Dial with two spellings of %s: %v, want a duplicate-address error", addr1, err)
	}
	c, err = Dial(ctx, "static:///[0:0::1]:0"+port1+","+strings.ToUpper(addr2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		var r int
		if err := c.Call(ctx, "Arith.Add", Pair{i, 1}, &r); err != nil || r != i+1 {
			t.Fatalf("call %d: %d, %v", i, r, err)
		}
	}
	if a1.calls.Load() == 0 || a2.calls.Load() == 0 {
		t.Fatalf("calls %d and %d: one server got none", a1.calls.Load(), a2.calls.Load())
	}
	var got []string
	for _, e := range c.Endpoints() {
		got = append(got, e.Addr)
	}
	if g := strings.Join(got, " "); g != addr1+" "+addr2 && g != addr2+" "+addr1 {
		t.Fatalf("endpoints %s, want %s and %s", g, addr1, addr2)
	}

	// A closed port on [::1].
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cc, err := Dial(ctx, "static:///"+closed, WithMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	defer ccancel()
	var r int
	err = cc.Call(cctx, "Arith.Add", Pair{1, 1}, &r)
	var de *DialError
	if !errors.As(err, &de) || de.Addr != closed || !strings.Contains(err.Error(), "dial "+closed) {
		t.Fatalf("call to closed %s: %v, want a DialError naming it", closed, err)
	}
}

// The balancer's address-keyed methods find a node whatever the spelling a
// caller gives of its address: discovery publishes one canonical spelling
// ("[::1]:80"), and an operator quarantining "[0:0::1]:80", or a caller
// excluding "[::0001]:80", means the same node.
func TestIPv6BalancerAddressSpellings(t *testing.T) {
	var a1, a2 Arith
	addr1, addr2 := serveArithAt(t, &a1, "[::1]:0"), serveArithAt(t, &a2, "[::1]:0")
	_, port1, _ := net.SplitHostPort(addr1)
	other := []string{"[0:0::1]:" + port1, "[::0001]:" + port1, "[0:0:0:0:0:0:0:1]:0" + port1}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, "static:///"+addr1+","+addr2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := c.Balancer()
	var r int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &r); err != nil {
		t.Fatal(err)
	}
	for _, s := range other {
		if !b.Listed(s) {
			t.Errorf("Listed(%q) = false; the node is %s", s, addr1)
		}
	}
	for _, s := range other {
		for range 20 {
			res, err := b.Pick(ctx, balancer.Exclude(s))
			if err != nil {
				t.Fatal(err)
			}
			res.Done(nil)
			if res.Endpoint.Addr == addr1 {
				t.Fatalf("Pick(Exclude(%q)) picked %s", s, addr1)
			}
		}
	}
	if !b.Quarantine(other[0], time.Hour) {
		t.Fatalf("Quarantine(%q) = false; the node is %s", other[0], addr1)
	}
	before := a1.calls.Load()
	for i := range 20 {
		if err := c.Call(ctx, "Arith.Add", Pair{i, 1}, &r); err != nil {
			t.Fatal(err)
		}
	}
	if n := a1.calls.Load() - before; n != 0 {
		t.Fatalf("%s quarantined as %q still got %d of 20 calls", addr1, other[0], n)
	}
}
