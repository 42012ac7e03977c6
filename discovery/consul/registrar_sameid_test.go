package consul

import (
	"context"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/consultest"
)

// A NewRegistrar whose ctx is already done sends nothing, so its cleanup
// must not deregister the ID: it removed a live Registrar's instance
// registered under the same ID (a restarted process's default
// Name-host-port ID, while the old one still drains).
func TestCancelledNewRegistrarLeavesAnInstanceOfTheSameID(t *testing.T) {
	a := consultest.Start(t)
	reg := Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001", Check: Check{TTL: 30 * time.Second}}
	live, err := NewRegistrar(context.Background(), reg, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r, err := NewRegistrar(ctx, reg, WithAddress(a.Addr())); err == nil {
		r.Close()
		t.Fatal("NewRegistrar with a cancelled ctx succeeded")
	}
	svcs, err := agentClient(t, a).Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["web-1"]; !ok {
		t.Fatal("a NewRegistrar that sent nothing deregistered the live instance registered under the same ID")
	}
}
