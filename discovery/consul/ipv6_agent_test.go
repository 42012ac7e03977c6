package consul

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/hashicorp/consul/api"
)

// IPv6 end to end against a real agent whose HTTP API also listens on
// [::1]: the watcher reaches it at [::1]:port; a Registrar at an IPv6
// address with a TCP check the agent runs over IPv6 is published at the
// canonical bracketed address; an instance without a service address is
// published at its node's IPv6 address.
func TestAgentIPv6(t *testing.T) {
	tcp, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatalf("no IPv6 loopback (::1), which this test needs: %v", err)
	}
	defer tcp.Close()
	a := consultest.StartWithHCL(t, `addresses { http = "127.0.0.1 ::1" }`)
	_, port, _ := net.SplitHostPort(a.Addr())
	agent6 := "[::1]:" + port
	ctx := context.Background()

	w, err := New("web", WithAddress(agent6))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 10*time.Second, "the empty set", func(s discovery.State) bool { return s.Err == nil })

	taddr := tcp.Addr().String()
	_, tport, _ := net.SplitHostPort(taddr)
	// A non-canonical spelling of the same address.
	r1, err := NewRegistrar(ctx, Registration{Name: "web", Addr: "[0:0::1]:0" + tport,
		Check: Check{TCP: taddr, Interval: 200 * time.Millisecond, Timeout: time.Second}}, WithAddress(agent6))
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	// Registered at the canonical spelling, as the etcd Registrar does: two
	// spellings of one address are one instance, with one default ID.
	if want := "web-::1-" + tport; r1.ID() != want {
		t.Errorf("Registrar for [0:0::1]:0%s has ID %q, want %q", tport, r1.ID(), want)
	}
	if svc, _, err := agentClient(t, a).Agent().Service(r1.ID(), nil); err != nil || svc.Address != "::1" {
		t.Errorf("registered service %+v (err %v), want address ::1", svc, err)
	}
	r2, err := NewRegistrar(ctx, Registration{Name: "web", Addr: "[2001:DB8::2]:9002", Check: Check{TTL: 10 * time.Second}},
		WithAddress(agent6))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	c := agentClient(t, a)
	_, err = c.Catalog().Register(&api.CatalogRegistration{Node: "ext6", Address: "2001:db8::5",
		Service: &api.AgentService{ID: "n6", Service: "web", Address: "", Port: 9005}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := nextWhere(t, w, 15*time.Second, "three instances", func(s discovery.State) bool { return len(s.Endpoints) == 3 })
	if got, want := addrsOf(s), "[2001:db8::5]:9005,"+taddr+",[2001:db8::2]:9002"; s.Err != nil || !sameSet(got, want) {
		t.Fatalf("published %s (err %v), want %s", got, s.Err, want)
	}
	for _, e := range s.Endpoints {
		t.Logf("%s = %s", e.ID, e.Addr)
	}
	// The TCP check over IPv6 goes critical when the listener closes.
	tcp.Close()
	nextWhere(t, w, 15*time.Second, "the TCP instance dropped", func(s discovery.State) bool { return len(s.Endpoints) == 2 })
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	svcs, err := c.Agent().Services()
	if err != nil || len(svcs) != 0 {
		t.Fatalf("after Close the agent still has %v (err %v)", svcs, err)
	}
}

func sameSet(a, b string) bool {
	x, y := strings.Split(a, ","), strings.Split(b, ",")
	if len(x) != len(y) {
		return false
	}
	m := map[string]int{}
	for _, s := range x {
		m[s]++
	}
	for _, s := range y {
		if m[s]--; m[s] < 0 {
			return false
		}
	}
	return true
}
