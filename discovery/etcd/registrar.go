package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
)

// Registrar keeps one endpoint registered under PREFIX/ID, attached to a
// lease that it keeps alive. When the lease is lost (revoked, expired while
// etcd was unreachable), it grants a new one and writes the key again. When
// the key alone is deleted (etcdctl del, a cleanup tool), it writes it again
// with the same lease. Close revokes the lease, so no key is left behind: to
// deregister, Close the Registrar; deleting its key does not.
type Registrar struct {
	client *clientv3.Client
	key    string
	value  string
	opts   registrarOptions

	mu       sync.Mutex
	keyLease clientv3.LeaseID // the lease the key was last written with
	// unsure holds the leases granted since keyLease whose write failed:
	// etcd may have applied a write whose answer was lost, so the key may
	// be on any of them, and Close revokes them all. A write that succeeds
	// empties it (the key is then on keyLease).
	unsure []grant

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// NewRegistrar registers e under prefix + "/" + e.ID (e.ID defaults to
// e.Addr) in the value format of FormatValue, which etcd's naming package
// also reads. It blocks, bounded by ctx, until the first lease is granted
// and the key written, and fails if that fails. A write that fails after
// the grant (its answer lost: it may have been applied) is followed by the
// lease's revocation, so that no key is left for a caller who got an error;
// that takes up to the revoke timeout past ctx (WithRevokeTimeout, default
// 2 s). Then one goroutine keeps the lease alive, registers again whenever
// it is lost, and writes the key again whenever it is deleted (it watches
// the key for deletions), backing off on errors; Close stops it. ctx bounds
// the first registration only.
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
	lease, rev, err := r.register(ctx)
	if err != nil {
		r.revoke() // a lease granted before the write failed
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.run(rctx, lease, rev)
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

// grant is a lease and when it was granted.
type grant struct {
	id clientv3.LeaseID
	at time.Time
}

// register grants a lease and writes the key with it, and returns the lease
// and the revision of the write.
func (r *Registrar) register(ctx context.Context) (clientv3.LeaseID, int64, error) {
	rctx, cancel := context.WithTimeout(ctx, r.opts.requestTimeout)
	defer cancel()
	ttl := int64((r.opts.ttl + time.Second - 1) / time.Second)
	g, err := r.client.Grant(rctx, ttl)
	if err != nil {
		return 0, 0, fmt.Errorf("etcd: register %q: grant lease: %w", r.key, err)
	}
	resp, err := r.client.Put(rctx, r.key, r.value, clientv3.WithLease(g.ID))
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		// Leases granted over two TTLs ago have expired, whatever holds
		// them: a lease nobody keeps alive lives one TTL.
		now := time.Now()
		r.unsure = slices.DeleteFunc(r.unsure, func(u grant) bool { return now.Sub(u.at) > 2*r.opts.ttl })
		r.unsure = append(r.unsure, grant{g.ID, now})
		return 0, 0, fmt.Errorf("etcd: register %q: put: %w", r.key, err)
	}
	r.keyLease, r.unsure = g.ID, nil
	return g.ID, resp.Header.Revision, nil
}

// run is the keepalive goroutine.
func (r *Registrar) run(ctx context.Context, lease clientv3.LeaseID, rev int64) {
	defer close(r.done)
	attempt := 0 // consecutive failures
	for {
		if r.hold(ctx, lease, rev) {
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
			if attempt > 0 {
				if !sleep(ctx, r.opts.backoff.Delay(attempt-1, nil)) {
					return
				}
				redialNow(r.client)
			}
			attempt++
			id, wrote, err := r.register(ctx)
			if err == nil {
				lease, rev = id, wrote
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

// hold keeps lease alive, and the key written, until the lease is lost or
// ctx is done, and reports whether etcd confirmed the lease at least once.
// rev is the revision at which the key was written.
//
// The key can vanish while its lease lives: someone ran etcdctl del, or a
// cleanup tool did. A watch on the key, from rev on and for deletions only,
// notices, and the key is written again with the same lease. Writes are
// spaced by the backoff (the first at once, the next ones after 100 ms, 200
// ms, ... until a keepalive response), so a tool that keeps deleting the key
// meets no busy loop. A write refused because the lease is gone ends hold:
// the caller registers with a new lease.
func (r *Registrar) hold(ctx context.Context, lease clientv3.LeaseID, rev int64) (alive bool) {
	kctx, cancel := context.WithCancel(ctx)
	// pending, while a watch is being set up, delivers its channel (see
	// watch); hold waits for it before it returns, so that no goroutine
	// outlives it (kctx ends the setup).
	var pending chan clientv3.WatchChan
	defer func() {
		cancel()
		if pending != nil {
			<-pending
		}
	}()
	ka, err := r.client.KeepAlive(kctx, lease)
	if err != nil {
		r.opts.logger.Warn("etcd: keepalive failed", "key", r.key, "lease", int64(lease), "err", err)
		return false
	}
	// WithRequireLeader: a member cut off from the leader cancels the
	// watch rather than leave it silent.
	//
	// clientv3's Watch returns only once its stream is set up, which with
	// etcd unreachable lasts until the connection is back: it runs apart,
	// so that hold goes on keeping the lease, and noticing its loss,
	// meanwhile. (In hold's own goroutine, a watch begun as etcd went down
	// held it for the whole outage: the lease was found lost, and the key
	// written again, only once gRPC redialled, seconds to minutes after
	// etcd was back.)
	watch := func(from int64) {
		pending = make(chan clientv3.WatchChan, 1)
		go func(c chan<- clientv3.WatchChan) {
			c <- r.client.Watch(clientv3.WithRequireLeader(kctx), r.key, clientv3.WithRev(from), clientv3.WithFilterPut())
		}(pending)
	}
	var wch clientv3.WatchChan // nil while a watch is being set up
	watch(rev + 1)

	var (
		missing   bool      // the key was deleted and not yet written again
		deletedAt time.Time // when the deletion was seen, for the log
		rewatch   bool      // the watch ended; look at the key and watch again
		writes    int       // writes and failures since the last keepalive response: the backoff attempt
		notBefore time.Time // the backoff: no request before then
	)
	timer := time.NewTimer(time.Hour) // armed only while a write waits out the backoff
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return alive
		case wch = <-pending:
			pending = nil
			continue
		case resp, ok := <-ka:
			// The client closes ka when the lease is gone (TTL <= 0 in a
			// response), when no response came within the TTL, and on
			// client close.
			if !ok || resp.TTL <= 0 {
				return alive
			}
			alive = true
			writes = 0
			notBefore = time.Time{}
		case resp, ok := <-wch:
			switch {
			case !ok || resp.Canceled || resp.Err() != nil:
				if ctx.Err() != nil {
					return alive
				}
				r.opts.logger.Debug("etcd: watch on own key ended; checking the key", "key", r.key, "err", resp.Err())
				wch, rewatch = nil, true
			default:
				for _, ev := range resp.Events {
					if ev.Type == clientv3.EventTypeDelete && !missing {
						// Also seen when the lease is revoked: the write
						// below then fails and hold returns.
						missing, deletedAt = true, time.Now()
						r.opts.logger.Debug("etcd: own key deleted", "key", r.key, "lease", int64(lease), "revision", ev.Kv.ModRevision)
					}
				}
			}
		case <-timer.C:
		}
		if !missing && !rewatch {
			continue
		}
		if wait := time.Until(notBefore); wait > 0 {
			timer.Reset(wait)
			continue
		}
		writes++
		notBefore = time.Now().Add(r.opts.backoff.Delay(writes-1, nil))
		if rewatch {
			// Whether the key is there, and from which revision to watch.
			gctx, gcancel := context.WithTimeout(kctx, r.opts.requestTimeout)
			resp, err := r.client.Get(gctx, r.key, clientv3.WithKeysOnly())
			gcancel()
			if err != nil {
				if ctx.Err() != nil {
					return alive
				}
				r.opts.logger.Warn("etcd: reading own key failed; retrying", "key", r.key, "err", err)
				timer.Reset(time.Until(notBefore))
				continue
			}
			if len(resp.Kvs) == 0 && !missing {
				missing, deletedAt = true, time.Now()
				r.opts.logger.Debug("etcd: own key missing", "key", r.key, "lease", int64(lease))
			}
			watch(resp.Header.Revision + 1)
			rewatch = false
		}
		if missing {
			pctx, pcancel := context.WithTimeout(kctx, r.opts.requestTimeout)
			_, err := r.client.Put(pctx, r.key, r.value, clientv3.WithLease(lease))
			pcancel()
			switch {
			case err == nil:
				missing = false
				r.opts.logger.Warn("etcd: key was deleted while its lease lived; wrote it again", "key", r.key, "lease", int64(lease), "after", time.Since(deletedAt))
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				return alive // the lease is gone too: register anew
			case ctx.Err() != nil:
				return alive
			default:
				r.opts.logger.Warn("etcd: writing key again failed; retrying", "key", r.key, "lease", int64(lease), "err", err)
				timer.Reset(time.Until(notBefore))
			}
		}
	}
}

// revoke revokes the leases this Registrar may still hold, bounded by the
// revoke timeout. A lease already gone is not an error.
func (r *Registrar) revoke() error {
	r.mu.Lock()
	leases := []clientv3.LeaseID{r.keyLease}
	for _, u := range r.unsure {
		leases = append(leases, u.id)
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
