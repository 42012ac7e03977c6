package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Watcher publishes the endpoints of one service.
type Watcher interface {
	// Next blocks until a State newer than the last one it returned is
	// available, and returns it. It returns an error only when ctx is done
	// (ctx.Err()) or the watcher is closed (ErrClosed). Next is called from one
	// consumer goroutine.
	Next(ctx context.Context) (State, error)
	// ResolveNow asks the watcher to refresh soon: a hint that never blocks.
	// Calls are coalesced and rate-limited by the implementation. Callers use
	// it when an address it handed out turns out to be unreachable.
	ResolveNow()
	// Close stops the watcher and returns after its goroutines have exited.
	// It is idempotent.
	Close() error
}

// Builder makes a Watcher for a parsed target. ctx bounds the construction
// only, not the watcher's lifetime; a Builder must not block on the registry
// (the first answer arrives through Next).
type Builder func(ctx context.Context, t Target) (Watcher, error)

// ErrUnknownScheme is wrapped by Watch when no Builder is registered for the
// target's scheme.
var ErrUnknownScheme = errors.New("discovery: unknown scheme")

var (
	registryMu sync.RWMutex
	registry   = map[string]Builder{"static": buildStatic}
)

// Register makes Watch use b for targets with the given scheme. The consul and
// etcd packages call it from init; others may call it at program start. A
// later registration replaces an earlier one. It panics on a nil Builder,
// and on a scheme that no target can name: empty, or not a letter followed
// by letters, digits, '+', '-' and '.' (ParseTarget refuses any other).
func Register(scheme string, b Builder) {
	if scheme == "" || b == nil {
		panic("discovery: Register with an empty scheme or a nil Builder")
	}
	if !validScheme(scheme) {
		panic(fmt.Sprintf("discovery: Register(%q): not a valid scheme (a letter, then letters, digits, '+', '-' or '.'): no target could name it", scheme))
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	registry[strings.ToLower(scheme)] = b
}

// Watch parses target and builds a Watcher with the Builder registered for
// its scheme. ctx bounds the construction only. The caller owns the Watcher
// and must Close it.
func Watch(ctx context.Context, target string) (Watcher, error) {
	t, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	registryMu.RLock()
	b, ok := registry[t.Scheme]
	var known []string
	if !ok {
		known = slices.Sorted(maps.Keys(registry))
	}
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q in target %q (registered: %s; import the package that registers it, e.g. _ \"github.com/dialtone-go/dialtone/discovery/consul\")",
			ErrUnknownScheme, t.Scheme, truncate(t.String()), strings.Join(known, ", "))
	}
	return b(ctx, t)
}
