package main

import (
	"context"
	"errors"
	"net/rpc/jsonrpc"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	_ "github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/discovery/etcd"
	"github.com/dialtone-go/dialtone/examples/echo/echoapi"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	"github.com/dialtone-go/dialtone/rpcclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stdout collects what run prints and hands over the listening address.
type stdout struct {
	mu    sync.Mutex
	text  strings.Builder
	addrs chan string
}

func newStdout() *stdout { return &stdout{addrs: make(chan string, 1)} }

func (s *stdout) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text.Write(p)
	for line := range strings.SplitSeq(string(p), "\n") {
		if a, ok := strings.CutPrefix(line, "listening on "); ok {
			select {
			case s.addrs <- a:
			default:
			}
		}
	}
	return len(p), nil
}

// startEcho runs the program with args until the returned stop is called, which
// returns run's error. It waits for the listening address.
func startEcho(t *testing.T, args ...string) (addr string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := newStdout()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, args, out) }()
	stopped := false
	stop = func() error {
		cancel()
		if stopped {
			return nil
		}
		stopped = true
		select {
		case err := <-errc:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("run did not return within 20s of its context's cancellation")
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	select {
	case addr = <-out.addrs:
		return addr, stop
	case err := <-errc:
		stopped = true
		t.Fatalf("run(%q) returned before listening: %v", args, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("run(%q) printed no address within 20s", args)
	}
	return "", stop
}

// call makes one Echo call through a client dialled at target.
func call(t *testing.T, target string, args echoapi.Args) (echoapi.Reply, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, target)
	if err != nil {
		t.Fatalf("Dial(%q): %v", target, err)
	}
	defer c.Close()
	var reply echoapi.Reply
	err = c.Call(ctx, echoapi.Method, &args, &reply, rpcclient.Idempotent())
	return reply, err
}

func TestEtcdRegistersAnswersAndDeregisters(t *testing.T) {
	etcdSrv := etcdtest.Start(t)
	hosts := strings.Join(etcdSrv.Hosts(), ",")
	t.Setenv("ETCD_ENDPOINTS", hosts)
	cli := etcdSrv.Client(t)

	addr, stop := startEcho(t, "-registry", "etcd", "-name", "e1", "-ttl", "5s", "-drain", "0s", "-zone", "z1")

	const key = "services/echo/e1"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get(%q) = %v, %v; want one key", key, resp, err)
	}
	e, err := etcd.ParseValue(key, "services/echo", resp.Kvs[0].Value)
	if err != nil || e.Addr != addr || e.Zone != "z1" {
		t.Fatalf("registered value %s parses to %+v, %v; want Addr %s, zone z1", resp.Kvs[0].Value, e, err, addr)
	}

	reply, err := call(t, "etcd://"+hosts+"/services/echo", echoapi.Args{Msg: "hello"})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if reply.Msg != "hello" || reply.Server != "e1" {
		t.Errorf("reply = %+v, want Msg hello from e1", reply)
	}

	if err := stop(); err != nil {
		t.Fatalf("run after cancel: %v, want nil", err)
	}
	resp, err = cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("after shutdown Get(%q) = %v, %v; want the key gone", key, resp.Kvs, err)
	}
}

func TestConsulRegistersAnswersAndDeregisters(t *testing.T) {
	agent := consultest.Start(t)
	t.Setenv("CONSUL_HTTP_ADDR", agent.Addr())
	_, stop := startEcho(t, "-registry", "consul", "-name", "c1", "-ttl", "2s", "-drain", "0s", "-service", "echo-consul")

	reply, err := call(t, "consul://"+agent.Addr()+"/echo-consul", echoapi.Args{Msg: "hi"})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if reply.Msg != "hi" || reply.Server != "c1" {
		t.Errorf("reply = %+v, want Msg hi from c1", reply)
	}

	if err := stop(); err != nil {
		t.Fatalf("run after cancel: %v, want nil", err)
	}
	client, err := api.NewClient(&api.Config{Address: agent.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	services, err := client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := services["c1"]; ok {
		t.Errorf("after shutdown the agent still lists c1: %v", services)
	}
}

// A call sleeping in the handler is cut short by shutdown: run returns at
// once and leaves no goroutine behind (goleak checks).
func TestShutdownEndsSleepingCalls(t *testing.T) {
	addr, stop := startEcho(t, "-name", "s1")
	c, err := rpcclient.Dial(context.Background(), "static:///"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		var reply echoapi.Reply
		done <- c.Call(ctx, echoapi.Method, &echoapi.Args{Msg: "slow", Sleep: time.Minute}, &reply)
	}()
	// Wait until the call is in flight on the server.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if eps := c.Endpoints(); len(eps) == 1 && eps[0].Pending == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the call never became pending")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v with a sleeping call; want it cut short", d)
	}
	if err := <-done; err == nil {
		t.Error("the sleeping call succeeded; want an error after shutdown")
	}
}

// The same port answers gob (rpcclient) and JSON-RPC (dialtone call).
func TestServesGobAndJSONRPC(t *testing.T) {
	addr, _ := startEcho(t, "-name", "both")
	reply, err := call(t, "static:///"+addr, echoapi.Args{Msg: "gob"})
	if err != nil || reply != (echoapi.Reply{Msg: "gob", Server: "both"}) {
		t.Errorf("gob call = %+v, %v", reply, err)
	}
	c, err := jsonrpc.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var jr echoapi.Reply
	if err := c.Call(echoapi.Method, &echoapi.Args{Msg: "json"}, &jr); err != nil || jr != (echoapi.Reply{Msg: "json", Server: "both"}) {
		t.Errorf("JSON-RPC call = %+v, %v", jr, err)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-registry", "zookeeper"},
		{"-ttl", "10ms"},
		{"-weight", "0"},
		{"-service", "a/b"},
		{"-nosuchflag"},
		{"extra"},
	} {
		err := run(context.Background(), args, &strings.Builder{})
		if !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
	err := run(context.Background(), []string{"-registry", "etcd", "-listen", "0.0.0.0:0"}, &strings.Builder{})
	if err == nil || !strings.Contains(err.Error(), "-advertise") {
		t.Errorf("registering a wildcard address: err = %v, want one that names -advertise", err)
	}
}
