package etcdtest

import (
	"context"
	"testing"
	"time"
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
