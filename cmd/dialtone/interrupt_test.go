package main

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWatchInterruptedWhileLoggingIn: Ctrl-C while the etcd:// builder logs
// in (ETCDCTL_USER set) to an etcd that does not answer ends dialtone watch
// at once with status 0, as an interrupted watch does, instead of after the
// 5 s login timeout with status 1 and "context deadline exceeded".
func TestWatchInterruptedWhileLoggingIn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
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
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	for _, v := range []string{"ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY", "ETCDCTL_PASSWORD", "ETCDCTL_INSECURE_TRANSPORT", "ETCDCTL_INSECURE_SKIP_TLS_VERIFY"} {
		t.Setenv(v, "")
	}
	t.Setenv("ETCDCTL_USER", "alice:pw")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(200*time.Millisecond, cancel)
	var stdout, stderr strings.Builder
	start := time.Now()
	code := run(ctx, []string{"watch", "etcd://" + ln.Addr().String() + "/services/echo"}, &stdout, &stderr)
	if took := time.Since(start); code != exitOK || took > 2*time.Second {
		t.Fatalf("interrupted after 200 ms: exit status %d after %v, want 0 at once; stderr:\n%s", code, took.Round(time.Millisecond), stderr.String())
	}
}
