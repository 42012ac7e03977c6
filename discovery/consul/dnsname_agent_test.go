package consul

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/hashicorp/consul/api"
)

// Host names end to end against a real agent: a Registrar at
// "LocalHost:port" with a TCP check the agent runs against the name is
// published at "localhost:port"; a service address and a node address that
// are names are published in lower case; a non-ASCII name is dropped and
// the others kept.
func TestAgentHostNames(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	a := consultest.Start(t)
	w, err := New("web", WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 10*time.Second, "the empty set", func(s discovery.State) bool { return s.Err == nil })
	_, tport, _ := net.SplitHostPort(tcp.Addr().String())
	r, err := NewRegistrar(context.Background(), Registration{Name: "web", Addr: "LocalHost:" + tport,
		Check: Check{TCP: "localhost:" + tport, Interval: 200 * time.Millisecond, Timeout: time.Second}}, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := agentClient(t, a)
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext", Address: "Node.Example",
		Service: &api.AgentService{ID: "n1", Service: "web", Port: 9005}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext2", Address: "10.0.0.9",
		Service: &api.AgentService{ID: "n2", Service: "web", Address: "Svc.Example.", Port: 9006}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext3", Address: "10.0.0.10",
		Service: &api.AgentService{ID: "n3", Service: "web", Address: "bücher.example", Port: 9007}}, nil); err != nil {
		t.Fatal(err)
	}
	want := "localhost:" + tport + ",node.example:9005,svc.example.:9006"
	s := nextWhere(t, w, 15*time.Second, want, func(s discovery.State) bool { return sameSet(addrsOf(s), want) })
	if s.Err != nil || w.Stats().Rejected == 0 {
		t.Errorf("state error %v, %d rejected; want no error (the others are kept) and bücher.example counted", s.Err, w.Stats().Rejected)
	}
	tcp.Close()
	nextWhere(t, w, 15*time.Second, "the TCP instance dropped", func(s discovery.State) bool { return len(s.Endpoints) == 2 })
}
