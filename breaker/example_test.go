package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/rpc"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
)

// One breaker per backend address, used directly (the balancer does this for
// every node it picks). Begin before each request, End with its error after:
// three transport failures in a row open the breaker, an application error
// does not count against the node, and once the open period ends a probe is
// let through, whose success closes the breaker again.
func Example() {
	events := make(chan breaker.Event, 8)
	set := breaker.NewSet(breaker.Config{
		ConsecutiveFailures: 3,
		OpenTimeout:         50 * time.Millisecond,
		Jitter:              -1, // no jitter, for a predictable example
	}, breaker.WithOnStateChange(func(e breaker.Event) { events <- e }))
	defer set.Close()
	b := set.Get("10.0.0.1:8080")

	request := func(err error) error {
		t, refused := b.Begin()
		if refused != nil {
			return refused // ErrOpen or ErrTooManyRequests: try another node
		}
		b.End(t, err) // exactly once per Ticket
		return nil
	}
	request(rpc.ServerError("no such user")) // the node answered: a success
	request(io.EOF)                          // a transport failure
	request(io.EOF)
	request(io.EOF)
	fmt.Println("after 3 failures:", b.State())
	err := request(nil)
	fmt.Println("refused:", errors.Is(err, breaker.ErrOpen))

	// The Set's timer goroutine turns it half-open on time, with or
	// without traffic; WithOnStateChange reports each change.
	for _, want := range []breaker.State{breaker.Open, breaker.HalfOpen} {
		select {
		case e := <-events:
			if e.To != want {
				fmt.Println("unexpected event:", e.From, "->", e.To)
			}
		case <-time.After(5 * time.Second):
			fmt.Println("no event")
		}
	}
	fmt.Println("after the open period:", b.State())
	request(nil) // the probe succeeds
	fmt.Println("after the probe:", b.State())
	// Output:
	// after 3 failures: open
	// refused: true
	// after the open period: half-open
	// after the probe: closed
}

// Classify decides what an attempt's error means for its node.
func ExampleClassify() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, err := range []error{
		nil,
		rpc.ServerError("no such user"), // the server answered
		io.ErrUnexpectedEOF,             // the connection broke
		fmt.Errorf("call: %w", breaker.ErrAttemptTimeout), // the node was too slow
		ctx.Err(), // the caller gave up
	} {
		fmt.Printf("%v: %v\n", err, breaker.Classify(err))
	}
	// Output:
	// <nil>: success
	// no such user: success
	// unexpected EOF: failure
	// call: breaker: attempt timed out: failure
	// context canceled: excluded
}
