package rpcclient

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	_ "github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/internal/backoff"
)

// TestOneNodeCallGivesUpAfterTwoRefreshWaits pins what Client.Call's doc
// says of a call whose only node fails to dial: it waits for discovery or
// the reconnect backoff at most twice, then fails with the dial error, long
// before its deadline. (The doc used to say it waits "as long as ctx
// allows" and State TransientFailure "as its deadline allows ... then
// dials": a node back 600 ms into a call with a 3 s deadline was never
// reached; the call failed after 200 ms.)
func TestOneNodeCallGivesUpAfterTwoRefreshWaits(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // refused until the server comes back

	srv := rpc.NewServer()
	var a Arith
	srv.Register(&a)
	RegisterHeartbeat(srv)

	c, _ := newTestClient(t, []string{addr},
		WithConnectBackoff(100*time.Millisecond, 1, 100*time.Millisecond, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	var sum int
	err = c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum, Idempotent())
	took := time.Since(start)
	var e *Error
	var de *DialError
	if !errors.As(err, &e) || !errors.As(err, &de) || e.Attempts != 3 {
		t.Fatalf("Call = %v after %v; want the dial error after 3 attempts", err, took)
	}
	if took > 1500*time.Millisecond {
		t.Fatalf("Call failed after %v; want it to give up after two 100 ms backoff waits", took)
	}
	// The node comes back only now, after the call gave up: a node that
	// came back at a fixed time into the call would be reached by a call
	// this busy box had stalled past that time, and the test would fail
	// for the box, not the client. The next call is answered.
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening again on %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go srv.Accept(l)
	if err := c.Call(ctx, "Arith.Add", Pair{1, 2}, &sum, Idempotent()); err != nil || sum != 3 {
		t.Fatalf("call after the node came back: %d, %v", sum, err)
	}
}

// TestMaxAttemptsOneStillGoesOnAfterAFailedDial pins WithMaxAttempts' doc:
// n bounds the attempts whose request may have left; with n = 1 a call that
// picks a node that refuses the dial still goes on to another one.
func TestMaxAttemptsOneStillGoesOnAfterAFailedDial(t *testing.T) {
	var a Arith
	live := serveArith(t, &a)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	// Round robin, so that the dead node is picked in turn.
	c, _ := newTestClient(t, []string{dead, live}, WithMaxAttempts(1),
		withoutNodeHealth(balancer.WithPolicy(balancer.RoundRobin())),
		WithConnectBackoff(time.Millisecond, 1, time.Millisecond, 0))
	dialled := func() uint64 {
		for _, e := range c.Endpoints() {
			if e.Addr == dead {
				return e.Dials
			}
		}
		return 0
	}
	calls := 0
	for ; calls < 200 && dialled() < 3; calls++ {
		var sum int
		if err := c.Call(context.Background(), "Arith.Add", Pair{calls, 1}, &sum); err != nil {
			t.Fatalf("call %d: %v", calls, err)
		}
		time.Sleep(2 * time.Millisecond) // past the dead node's backoff and quarantine
	}
	if dialled() == 0 {
		t.Fatal("the dead node was never picked; the test proves nothing")
	}
	t.Logf("%d calls succeeded with WithMaxAttempts(1); %d of them dialled the dead node first", calls, dialled())
}

// TestFirstCallsFailOnAFirstDiscoveryError pins Dial's doc: the first calls
// wait for discovery's first answer, not for endpoints. A first answer that
// is an error (a registry not reachable yet) fails them at once, whatever
// their deadline. (The doc used to say they "wait for endpoints as their
// context allows".)
func TestFirstCallsFailOnAFirstDiscoveryError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agent := l.Addr().String()
	l.Close() // no Consul agent there
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := Dial(ctx, "consul://"+agent+"/greeter")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for c.Balancer().StateVersion() == 0 { // the watcher's first answer: its error
		select {
		case <-c.Balancer().Updated():
		case <-ctx.Done():
			t.Fatal("no answer from the watcher")
		}
	}
	start := time.Now()
	var r string
	err = c.Call(ctx, "Greeter.Hello", "x", &r)
	if !errors.Is(err, balancer.ErrNoEndpoints) || time.Since(start) > time.Second {
		t.Fatalf("Call = %v after %v; want ErrNoEndpoints at once", err, time.Since(start))
	}
}

