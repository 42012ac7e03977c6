package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// Targets name a service in a registry. A malformed one is an error that
// wraps ErrBadTarget and names the part at fault; credentials never appear
// in it.
func ExampleParseTarget() {
	t, err := discovery.ParseTarget("consul://127.0.0.1:8500/greeter?tag=v2&dc=east")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.Scheme, t.Hosts, t.Path, t.Query.Get("tag"), t.Query.Get("dc"))

	_, err = discovery.ParseTarget("etcd://root:hunter2@127.0.0.1:2379:99/services/greeter")
	fmt.Println(errors.Is(err, discovery.ErrBadTarget))
	fmt.Println(err)
	// Output:
	// consul [127.0.0.1:8500] greeter v2 east
	// true
	// discovery: malformed target "etcd://REDACTED@127.0.0.1:2379:99/services/greeter": authority: credentials are not allowed in a target; use the token option or environment
}

// Sanitize is what every watcher runs on a registry's answer before it
// publishes it: the bad entries are dropped with a reason each, and the
// rest is published in canonical spelling.
func ExampleSanitize() {
	valid, rejected := discovery.Sanitize([]discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:0080"},
		{ID: "b", Addr: "10.0.0.2"},
		{ID: "c", Addr: "[10.0.0.1]:80"},
		{ID: "d", Addr: "10.0.0.3:80", Weight: 0},
	})
	for _, e := range valid {
		fmt.Println("published", e.ID, e.Addr, "weight", e.Weight)
	}
	for _, r := range rejected {
		fmt.Println("rejected", r.Endpoint.ID+":", r.Err)
	}
	// Output:
	// published a 10.0.0.1:80 weight 1
	// published d 10.0.0.3:80 weight 1
	// rejected b: discovery: endpoint "b": invalid address "10.0.0.2": not host:port
	// rejected c: discovery: endpoint "c": address [10.0.0.1]:80 (10.0.0.1:80) already used by "a"
}

// A Watcher of a fixed list that the program replaces itself. Next returns
// the newest State, never a queue of old ones: two updates in a row are
// one State.
func ExampleStatic() {
	w, err := discovery.StaticAddrs("10.0.0.1:8080", "10.0.0.2:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	st, err := w.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(st.Endpoints), "endpoints")

	w.Update(discovery.Endpoint{ID: "a", Addr: "10.0.0.1:8080"})
	w.Update(discovery.Endpoint{ID: "a", Addr: "10.0.0.1:8080"}, discovery.Endpoint{ID: "c", Addr: "10.0.0.3:8080"})
	next, err := w.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range next.Endpoints {
		fmt.Println(e.ID, e.Addr)
	}
	fmt.Println("newer:", next.Version > st.Version)

	// An update with a bad endpoint changes nothing: no new State.
	err = w.Update(discovery.Endpoint{ID: "x", Addr: "not an address"})
	fmt.Println("bad update refused:", errors.Is(err, discovery.ErrInvalidAddr))
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	_, err = w.Next(short)
	fmt.Println("the set is kept:", errors.Is(err, context.DeadlineExceeded))
	// Output:
	// 2 endpoints
	// a 10.0.0.1:8080
	// c 10.0.0.3:8080
	// newer: true
	// bad update refused: true
	// the set is kept: true
}
