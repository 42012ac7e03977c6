package etcd

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
)

type hangKV struct{ clientv3.KV }

func (hangKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

type hangRevoke struct{ clientv3.Lease }

func (hangRevoke) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// NewRegistrar blocks until the first lease is granted and the key written,
// bounded by ctx, and then by the revoke timeout for the revocation of a
// lease whose write failed. Its doc said "bounded by ctx" only: with etcd
// silent after the Grant it returned 2.3 s after a 300 ms ctx.
func TestNewRegistrarIsBoundedByCtx(t *testing.T) {
	srv, _ := startEtcd(t)
	cli := srv.Client(t)
	cli.KV = hangKV{cli.KV} // etcd stops answering after the Grant
	cli.Lease = hangRevoke{cli.Lease}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := NewRegistrar(ctx, cli, "svc", discovery.Endpoint{Addr: "10.0.0.1:80"}, WithRevokeTimeout(400*time.Millisecond))
	took := time.Since(start)
	t.Logf("NewRegistrar: %v after %v", err, took.Round(time.Millisecond))
	if took > 1200*time.Millisecond {
		t.Fatalf("NewRegistrar returned %v after it was called with a 300 ms ctx and a 400 ms revoke timeout", took.Round(time.Millisecond))
	}
}
