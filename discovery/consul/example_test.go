package consul_test

import (
	"context"
	"log"
	"time"

	"github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/rpcclient"
)

// A client with watcher options a consul:// target cannot carry (a token
// from a secret store, a request timeout of its own): build the watcher and
// hand it to rpcclient.New, which leaves closing it to the caller. (The
// same with a target: rpcclient.Dial(ctx, "consul://127.0.0.1:8500/greeter").)
func ExampleNew() {
	w, err := consul.New("greeter",
		consul.WithAddress("127.0.0.1:8500"),
		consul.WithToken("from-your-secret-store"),
		consul.WithTags("v2"),
		consul.WithRequestTimeout(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close() // after the client that reads it

	c, err := rpcclient.New(w, rpcclient.WithAttemptTimeout(500*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// ... c.Call(ctx, "Greeter.Hello", args, &reply, rpcclient.Idempotent()) as with rpcclient.Dial ...
}

// A server registers itself with the local agent and keeps its TTL check
// passing; Close deregisters it. A process that dies stops updating the
// check, the instance turns critical, and watchers drop it.
func ExampleNewRegistrar() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reg, err := consul.NewRegistrar(ctx, consul.Registration{
		Name:  "greeter",
		Addr:  "10.0.0.1:9000",
		Tags:  []string{"v2"},
		Meta:  map[string]string{"zone": "east"}, // becomes discovery.Endpoint.Zone
		Check: consul.Check{TTL: 10 * time.Second},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()

	// ... serve until shutdown ...
}
