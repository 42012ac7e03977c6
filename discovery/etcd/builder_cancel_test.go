package etcd

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// TestTargetLoginEndsWithCtx: with credentials, the etcd:// builder logs in
// while it builds, and discovery.Watch's ctx bounds that construction: its
// cancellation (Ctrl-C in dialtone watch) ends the wait for a silent etcd at
// once, with ctx's error, not only its deadline. Before, the login ran on to
// its 5 s dial timeout and reported "context deadline exceeded".
func TestTargetLoginEndsWithCtx(t *testing.T) {
	// An etcd that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	for _, v := range []string{varCACert, varCert, varKey, varPassword, varInsecureSkipVerify, varInsecureTransport, varEndpoints} {
		t.Setenv(v, "")
	}
	t.Setenv(varUser, "alice:"+secret)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	w, err := discovery.Watch(ctx, "etcd://"+ln.Addr().String()+"/svc")
	took := time.Since(start)
	if err == nil {
		w.Close()
		t.Fatal("Watch logged in to an etcd that never answers")
	}
	if took > 2*time.Second || !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned after %v with %v; want context.Canceled soon after the 200 ms cancel", took.Round(time.Millisecond), err)
	}
}
