package discovery

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestErrorStateMayDropGoneEndpoints pins the package doc: a backend error
// keeps the last known good set, except the endpoints an answer of only
// invalid entries says are gone (SetErrorKeeping, which the Consul and etcd
// watchers call), so an error State may hold an empty set. (The doc used to
// say "A backend error never empties the set".)
func TestErrorStateMayDropGoneEndpoints(t *testing.T) {
	var p Publisher
	p.Update([]Endpoint{{ID: "a", Addr: "10.0.0.1:80", Weight: 1}, {ID: "b", Addr: "10.0.0.2:80", Weight: 1}}, time.Now())
	ctx := context.Background()
	if _, err := p.Next(ctx); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("every entry invalid")
	p.SetError(bad)
	if s, _ := p.Next(ctx); s.Err == nil || len(s.Endpoints) != 2 {
		t.Fatalf("SetError: State{Err: %v, %d endpoints}; want the error and the last known good set", s.Err, len(s.Endpoints))
	}
	bad2 := errors.New("every entry invalid, a gone")
	p.SetErrorKeeping(bad2, func(e Endpoint) bool { return e.ID == "b" })
	if s, _ := p.Next(ctx); s.Err != bad2 || len(s.Endpoints) != 1 || s.Endpoints[0].ID != "b" {
		t.Fatalf("SetErrorKeeping(keep b): State{Err: %v, Endpoints: %v}; want the error with b only", s.Err, s.Endpoints)
	}
	bad3 := errors.New("every entry invalid, b gone too")
	p.SetErrorKeeping(bad3, func(Endpoint) bool { return false })
	if s, _ := p.Next(ctx); s.Err != bad3 || len(s.Endpoints) != 0 {
		t.Fatalf("SetErrorKeeping(keep none): State{Err: %v, Endpoints: %v}; want the error with an empty set", s.Err, s.Endpoints)
	}
}
