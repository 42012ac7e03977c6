package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
)

// Registrar keeps one endpoint registered under PREFIX/ID, attached to a
// lease that it keeps alive. When the lease is lost (revoked, expired while
// etcd was unreachable), it grants a new one and writes the key again. Close
// revokes the lease, so no key is left behind.
type Registrar struct {
	client *clientv3.Client
	key    string
	value  string
	opts   registrarOptions

	mu       sync.Mutex
	keyLease clientv3.LeaseID // the lease the key was last written with
	granted  clientv3.LeaseID // the lease granted last (differs from keyLease if the write failed)

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// NewRegistrar registers e under prefix + "/" + e.ID (e.ID defaults to
// e.Addr) in the value format of FormatValue, which etcd's naming package
// also reads. It blocks, bounded by ctx, until the first lease is granted
// and the key written, and fails if that fails. Then one goroutine keeps the
// lease alive and registers again whenever it is lost, backing off on errors;
// Close stops it. ctx bounds the first registration only.
//
// The caller owns client and must close it after the Registrar. The lease TTL
// defaults to 10 s (WithTTL). e is checked like the Watcher checks what it
// reads (discovery.ValidateAddr and field limits). A key already present
// under the same ID is overwritten.
func NewRegistrar(ctx context.Context, client *clientv3.Client, prefix string, e discovery.Endpoint, opts ...RegistrarOption) (*Registrar, error) {
	if client == nil {
		return nil, errors.New("etcd: NewRegistrar with a nil client")
	}
	if strings.Trim(prefix, "/") == "" {
		return nil, fmt.Errorf("etcd: empty key prefix %q", prefix)
	}
	valid, rejected := discovery.Sanitize([]discovery.Endpoint{e})
	if len(rejected) > 0 {
		return nil, fmt.Errorf("etcd: cannot register: %w", rejected[0].Err)
	}
	e = valid[0]
	value, err := FormatValue(e)
	if err != nil {
		return nil, err
	}
	o := defaultRegistrarOptions()
	for _, opt := range opts {
		opt(&o)
	}
	r := &Registrar{
		client: client,
		key:    keyPrefix(prefix) + e.ID,
		value:  string(value),
		opts:   o,
		done:   make(chan struct{}),
	}
	lease, err := r.register(ctx)
	if err != nil {
		r.revoke() // a lease granted before the write failed
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.run(rctx, lease)
	return r, nil
}

// Key returns the etcd key the Registrar maintains. Safe from any goroutine.
func (r *Registrar) Key() string { return r.key }

// Close stops the keepalive goroutine, waits for it, and revokes the lease,
// which deletes the key; the revocation is bounded by WithRevokeTimeout
// (default 2 s). If it fails, the key expires within one TTL, and Close
// returns the error. Close is idempotent and returns the first call's
// result. It does not close the client.
func (r *Registrar) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		r.closeErr = r.revoke()
	})
	return r.closeErr
}

// register grants a lease and writes the key with it.
func (r *Registrar) register(ctx context.Context) (clientv3.LeaseID, error) {
	rctx, cancel := context.WithTimeout(ctx, r.opts.requestTimeout)
	defer cancel()
	ttl := int64((r.opts.ttl + time.Second - 1) / time.Second)
	g, err := r.client.Grant(rctx, ttl)
	if err != nil {
		return 0, fmt.Errorf("etcd: register %q: grant lease: %w", r.key, err)
	}
	r.mu.Lock()
	r.granted = g.ID
	r.mu.Unlock()
	if _, err := r.client.Put(rctx, r.key, r.value, clientv3.WithLease(g.ID)); err != nil {
		return 0, fmt.Errorf("etcd: register %q: put: %w", r.key, err)
	}
	r.mu.Lock()
	r.keyLease = g.ID
	r.mu.Unlock()
	return g.ID, nil
}

// run is the keepalive goroutine.
func (r *Registrar) run(ctx context.Context, lease clientv3.LeaseID) {
	defer close(r.done)
	attempt := 0 // consecutive failures
	for {
		if r.keepAlive(ctx, lease) {
			attempt = 0
		}
		if ctx.Err() != nil {
			return
		}
		if r.client.Ctx().Err() != nil {
			r.opts.logger.Error("etcd: client closed before the Registrar; key no longer kept alive", "key", r.key)
			return
		}
		r.opts.logger.Warn("etcd: lease lost; registering again", "key", r.key, "lease", int64(lease))
		for {
			// The first attempt after a healthy lease goes at once; a lease
			// lost again without a single keepalive backs off.
			if attempt > 0 && !sleep(ctx, r.opts.backoff.Delay(attempt-1, nil)) {
				return
			}
			attempt++
			id, err := r.register(ctx)
			if err == nil {
				lease = id
				break
			}
			if ctx.Err() != nil {
				return
			}
			if r.client.Ctx().Err() != nil {
				r.opts.logger.Error("etcd: client closed before the Registrar; giving up", "key", r.key)
				return
			}
			r.opts.logger.Warn("etcd: register failed; retrying", "key", r.key, "attempt", attempt, "err", err)
		}
	}
}

// keepAlive keeps lease alive until it is lost or ctx is done, and reports
// whether etcd confirmed it at least once.
func (r *Registrar) keepAlive(ctx context.Context, lease clientv3.LeaseID) (alive bool) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.client.KeepAlive(kctx, lease)
	if err != nil {
		r.opts.logger.Warn("etcd: keepalive failed", "key", r.key, "lease", int64(lease), "err", err)
		return false
	}
	for {
		select {
		case <-ctx.Done():
			return alive
		case resp, ok := <-ch:
			// The client closes ch when the lease is gone (TTL <= 0 in a
			// response), when no response came within the TTL, and on
			// client close.
			if !ok || resp.TTL <= 0 {
				return alive
			}
			alive = true
		}
	}
}

// revoke revokes the leases this Registrar may still hold, bounded by the
// revoke timeout. A lease already gone is not an error.
func (r *Registrar) revoke() error {
	r.mu.Lock()
	leases := []clientv3.LeaseID{r.keyLease}
	if r.granted != r.keyLease {
		leases = append(leases, r.granted)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.revokeTimeout)
	defer cancel()
	var errs []error
	for _, id := range leases {
		if id == clientv3.NoLease {
			continue
		}
		if _, err := r.client.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			errs = append(errs, fmt.Errorf("etcd: revoke lease %x of %q (the key expires within the TTL): %w", int64(id), r.key, err))
		}
	}
	return errors.Join(errs...)
}
