package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	"github.com/dialtone-go/dialtone/internal/logbuf"
)

// waitTimeout bounds every wait in these tests. The race detector on two
// cores makes etcd slow, so it is generous; a passing test takes far less.
const waitTimeout = 30 * time.Second

// testCtx returns a context bounded by waitTimeout and cancelled at cleanup.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// logBuffer is a concurrency-safe log sink, for asserting what was logged.
type logBuffer = logbuf.Buffer

// tWriter sends log lines to t.Log, for tests whose logs help diagnose a
// failure. Only use it for components closed before the test ends.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func tLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startWatcher starts a Watcher on prefix and closes it at cleanup (before
// the client, which was registered earlier).
func startWatcher(t testing.TB, cli *clientv3.Client, prefix string, opts ...Option) *Watcher {
	t.Helper()
	opts = append([]Option{WithLogger(newLogger(&logBuffer{}))}, opts...)
	w, err := New(cli, prefix, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w
}

// waitState reads states from w until ok accepts one, and returns it. It
// fails the test when waitTimeout passes first.
func waitState(t testing.TB, w discovery.Watcher, what string, ok func(discovery.State) bool) discovery.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var last discovery.State
	for {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v; last state: %s", what, err, describe(last))
		}
		last = s
		if ok(s) {
			return s
		}
	}
}

// waitSet waits for a state without error whose endpoints are exactly want,
// written as "ID=addr" sorted by ID.
func waitSet(t testing.TB, w discovery.Watcher, want ...string) discovery.State {
	t.Helper()
	w2 := strings.Join(want, ",")
	return waitState(t, w, "set "+w2, func(s discovery.State) bool { return s.Err == nil && set(s) == w2 })
}

// set renders a state's endpoints as "ID=addr,ID=addr".
func set(s discovery.State) string {
	parts := make([]string, len(s.Endpoints))
	for i, e := range s.Endpoints {
		parts[i] = e.ID + "=" + e.Addr
	}
	return strings.Join(parts, ",")
}

func describe(s discovery.State) string {
	return fmt.Sprintf("v%d [%s] err=%v", s.Version, set(s), s.Err)
}

// put registers an endpoint under key in our value format.
func put(t testing.TB, cli *clientv3.Client, key string, e discovery.Endpoint) int64 {
	t.Helper()
	v, err := FormatValue(e)
	if err != nil {
		t.Fatalf("FormatValue: %v", err)
	}
	return putRaw(t, cli, key, string(v))
}

func putRaw(t testing.TB, cli *clientv3.Client, key, value string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := cli.Put(ctx, key, value)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

func del(t testing.TB, cli *clientv3.Client, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := cli.Delete(ctx, key)
	if err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	return resp.Header.Revision
}

// truth lists prefix/ directly and renders it like set, skipping values
// that do not parse.
func truth(t testing.TB, cli *clientv3.Client, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("get %s: %v", prefix, err)
	}
	var eps []discovery.Endpoint
	for _, kv := range resp.Kvs {
		if e, err := ParseValue(string(kv.Key), prefix, kv.Value); err == nil {
			eps = append(eps, e)
		}
	}
	valid, _ := discovery.Sanitize(eps)
	return set(discovery.State{Endpoints: valid})
}

func ep(id, addr string) discovery.Endpoint {
	return discovery.Endpoint{ID: id, Addr: addr, Weight: 1}
}

// startEtcd runs an embedded etcd and returns it with a client.
func startEtcd(t testing.TB) (*etcdtest.Server, *clientv3.Client) {
	t.Helper()
	srv := etcdtest.Start(t)
	return srv, srv.Client(t)
}

// waitFor polls ok every few milliseconds for up to 10 s.
func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: timed out", what)
		}
	}
}
