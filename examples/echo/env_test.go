package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	_ "github.com/dialtone-go/dialtone/discovery/etcd"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
)

// TestEtcdRegistrationReadsEtcdctlVariables: the echo server registers with
// etcd under the same environment as the clients that find it (the etcd://
// target: ETCD_ENDPOINTS and etcdctl's TLS and auth variables). A CA file
// that cannot be read is an error for both, not a plaintext registration.
func TestEtcdRegistrationReadsEtcdctlVariables(t *testing.T) {
	etcdSrv := etcdtest.Start(t)
	t.Setenv("ETCD_ENDPOINTS", strings.Join(etcdSrv.Hosts(), ","))
	t.Setenv("ETCDCTL_CACERT", t.TempDir()+"/missing-ca.pem")

	// The client side refuses.
	if w, err := discovery.Watch(context.Background(), "etcd:///services/echo"); err == nil {
		w.Close()
		t.Fatal("etcd:// target with an unreadable ETCDCTL_CACERT: no error")
	} else if !strings.Contains(err.Error(), "ETCDCTL_CACERT") {
		t.Fatalf("etcd:// target: %v; want an error naming ETCDCTL_CACERT", err)
	}

	// So must the server's registration.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-registry", "etcd", "-name", "e1", "-drain", "0s"}, io.Discard) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "ETCDCTL_CACERT") {
			t.Fatalf("run: %v; want an error naming ETCDCTL_CACERT", err)
		}
	case <-time.After(3 * time.Second):
		cancel()
		<-done
		t.Fatal("echo -registry etcd ignored ETCDCTL_CACERT: it registered in plaintext and served")
	}
}
