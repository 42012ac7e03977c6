package main

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cancelOnWrite records what is written and cancels a context on the first
// write.
type cancelOnWrite struct {
	mu     sync.Mutex
	buf    strings.Builder
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	w.cancel()
	return len(p), nil
}

func (w *cancelOnWrite) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestWatchStaticPrintsTheSet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &cancelOnWrite{cancel: cancel}
	var stderr strings.Builder
	code := run(ctx, []string{"watch", "static:///127.0.0.1:1,127.0.0.1:2"}, stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit status %d, want 0 (a watch ended by its context); stderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"version 1: 2 endpoints",
		"ID", "ADDR", "WEIGHT", "HEALTH", "ZONE",
		"127.0.0.1:1  127.0.0.1:1  1       healthy  -",
		"127.0.0.1:2  127.0.0.1:2  1       healthy  -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("watch output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "error") {
		t.Errorf("watch output shows an error for a static set:\n%s", out)
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// lkgWatcher's first State holds a last known good set and a registry
// error, as a Watcher publishes after an outage.
type lkgWatcher struct{ closed chan struct{} }

func (w lkgWatcher) Next(ctx context.Context) (discovery.State, error) {
	select {
	case <-w.closed:
		return discovery.State{}, discovery.ErrClosed
	default:
	}
	return discovery.State{Version: 2, Synced: time.Now(), Err: errors.New("registry down"),
		Endpoints: []discovery.Endpoint{{ID: "a", Addr: "10.0.0.1:80", Weight: 1}}}, nil
}
func (lkgWatcher) ResolveNow()    {}
func (w lkgWatcher) Close() error { close(w.closed); return nil }

// watch -once exits 1 only when the first set holds only a registry error:
// one that still shows a last known good set is a success.
func TestWatchOnceWithALastKnownGoodSetSucceeds(t *testing.T) {
	discovery.Register("dialtone-lkg-test", func(context.Context, discovery.Target) (discovery.Watcher, error) {
		return lkgWatcher{closed: make(chan struct{})}, nil
	})
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"watch", "-once", "dialtone-lkg-test:///svc"}, &stdout, &stderr)
	if code != exitOK {
		t.Errorf("exit status %d, want 0 for a first set with endpoints and an error; stderr: %s", code, stderr.String())
	}
	if out := stdout.String(); !strings.Contains(out, "1 endpoint") || !strings.Contains(out, "error: registry down (showing the last known good set)") {
		t.Errorf("output lacks the set and the error:\n%s", out)
	}
}

func TestWatchOnceShowsTheRegistryError(t *testing.T) {
	// Nothing listens on port 1: Consul's first answer is an error.
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"watch", "-once", "consul://127.0.0.1:1/echo"}, &stdout, &stderr)
	if code != exitFail {
		t.Errorf("exit status %d, want 1 for a first set holding only an error", code)
	}
	if out := stdout.String(); !strings.Contains(out, "0 endpoints") || !strings.Contains(out, "error: ") || !strings.Contains(out, "connection refused") {
		t.Errorf("output lacks the count and the discovery error:\n%s", out)
	}
	if out := stdout.String(); strings.Contains(out, "last known good") {
		t.Errorf("output claims a last known good set with none to show:\n%s", out)
	}
}

func TestHelpNamesSubcommandsSchemesAndEnvironment(t *testing.T) {
	for _, arg := range []string{"help", "-h", "--help"} {
		var stdout, stderr strings.Builder
		if code := run(context.Background(), []string{arg}, &stdout, &stderr); code != exitOK {
			t.Errorf("%s: exit status %d, want 0", arg, code)
		}
		out := stdout.String()
		for _, want := range []string{
			"dialtone watch", "dialtone call", "dialtone help",
			"consul://", "etcd://", "static:///", "healthy=passing|warning", "tag=", "dc=",
			"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "ETCD_ENDPOINTS", "Examples:",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: help lacks %q", arg, want)
			}
		}
		if stderr.Len() > 0 {
			t.Errorf("%s: help wrote to stderr: %s", arg, stderr.String())
		}
	}
}

func TestSubcommandHelp(t *testing.T) {
	for cmd, flag := range map[string]string{"watch": "-once", "call": "-timeout"} {
		var stdout, stderr strings.Builder
		if code := run(context.Background(), []string{"help", cmd}, &stdout, &stderr); code != exitOK {
			t.Errorf("help %s: exit status %d", cmd, code)
		}
		if !strings.Contains(stdout.String(), "dialtone "+cmd) || !strings.Contains(stdout.String(), flag) {
			t.Errorf("help %s lacks its synopsis or %s:\n%s", cmd, flag, stdout.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"help", "frobnicate"},
		{"watch"},
		{"watch", "a", "b"},
		{"watch", "static:///127.0.0.1:1", "extra"},
		{"watch", "-once", "static:///127.0.0.1:1", "extra"},
		{"watch", "-bogus", "static:///127.0.0.1:1"},
		{"watch", "nope"},
		{"watch", "zk:///x"},
		{"call", "static:///127.0.0.1:1"},
		{"call", "static:///127.0.0.1:1", "NoDot", "{}"},
		{"call", "static:///127.0.0.1:1", "Echo.Echo", "{not json"},
	} {
		var stdout, stderr strings.Builder
		// A usage error is found before the context matters; a cancelled
		// one ends at once a run that wrongly went on.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if code := run(ctx, args, &stdout, &stderr); code != exitUsage {
			t.Errorf("run(%q): exit status %d, want 2", args, code)
		}
		if stdout.Len() > 0 {
			t.Errorf("run(%q) wrote to stdout: %s", args, stdout.String())
		}
		if stderr.Len() == 0 {
			t.Errorf("run(%q) explained nothing on stderr", args)
		}
	}
	var stdout, stderr strings.Builder
	run(context.Background(), []string{"frobnicate"}, &stdout, &stderr)
	if !strings.Contains(stderr.String(), `unknown subcommand "frobnicate"`) || !strings.Contains(stderr.String(), "Usage:") {
		t.Errorf("unknown subcommand: stderr lacks the reason or the usage:\n%s", stderr.String())
	}
}

