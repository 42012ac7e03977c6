package rpcclient_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/rpc"
	"sync"
	"time"

	"github.com/dialtone-go/dialtone/rpcclient"
)

// Greeter is a plain net/rpc service.
type Greeter struct{}

func (Greeter) Hello(name string, reply *string) error {
	*reply = "hello, " + name
	return nil
}

// serve starts a net/rpc server with Greeter and the heartbeat on loopback.
func serve() (addr string, stop func()) {
	srv := rpc.NewServer()
	srv.Register(Greeter{})
	rpcclient.RegisterHeartbeat(srv) // the one line that lets clients detect a hung server
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Accept(l)
	return l.Addr().String(), func() { l.Close() }
}

// Call a service by name: here a static list; in production
// "consul://127.0.0.1:8500/greeter" or "etcd://127.0.0.1:2379/services/greeter"
// (import discovery/consul or discovery/etcd for those schemes).
func Example() {
	addr, stop := serve()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, "static:///"+addr,
		rpcclient.WithAttemptTimeout(500*time.Millisecond), // each attempt; ctx bounds them all
		rpcclient.WithMaxAttempts(3))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var reply string
	// Idempotent: safe to retry on another node even after the request left.
	if err := c.Call(ctx, "Greeter.Hello", "dialtone", &reply, rpcclient.Idempotent()); err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply)
	// Output: hello, dialtone
}

// Servers set up as net/rpc's own documentation shows, with rpc.HandleHTTP,
// serve net/rpc over HTTP: WithHTTPPath makes each connection start with
// the CONNECT handshake that rpc.DialHTTP makes.
func ExampleWithHTTPPath() {
	srv := rpc.NewServer()
	srv.Register(Greeter{})
	rpcclient.RegisterHeartbeat(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(rpc.DefaultRPCPath, srv) // what rpc.HandleHTTP registers
	hs := &http.Server{Handler: mux}
	go hs.Serve(l)
	defer hs.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, "static:///"+l.Addr().String(), rpcclient.WithHTTPPath(rpc.DefaultRPCPath))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var reply string
	if err := c.Call(ctx, "Greeter.Hello", "HTTP", &reply, rpcclient.Idempotent()); err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply)
	// Output: hello, HTTP
}

// Calls over TLS: the dialer makes the handshake, so a server whose
// certificate does not verify is a failed dial, and the call goes on to
// another node.
func ExampleWithDialer() {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13} // RootCAs nil: the system's roots
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, "static:///127.0.0.1:8443",
		rpcclient.WithDialer((&tls.Dialer{Config: cfg}).DialContext))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// Stats are counters for a metrics exporter: here, one call the server
// refused (no such method), which is neither retried nor of unknown
// outcome.
func ExampleClient_Stats() {
	addr, stop := serve()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, "static:///"+addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var reply string
	err = c.Call(ctx, "Greeter.Goodbye", "dialtone", &reply, rpcclient.Idempotent())
	fmt.Println(err != nil)
	s := c.Stats()
	fmt.Printf("failed %d, retries %d, outcome unknown %d\n", s.Failed, s.Retries, s.OutcomeUnknown)
	// Output:
	// true
	// failed 1, retries 0, outcome unknown 0
}

// perNode is an Observer that counts attempts and errors per node; a real
// one would update a metrics library's counters and latency histograms.
type perNode struct {
	mu       sync.Mutex
	attempts map[string]int
	errors   map[string]int
	calls    int
}

func (p *perNode) ObserveAttempt(a rpcclient.AttemptInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attempts[a.Addr]++
	if a.Err != nil {
		p.errors[a.Addr]++
	}
}

func (p *perNode) ObserveCall(rpcclient.CallInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
}

// An Observer sees each attempt on its node and each call: here three
// calls, one of which the server refused.
func ExampleWithObserver() {
	addr, stop := serve()
	defer stop()

	obs := &perNode{attempts: map[string]int{}, errors: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, "static:///"+addr, rpcclient.WithObserver(obs))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var reply string
	for _, m := range []string{"Greeter.Hello", "Greeter.Hello", "Greeter.Goodbye"} {
		c.Call(ctx, m, "dialtone", &reply)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	fmt.Printf("%d calls, %d attempts on the node, %d failed\n", obs.calls, obs.attempts[addr], obs.errors[addr])
	// Output:
	// 3 calls, 3 attempts on the node, 1 failed
}
