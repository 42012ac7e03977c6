// Package discoverytest provides a controllable fake discovery.Watcher for
// unit tests of packages that consume watchers (balancer, rpcclient). It proves
// nothing about a real registry: integration tests use discovery/consul and
// discovery/etcd against real servers.
package discoverytest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// Watcher is a fake discovery.Watcher driven by the test. It starts no
// goroutine. All methods are safe for concurrent use.
type Watcher struct {
	pub discovery.Publisher

	mu        sync.Mutex
	resolves  int
	onResolve func()
	resolved  chan struct{} // closed and replaced on each ResolveNow
	closed    bool
}

// New returns a Watcher that has published nothing yet.
func New() *Watcher { return &Watcher{resolved: make(chan struct{})} }

// NewAddrs returns a Watcher whose first State holds one endpoint per address.
func NewAddrs(addrs ...string) *Watcher {
	w := New()
	w.SetAddrs(addrs...)
	return w
}

// Set publishes eps as the complete set, after discovery.Sanitize; invalid
// entries are dropped just as a real watcher drops them.
func (w *Watcher) Set(eps ...discovery.Endpoint) {
	valid, _ := discovery.Sanitize(eps)
	w.pub.Update(valid, time.Now())
}

// SetAddrs is Set with one weight-1 endpoint per address, ID = address.
func (w *Watcher) SetAddrs(addrs ...string) {
	eps := make([]discovery.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = discovery.Endpoint{ID: a, Addr: a, Weight: 1}
	}
	w.Set(eps...)
}

// SetError publishes a backend error; the endpoints stay.
func (w *Watcher) SetError(err error) {
	if err == nil {
		err = errors.New("discoverytest: injected error")
	}
	w.pub.SetError(err)
}

// SetErrorKeeping publishes a backend error that drops, from the last known
// good set, the endpoints for which keep reports false, as the Consul and
// etcd watchers do for an answer that lists only invalid instances
// (discovery.Publisher.SetErrorKeeping).
func (w *Watcher) SetErrorKeeping(err error, keep func(discovery.Endpoint) bool) {
	if err == nil {
		err = errors.New("discoverytest: injected error")
	}
	w.pub.SetErrorKeeping(err, keep)
}

// OnResolveNow makes ResolveNow call f (from the caller's goroutine), for
// example to publish a fresh set as a real registry would.
func (w *Watcher) OnResolveNow(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onResolve = f
}

// ResolveNowCalls returns how many times ResolveNow was called.
func (w *Watcher) ResolveNowCalls() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.resolves
}

// WaitResolveNow blocks until ResolveNow has been called at least n times in
// total, or ctx is done.
func (w *Watcher) WaitResolveNow(ctx context.Context, n int) error {
	for {
		w.mu.Lock()
		got, ch := w.resolves, w.resolved
		w.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Next implements discovery.Watcher.
func (w *Watcher) Next(ctx context.Context) (discovery.State, error) { return w.pub.Next(ctx) }

// ResolveNow implements discovery.Watcher: it counts the call and runs the
// OnResolveNow hook.
func (w *Watcher) ResolveNow() {
	w.mu.Lock()
	w.resolves++
	close(w.resolved)
	w.resolved = make(chan struct{})
	f := w.onResolve
	w.mu.Unlock()
	if f != nil {
		f()
	}
}

// Closed reports whether Close was called.
func (w *Watcher) Closed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// Close implements discovery.Watcher.
func (w *Watcher) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.pub.Close()
	return nil
}

var _ discovery.Watcher = (*Watcher)(nil)
