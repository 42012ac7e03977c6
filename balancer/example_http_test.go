package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
)

// get sends one GET to the node res picked and reports its outcome through
// res.Done, exactly once. The attempt is bounded by a context whose cause is
// breaker.ErrAttemptTimeout: net/http returns that cause when the timer
// fires, and Classify counts it against the node. A plain
// context.WithTimeout would end the attempt with context.DeadlineExceeded
// itself, which Classify takes for the caller giving up: not counted, and a
// hung node would never be taken out. (http.Client.Timeout counts against
// the node too.) A response is never an error to net/http, whatever its
// status: the caller decides which statuses are the node's failures (here
// 502, 503 and 504) and passes them to Done as errors; any other status is
// the node's answer, a success for it. get returns an error only for a
// failure of the node, which the caller may retry on another.
func get(ctx context.Context, c *http.Client, res balancer.Result, path string) (status int, body []byte, err error) {
	ctx, cancel := context.WithTimeoutCause(ctx, 100*time.Millisecond, breaker.ErrAttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+res.Endpoint.Addr+path, nil)
	if err != nil {
		res.Done(nil) // nothing was sent: not the node's failure
		return 0, nil, err
	}
	defer func() { res.Done(err) }()
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err // a transport error or the attempt's timeout: Failure; the caller's ctx: Excluded
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err == nil {
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			err = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	return resp.StatusCode, body, err
}

// A Balancer on its own in front of plain HTTP backends (net/http). One of
// the three hangs: each attempt on it times out, the request is retried on
// another node (Exclude), and after 5 timeouts in a row its breaker opens
// and it gets no more requests.
func Example_netHTTP() {
	var addrs []string
	for i := range 3 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if i == 1 {
				<-r.Context().Done() // hangs until the client gives up
				return
			}
			io.WriteString(w, "hello")
		}))
		defer srv.Close()
		addrs = append(addrs, strings.TrimPrefix(srv.URL, "http://"))
	}
	w, err := discovery.StaticAddrs(addrs...)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	b := balancer.New(w, balancer.WithService("hello"), balancer.WithPolicy(balancer.RoundRobin()))
	defer b.Close()
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ready(ctx, b); err != nil {
		log.Fatal(err)
	}
	failed, timeouts := 0, 0
	for range 30 {
		var tried []string
		for attempt := 0; attempt < 3; attempt++ {
			res, err := b.Pick(ctx, balancer.Exclude(tried...))
			if err != nil {
				log.Fatal(err)
			}
			tried = append(tried, res.Endpoint.Addr)
			_, _, err = get(ctx, client, res, "/")
			if err == nil {
				break
			}
			if errors.Is(err, breaker.ErrAttemptTimeout) && res.Endpoint.Addr == addrs[1] {
				timeouts++ // (a healthy node slowed by a busy machine is retried too, and not counted here)
			}
			if attempt == 2 {
				failed++
			}
		}
	}
	fmt.Println("requests that failed:", failed)
	fmt.Println("attempts that timed out on the hung node:", timeouts)
	for _, st := range b.Status() {
		if st.Endpoint.Addr == addrs[1] {
			fmt.Println("the hung node's breaker:", st.Breaker)
		}
	}
	// Output:
	// requests that failed: 0
	// attempts that timed out on the hung node: 5
	// the hung node's breaker: open
}
