package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
)

// ready waits until b has applied discovery's first State: until then Pick
// fails with ErrNoEndpoints ("discovery has not answered yet").
func ready(ctx context.Context, b *balancer.Balancer) error { return appliedAfter(ctx, b, 0) }

// appliedAfter waits until b has applied a discovery State newer than
// version v. The channel from Updated is taken before the check it guards,
// so an update between the two is not missed.
func appliedAfter(ctx context.Context, b *balancer.Balancer, v uint64) error {
	for {
		updated := b.Updated()
		if b.StateVersion() > v {
			return nil
		}
		select {
		case <-updated:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errReset stands for a transport error of a real request (a connection
// reset): breaker.Classify counts it against the node.
var errReset = errors.New("read tcp: connection reset by peer")

// A Balancer on its own, without rpcclient: pick a node, make the request,
// and report its outcome through Done, exactly once. Here one of three nodes
// fails every request; after 5 failures in a row (the default) its breaker
// opens and it gets no more requests until the breaker's open period (30 s
// by default) lets a probe through.
func Example() {
	w, err := discovery.StaticAddrs("10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close() // the Balancer reads the watcher but does not own it
	b := balancer.New(w, balancer.WithService("greeter"), balancer.WithPolicy(balancer.RoundRobin()))
	defer b.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ready(ctx, b); err != nil {
		log.Fatal(err)
	}
	requests := map[string]int{}
	for range 300 {
		res, err := b.Pick(ctx)
		if err != nil {
			log.Fatal(err) // an *balancer.Error that names the service and says why
		}
		addr := res.Endpoint.Addr
		requests[addr]++
		if addr == "10.0.0.2:8080" {
			res.Done(errReset) // the request failed on the node
		} else {
			res.Done(nil) // it succeeded (an rpc.ServerError would count as success too)
		}
	}
	fmt.Println("requests to the failing node:", requests["10.0.0.2:8080"])
	fmt.Println("requests to the others:", requests["10.0.0.1:8080"]+requests["10.0.0.3:8080"])
	for _, st := range b.Status() {
		fmt.Println(st.Endpoint.Addr, "breaker", st.Breaker)
	}
	// Output:
	// requests to the failing node: 5
	// requests to the others: 295
	// 10.0.0.1:8080 breaker closed
	// 10.0.0.2:8080 breaker open
	// 10.0.0.3:8080 breaker closed
}

// A retry asks for a node the request has not tried yet. Exclude is a
// preference: with every node excluded, Pick still returns one of them.
func ExampleExclude() {
	w, err := discovery.StaticAddrs("10.0.0.1:8080", "10.0.0.2:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	b := balancer.New(w) // P2C, the default policy
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ready(ctx, b); err != nil {
		log.Fatal(err)
	}

	first, err := b.Pick(ctx)
	if err != nil {
		log.Fatal(err)
	}
	first.Done(errReset)
	retry, err := b.Pick(ctx, balancer.Exclude(first.Endpoint.Addr))
	if err != nil {
		log.Fatal(err)
	}
	retry.Done(nil)
	fmt.Println("the retry went to another node:", retry.Endpoint.Addr != first.Endpoint.Addr)

	third, err := b.Pick(ctx, balancer.Exclude(first.Endpoint.Addr, retry.Endpoint.Addr))
	if err != nil {
		log.Fatal(err)
	}
	third.Done(nil)
	fmt.Println("with every node tried, a pick still gets one:", third.Endpoint.Addr != "")
	// Output:
	// the retry went to another node: true
	// with every node tried, a pick still gets one: true
}

// Consistent hashing: requests that carry the same key go to the same node
// while the set is stable, so a per-key cache on the nodes stays warm; when
// a node leaves, only its keys move.
func ExampleHashKey() {
	w, err := discovery.StaticAddrs("10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	b := balancer.New(w, balancer.WithPolicy(balancer.Maglev(1.25)))
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ready(ctx, b); err != nil {
		log.Fatal(err)
	}

	nodeOf := func(key string) string {
		res, err := b.Pick(ctx, balancer.HashKey(key))
		if err != nil {
			log.Fatal(err)
		}
		res.Done(nil) // one request at a time: the bounded load never spills it
		return res.Endpoint.Addr
	}
	keys := []string{"user:1", "user:2", "user:3", "user:4", "user:5", "user:6", "user:7", "user:8"}
	before := map[string]string{}
	for _, k := range keys {
		before[k] = nodeOf(k)
	}
	same := 0
	for _, k := range keys {
		if nodeOf(k) == before[k] {
			same++
		}
	}
	fmt.Printf("keys on the same node the second time: %d of %d\n", same, len(keys))

	// The node of user:1 leaves discovery; wait for the Balancer to apply it.
	gone := before["user:1"]
	var rest []string
	for _, a := range []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"} {
		if a != gone {
			rest = append(rest, a)
		}
	}
	v := b.StateVersion()
	if err := w.Update(discovery.Endpoint{ID: rest[0], Addr: rest[0]}, discovery.Endpoint{ID: rest[1], Addr: rest[1]}); err != nil {
		log.Fatal(err)
	}
	if err := appliedAfter(ctx, b, v); err != nil {
		log.Fatal(err)
	}
	moved, movedElsewhere := 0, 0
	for _, k := range keys {
		if now := nodeOf(k); now != before[k] {
			moved++
			if before[k] != gone {
				movedElsewhere++
			}
		}
	}
	fmt.Println("keys that moved are the departed node's own:", moved > 0 && movedElsewhere == 0)
	// Output:
	// keys on the same node the second time: 8 of 8
	// keys that moved are the departed node's own: true
}
