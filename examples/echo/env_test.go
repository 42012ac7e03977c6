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

// TestConsulAddressCredentialsNotEchoed: a CONSUL_HTTP_ADDR that holds a
// password (user:password@host) fails the registration, and the error the
// program prints does not repeat the password.
func TestConsulAddressCredentialsNotEchoed(t *testing.T) {
	const pw = "p4ssw0rd-value"
	t.Setenv("CONSUL_HTTP_ADDR", "http://alice:"+pw+"@127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := run(ctx, []string{"-registry", "consul", "-name", "c1", "-drain", "0s"}, io.Discard)
	if err == nil {
		t.Fatal("run: no error with an unusable CONSUL_HTTP_ADDR")
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("the password leaked into the error: %v", err)
	}
}