// Echo is a JSON-RPC test service.
type Echo struct{}

// EchoArgs and EchoReply are its messages.
type EchoArgs struct{ Msg string }
type EchoReply struct{ Msg, Server string }

func (Echo) Echo(a *EchoArgs, r *EchoReply) error { r.Msg, r.Server = a.Msg, "json1"; return nil }
func (Echo) Fail(a *EchoArgs, r *EchoReply) error { return rpc.ServerError("refused: " + a.Msg) }

// jsonServer serves Echo over net/rpc/jsonrpc on loopback until the test ends.
func jsonServer(t *testing.T) string {
	t.Helper()
	srv := rpc.NewServer()
	if err := srv.Register(Echo{}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); srv.ServeCodec(jsonrpc.NewServerCodec(c)) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// refusedAddr returns a loopback address nothing listens on: a dial to it
// is refused.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestCallJSON(t *testing.T) {
	addr := jsonServer(t)
	// A dead address first: the failed dial is retried on the live one.
	dead := refusedAddr(t)
	target := "static:///" + dead + "," + addr

	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"call", target, "Echo.Echo", `{"Msg":"hi"}`}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr.String())
	}
	if got, want := stdout.String(), "{\n  \"Msg\": \"hi\",\n  \"Server\": \"json1\"\n}\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if !strings.Contains(stderr.String(), "answered by "+addr) {
		t.Errorf("stderr does not say who answered:\n%s", stderr.String())
	}

	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), []string{"call", "static:///" + addr, "Echo.Fail", `{"Msg":"no"}`}, &stdout, &stderr)
	if code != exitFail || !strings.Contains(stderr.String(), "refused: no") {
		t.Errorf("a method error: exit status %d, stderr %q; want 1 and the server's message", code, stderr.String())
	}
}

// TestWatchInterruptedWhileLoggingIn: Ctrl-C while the etcd:// builder logs
// in (ETCDCTL_USER set) to an etcd that does not answer ends dialtone watch
// at once with status 0, as an interrupted watch does, instead of after the
// 5 s login timeout with status 1 and "context deadline exceeded".
func TestWatchInterruptedWhileLoggingIn(t *testing.T) {
	silent := etcdtest.Silent(t) // an etcd that never answers
	for _, v := range []string{"ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY", "ETCDCTL_PASSWORD", "ETCDCTL_INSECURE_TRANSPORT", "ETCDCTL_INSECURE_SKIP_TLS_VERIFY"} {
		t.Setenv(v, "")
	}
	t.Setenv("ETCDCTL_USER", "alice:pw")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(200*time.Millisecond, cancel)
	var stdout, stderr strings.Builder
	start := time.Now()
	code := run(ctx, []string{"watch", "etcd://" + silent + "/services/echo"}, &stdout, &stderr)
	if took := time.Since(start); code != exitOK || took > 2*time.Second {
		t.Fatalf("interrupted after 200 ms: exit status %d after %v, want 0 at once; stderr:\n%s", code, took.Round(time.Millisecond), stderr.String())
	}
}

// TestCallRetriesAFailedDial: a call whose first pick is a dead address is
// retried on the live one. TestCallJSON lists a dead and a live address,
// but the balancer picks the live one first about half the time, so it
// passes most runs with the retry removed; here calls are made until one
// has picked the dead address first (1 in 2 each), and every call must
// succeed.
func TestCallRetriesAFailedDial(t *testing.T) {
	addr := jsonServer(t)
	dead := refusedAddr(t)
	target := "static:///" + dead + "," + addr
	for i := 0; ; i++ {
		if i == 64 {
			t.Fatalf("64 calls, none picked %s first: the retry was not exercised", dead)
		}
		var stdout, stderr strings.Builder
		code := run(context.Background(), []string{"call", target, "Echo.Echo", `{"Msg":"hi"}`}, &stdout, &stderr)
		if code != exitOK || !strings.Contains(stdout.String(), `"Server": "json1"`) {
			t.Fatalf("call %d: exit status %d, stdout %q; stderr:\n%s", i, code, stdout.String(), stderr.String())
		}
		if strings.Contains(stderr.String(), dead) {
			if !strings.Contains(stderr.String(), "trying another endpoint") || !strings.Contains(stderr.String(), "answered by "+addr) {
				t.Fatalf("call %d tried %s but does not say it retried on %s:\n%s", i, dead, addr, stderr.String())
			}
			return
		}
	}
}
