package etcd

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
)

// putFaults wraps a client's KV: once armed, the first Put is applied by etcd
// but answered with an error (a reply lost to a timeout), and the Puts after
// it hang until their ctx ends (Close cancels them).
type putFaults struct {
	clientv3.KV
	armed   atomic.Bool
	puts    atomic.Int32
	hanging chan struct{} // closed when a Put hangs
}

func (f *putFaults) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	if !f.armed.Load() {
		return f.KV.Put(ctx, key, val, opts...)
	}
	switch f.puts.Add(1) {
	case 1:
		if _, err := f.KV.Put(ctx, key, val, opts...); err != nil {
			f.puts.Add(-1) // not applied (hold's write with the lost lease): not the one
			return nil, err
		}
		return nil, context.DeadlineExceeded
	case 2:
		close(f.hanging)
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A re-registration whose Put etcd applied but whose answer was lost leaves
// the key on a lease the Registrar no longer tracks once a later attempt has
// granted another one: Close, interrupting that later attempt, must still
// leave no key behind (the doc: "Close revokes the lease, so no key is left
// behind"; FAULTS row 17: orphan keys after Close = 0).
func TestCloseAfterAnAmbiguousReRegistrationLeavesNoKey(t *testing.T) {
	srv, other := startEtcd(t)
	cli := srv.Client(t)
	faults := &putFaults{KV: cli.KV, hanging: make(chan struct{})}
	cli.KV = faults
	r, err := NewRegistrar(testCtx(t), cli, "svc", discovery.Endpoint{ID: "n1", Addr: "10.0.0.1:80"},
		WithTTL(30*time.Second), WithRegistrarBackoff(10*time.Millisecond, 10*time.Millisecond),
		WithRegistrarLogger(tLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	lease, _ := keyLease(t, other, r.Key())
	faults.armed.Store(true)
	if _, err := other.Revoke(testCtx(t), lease); err != nil { // the lease is lost
		t.Fatal(err)
	}
	select {
	case <-faults.hanging: // the second attempt's Put, after a fresh Grant
	case <-time.After(10 * time.Second):
		t.Fatal("no second re-registration attempt")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if l, _ := keyLease(t, other, r.Key()); l != 0 {
		ttl, _ := other.TimeToLive(testCtx(t), l)
		t.Fatalf("after Close the key is still there on lease %x (TTL left %ds): the lease of the applied write was never revoked", int64(l), ttl.TTL)
	}
}