// readmeRow returns the cells of the README table row whose first cell
// starts with the option's name in backquotes.
func readmeRow(t *testing.T, readme, option string) []string {
	t.Helper()
	for line := range strings.SplitSeq(readme, "\n") {
		if strings.HasPrefix(line, "| `"+option) {
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			return cells
		}
	}
	t.Fatalf("README has no table row for %s", option)
	return nil
}

// TestReadmeDefaultsAreTheCodes checks each default the README's rpcclient
// table and the option docs state against defaultOptions: a changed default
// must change the README (and this test) with it.
func TestReadmeDefaultsAreTheCodes(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	o := defaultOptions()
	for _, c := range []struct {
		option, cell string
		ok           bool
	}{
		{"WithAttemptTimeout(d)", "none (ctx only)", o.attemptTimeout == 0},
		{"WithMaxAttempts(n)", "3", o.maxAttempts == 3},
		{"WithRetryBackoff(base, max)", "25 ms, 250 ms, full jitter",
			o.retryBackoff == backoff.Policy{Base: 25 * time.Millisecond, Factor: 2, Max: 250 * time.Millisecond, Full: true}},
		{"WithRetryBudget(ratio, perSec)", "0.2 (20 % of calls) + 10/s", o.budgetRatio == 0.2 && o.budgetMinPerSec == 10},
		{"WithIdempotentMethods(m...)", "not idempotent", len(o.idempotent) == 0},
		{"WithDialTimeout(d)", "3 s", o.dialTimeout == 3*time.Second},
		{"WithConnectBackoff(base, f, max, jitter)", "1 s, ×1.6, 120 s, ±20 % (gRPC)",
			o.connectBackoff == backoff.Policy{Base: time.Second, Factor: 1.6, Max: 120 * time.Second, Jitter: 0.2}},
		{"WithHeartbeat(every, timeout)", "1 s, 1 s", o.heartbeat == time.Second && o.heartbeatTimeout == time.Second},
		{"WithReadTimeout(d)", "30 s", o.readTimeout == 30*time.Second},
		{"WithMaxMessageSize(n)", "4 MiB", o.maxMessage == 4<<20},
		{"WithPoolSize(n)", "1", o.poolSize == 1},
		{"WithDrainGrace(d)", "10 s", o.drainGrace == 10*time.Second},
		{"WithMaxConnectionAge(d)", "off", o.maxConnAge == 0},
		{"WithHedging(d)", "off", o.hedgeDelay == 0},
		{"WithObserver(o)", "none", o.observer == nil},
		{"WithLogger(l)", "nowhere", !o.logger.Enabled(context.Background(), slog.LevelError)},
		{"WithBalancer(opts...)", "P2C (peak-EWMA latency × in-flight), breakers on", len(o.balancerOpts) == 0},
	} {
		row := readmeRow(t, readme, c.option)
		if len(row) < 2 || row[1] != c.cell {
			t.Errorf("README row %s: default %q, want %q", c.option, row[1], c.cell)
		}
		if !c.ok {
			t.Errorf("%s: the code's default is not the README's %q", c.option, c.cell)
		}
	}
	// Not in the table: the package doc's keepalive (30 s) and the
	// connection that counts as a failed dial (younger than 1 s).
	if o.keepAlive != 30*time.Second {
		t.Errorf("keepalive %v, documented 30 s", o.keepAlive)
	}
	if provenAfter != time.Second {
		t.Errorf("provenAfter %v, documented 1 s", provenAfter)
	}
	if minDigestRate != 1<<20 {
		t.Errorf("heartbeat grace rate %d B/s, documented 1 s more per MiB", minDigestRate)
	}
}
