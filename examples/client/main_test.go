package main

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/dialtone-go/dialtone/examples/echo/echoapi"
	"github.com/dialtone-go/dialtone/rpcclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a minimal Echo service; the real server is examples/echo.
type echo struct{ name string }

func (e *echo) Echo(args *echoapi.Args, reply *echoapi.Reply) error {
	reply.Msg, reply.Server = args.Msg, e.name
	return nil
}

// deadAddr returns a loopback address where nothing listens any more.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serve runs an echo server on loopback until the test ends.
func serve(t *testing.T, name string) string {
	t.Helper()
	srv := rpc.NewServer()
	if err := srv.RegisterName(echoapi.ServiceName, &echo{name}); err != nil {
		t.Fatal(err)
	}
	if err := rpcclient.RegisterHeartbeat(srv); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); srv.ServeConn(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestCallsAndCountsByServer: the client reports every call and which
// server answered. The split between the two is the balancer's (P2C by
// default sends more to the faster one), so only the total is checked.
func TestCallsAndCountsByServer(t *testing.T) {
	a, b := serve(t, "a"), serve(t, "b")
	var out strings.Builder
	err := run(context.Background(), []string{"-target", "static:///" + a + "," + b, "-n", "4", "-interval", "0"}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"call 4: reply from ", "4 calls: 4 ok, 0 failed", "by server: ", "latency min"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	m := regexp.MustCompile(`by server: a=(\d+) b=(\d+)|by server: a=(\d+);|by server: b=(\d+);`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no per-server counts in:\n%s", got)
	}
	total := 0
	for _, v := range m[1:] {
		if v != "" {
			n, _ := strconv.Atoi(v)
			total += n
		}
	}
	if total != 4 {
		t.Fatalf("per-server counts add up to %d, want 4:\n%s", total, got)
	}
}

func TestTargetFromEnvironment(t *testing.T) {
	t.Setenv("DIALTONE_TARGET", "static:///"+serve(t, "env"))
	var out strings.Builder
	if err := run(context.Background(), []string{"-n", "1"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "reply from env") {
		t.Errorf("output:\n%s\nwant a reply from the server named by DIALTONE_TARGET", out.String())
	}
}

func TestFailuresSetTheExitStatus(t *testing.T) {
	dead := deadAddr(t)
	args := []string{"-target", "static:///" + dead, "-n", "2", "-interval", "0", "-timeout", "200ms"}

	var out strings.Builder
	if err := run(context.Background(), args, &out); err == nil || !strings.Contains(err.Error(), "2 of 2 calls failed") {
		t.Errorf("run with a dead server = %v, want 2 of 2 calls failed\n%s", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), append(args, "-max-failures", "2"), &out); err != nil {
		t.Errorf("run with -max-failures 2 = %v, want nil\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "call 1: failed after") {
		t.Errorf("output lacks the failure line:\n%s", out.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-n", "-1"}, {"-timeout", "0s"}, {"-bogus"}, {"extra"}} {
		if err := run(context.Background(), args, &strings.Builder{}); !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
	if err := run(context.Background(), []string{"-target", "nope"}, &strings.Builder{}); err == nil {
		t.Error("run with a malformed target succeeded")
	}
	// A malformed or unknown target is a usage error (exit 2), as for
	// dialtone watch and call, not "calls failed" (exit 1).
	for _, target := range []string{"nope", "static:///127.0.0.1", "consul:///echo?bogus=1", "zk:///echo"} {
		if err := run(context.Background(), []string{"-target", target}, &strings.Builder{}); !errors.Is(err, errUsage) {
			t.Errorf("run -target %q = %v, want a usage error", target, err)
		}
	}
}

// A call whose first node is down answers from the other, and the client
// shows both attempts: the failover the Observer reports.
func TestRetriedCallShowsItsAttempts(t *testing.T) {
	dead := deadAddr(t)
	live := serve(t, "live")
	var out strings.Builder
	// Enough calls for P2C to pick the dead node first at least once: a
	// failed dial quarantines it, so the later calls go to live at once.
	err := run(context.Background(), []string{"-target", "static:///" + dead + "," + live, "-n", "6", "-interval", "0"}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	want := regexp.MustCompile(`  attempt 1 on ` + regexp.QuoteMeta(dead) + `, [^:]+: .*refused\n  attempt 2 on ` + regexp.QuoteMeta(live) + `, [^:]+: ok\n`)
	if !want.MatchString(got) || !strings.Contains(got, "6 calls: 6 ok, 0 failed") {
		t.Fatalf("output:\n%s\nwant 6 ok calls, one of them showing attempt 1 refused on %s and attempt 2 ok on %s", got, dead, live)
	}
}
