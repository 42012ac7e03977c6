package etcd_test

import (
	"context"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/etcd"
	"github.com/dialtone-go/dialtone/rpcclient"
)

// A client whose etcd connection needs more than an etcd:// target carries
// (a logger, its own timeouts or dial options): make the etcd client, watch
// the prefix, and hand the watcher to rpcclient.New. The caller closes them
// in reverse order. (The same with a target: rpcclient.Dial(ctx,
// "etcd://127.0.0.1:2379/services/greeter").)
func ExampleNew() {
	cfg, err := etcd.ConfigFromEnv("127.0.0.1:2379") // TLS and auth from ETCDCTL_* variables
	if err != nil {
		log.Fatal(err)
	}
	cfg.DialTimeout = 2 * time.Second
	cli, err := clientv3.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	w, err := etcd.New(cli, "services/greeter", etcd.WithRequestTimeout(3*time.Second))
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

// A server registers itself under the prefix its clients watch, on a lease
// that a goroutine keeps alive (10 s TTL by default): when the process dies,
// the key expires and clients drop the address. Close revokes the lease, so
// a clean shutdown is seen at once.
func ExampleNewRegistrar() {
	cfg, err := etcd.ConfigFromEnv() // ETCD_ENDPOINTS, then 127.0.0.1:2379
	if err != nil {
		log.Fatal(err)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reg, err := etcd.NewRegistrar(ctx, cli, "services/greeter",
		discovery.Endpoint{ID: "greeter-1", Addr: "10.0.0.1:9000", Zone: "east"},
		etcd.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close() // before the client it uses

	// ... serve until shutdown ...
}
