package discovery

import (
	"maps"
	"slices"
	"strconv"
	"time"
)

// Health is the health of an endpoint as the registry reports it. Critical
// endpoints are never published, so a consumer sees only Healthy and Degraded.
type Health int

const (
	// Healthy endpoints pass all their checks.
	Healthy Health = iota
	// Degraded endpoints have a warning (Consul's "warning" status). The
	// Consul watcher publishes them only when asked to (consul.WithWarning,
	// or healthy=warning in the target); the etcd watcher publishes every
	// entry whose metadata says "degraded" (or "warning"). The balancer gives
	// them a reduced weight.
	Degraded
)

// String returns "healthy" or "degraded".
func (h Health) String() string {
	switch h {
	case Healthy:
		return "healthy"
	case Degraded:
		return "degraded"
	default:
		return "health(" + strconv.Itoa(int(h)) + ")"
	}
}

// Endpoint is one instance of a service. Values inside a published State are
// shared between goroutines and must not be modified.
type Endpoint struct {
	// ID is unique within the service: the Consul service ID, or the etcd key
	// suffix after the prefix. Sets are sorted by ID.
	ID string
	// Addr is host:port, validated by ValidateAddr and published in its
	// canonical spelling (CanonicalAddr): one address, one spelling.
	Addr string
	// Weight is >= 1; the default is 1.
	Weight int
	// Zone is an optional locality.
	Zone string
	// Tags and Meta are copied from the registry.
	Tags []string
	Meta map[string]string
	// Health is Healthy or Degraded.
	Health Health
}

// Equal reports whether e and o describe the same endpoint in every field.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.ID == o.ID && e.Addr == o.Addr && e.Weight == o.Weight && e.Zone == o.Zone &&
		e.Health == o.Health && slices.Equal(e.Tags, o.Tags) && maps.Equal(e.Meta, o.Meta)
}

// State is one published view of a service. A State is immutable once
// published: consumers may keep it and read it from any goroutine.
type State struct {
	// Endpoints is the complete set, sorted by ID. It is never mutated after
	// publication. After a backend error it is the last known good set, less
	// the endpoints an answer of only invalid entries said are gone
	// (Publisher.SetErrorKeeping): possibly none.
	Endpoints []Endpoint
	// Version grows with every published change; the first State has
	// Version 1.
	Version uint64
	// Err is the last backend error, or nil after a successful answer. When it
	// is set, Endpoints are the last known good set, or the part of it the
	// failed answer still listed (see Endpoints).
	Err error
	// Synced is when the backend last answered successfully; the zero time if
	// it never has. Staleness is time.Since(Synced).
	Synced time.Time
}

// endpointsEqual reports whether two sorted sets are equal.
func endpointsEqual(a, b []Endpoint) bool {
	return slices.EqualFunc(a, b, Endpoint.Equal)
}
