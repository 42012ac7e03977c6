package etcdtest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestStartPutRestart(t *testing.T) {
	srv := Start(t)
	cli := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	srv.Stop()
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := cli.Get(short, "k"); err == nil {
		t.Errorf("get from a stopped server succeeded")
	}
	cancelShort()

	srv.Restart(t)
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart got %v, want k=v1 (same data dir)", resp.Kvs)
	}
	if got := srv.Endpoints(); len(got) != 1 || got[0] == "" {
		t.Fatalf("Endpoints() = %v", got)
	}
}

func TestTwoServersIndependent(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Endpoints()[0] == b.Endpoints()[0] {
		t.Fatalf("two servers share an endpoint %s", a.Endpoints()[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Client(t).Put(ctx, "only-a", "x"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Client(t).Get(ctx, "only-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("server b sees server a's key")
	}
}

// TestTLSAndAuth: a server with WithClientTLS serves https:// only and
// requires a client certificate; after EnableAuth, a reader reads its prefix
// and nothing else, and root writes.
func TestTLSAndAuth(t *testing.T) {
	pki := NewPKI(t)
	srv := Start(t, WithClientTLS(pki))
	if ep := srv.Endpoints()[0]; !strings.HasPrefix(ep, "https://") {
		t.Fatalf("Endpoints() = %s; want https://", ep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Plaintext, and TLS without a client certificate, are refused.
	for name, mod := range map[string]func(*clientv3.Config){
		"plaintext":      func(c *clientv3.Config) { c.TLS = nil; c.Endpoints = []string{"http://" + srv.Hosts()[0]} },
		"no client cert": func(c *clientv3.Config) { c.TLS.GetClientCertificate = nil },
	} {
		cfg := srv.ClientConfig(t)
		mod(&cfg)
		cli := newClient(t, cfg)
		short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
		if _, err := cli.Get(short, "k"); err == nil {
			t.Errorf("%s: get succeeded", name)
		}
		cancelShort()
	}

	EnableAuth(t, srv.Client(t), "rootpw", User{Name: "reader", Password: "readpw", ReadPrefix: "svc/"})
	root := srv.ClientAs(t, "root", "rootpw")
	for _, k := range []string{"svc/a", "other/b"} {
		if _, err := root.Put(ctx, k, "v"); err != nil {
			t.Fatalf("root put %s: %v", k, err)
		}
	}
	reader := srv.ClientAs(t, "reader", "readpw")
	if resp, err := reader.Get(ctx, "svc/", clientv3.WithPrefix()); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reader get svc/: %v, %v; want one key", resp, err)
	}
	if _, err := reader.Get(ctx, "other/b"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("reader get other/b: %v; want permission denied", err)
	}
	if _, err := reader.Put(ctx, "svc/x", "v"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("reader put: %v; want permission denied", err)
	}
	if _, err := srv.Client(t).Get(ctx, "svc/a"); err == nil {
		t.Errorf("get without credentials succeeded")
	}
}
