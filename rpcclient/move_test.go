package rpcclient

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/rpctest"
	"github.com/hashicorp/consul/api"
)

func registerEcho(t *testing.T, c *api.Client, id, addr string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "echo", Address: host, Port: p}); err != nil {
		t.Fatal(err)
	}
}

// Every backend restarts on a new port and registers again: calls recover
// within 1 s, through ResolveNow, without waiting out the blocking query.
func TestEveryBackendMovesRecoveryByResolveNow(t *testing.T) {
	agent := consultest.Start(t)
	ac := agent.API(t, "")
	var srvs []*rpctest.Server
	for i := range 3 {
		s := rpctest.Start(t, rpctest.WithName(fmt.Sprintf("m%d", i)))
		srvs = append(srvs, s)
		registerEcho(t, ac, fmt.Sprintf("echo-%d", i), s.Addr())
	}
	hold := consultest.Hold(t, agent.Addr(), 30*time.Second)
	w, err := consul.New("echo", consul.WithAddress(hold.Addr()),
		consul.WithWaitTime(30*time.Second), consul.WithResolveInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := New(w, WithConnectBackoff(50*time.Millisecond, 1.6, time.Second, 0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var r rpctest.EchoReply
		return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{}, &r, Idempotent())
	}
	for range 30 {
		if err := echo(); err != nil {
			t.Fatalf("before the move: %v", err)
		}
	}
	before := hold.ConsistentReads()

	// Move every backend to a new port and re-register it.
	for i, s := range srvs {
		s.Stop()
		s.Restart(t, false)
		registerEcho(t, ac, fmt.Sprintf("echo-%d", i), s.Addr())
	}
	moved := time.Now()
	var recovered time.Duration
	var failed int
	for time.Since(moved) < 5*time.Second {
		if err := echo(); err != nil {
			failed++
			continue
		}
		recovered = time.Since(moved)
		break
	}
	if recovered == 0 {
		t.Fatal("calls did not recover within 5 s")
	}
	if recovered > time.Second {
		t.Fatalf("calls recovered after %v, want within 1 s", recovered)
	}
	if hold.ConsistentReads() == before || w.Stats().ForcedReads == 0 {
		t.Fatal("no ResolveNow read reached Consul: the recovery was not ResolveNow's doing")
	}
	// The blocking query is held 30 s by the proxy, so the new set can only
	// have come from the forced, consistent reads.
	for range 30 {
		if err := echo(); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
	t.Logf("recovered %v after every backend moved (%d calls failed meanwhile); %d ResolveNow reads", recovered, failed, w.Stats().ForcedReads)
}
