package discovery

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"testing/synctest"
	"time"
)

func eps(addrs ...string) []Endpoint {
	out := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = Endpoint{ID: a, Addr: a, Weight: 1}
	}
	return out
}

func TestPublisherLastKnownGoodAndCoalescing(t *testing.T) {
	var p Publisher
	ctx := t.Context()
	if !p.Update(eps("10.0.0.1:1", "10.0.0.2:1"), time.Unix(1, 0)) {
		t.Fatal("first Update did not publish")
	}
	s, err := p.Next(ctx)
	if err != nil || s.Version != 1 || len(s.Endpoints) != 2 || s.Err != nil {
		t.Fatalf("Next = %+v, %v", s, err)
	}
	if p.Update(eps("10.0.0.1:1", "10.0.0.2:1"), time.Unix(2, 0)) {
		t.Fatal("an identical set published a new version")
	}
	if got := p.Current(); !got.Synced.Equal(time.Unix(2, 0)) || got.Version != 1 {
		t.Fatalf("identical Update: state %+v, want Synced moved and Version 1", got)
	}
	boom := errors.New("registry down")
	if !p.SetError(boom) {
		t.Fatal("first error not published")
	}
	if p.SetError(errors.New("registry down")) {
		t.Fatal("the same error again published a new version")
	}
	s, err = p.Next(ctx)
	if err != nil || s.Version != 2 || len(s.Endpoints) != 2 || s.Err == nil || !s.Synced.Equal(time.Unix(2, 0)) {
		t.Fatalf("after error: %+v, %v; want last known good endpoints, Err set, Synced kept", s, err)
	}
	// Two updates before the consumer looks: it sees only the newest.
	p.Update(eps("10.0.0.3:1"), time.Unix(3, 0))
	p.Update(eps(), time.Unix(4, 0))
	s, err = p.Next(ctx)
	if err != nil || s.Version != 4 || len(s.Endpoints) != 0 || s.Endpoints == nil || s.Err != nil {
		t.Fatalf("coalesced: %+v, %v; want version 4, authoritative empty set", s, err)
	}
}

func TestPublisherSortsAndCopies(t *testing.T) {
	var p Publisher
	in := eps("10.0.0.2:1", "10.0.0.1:1")
	p.Update(in, time.Now())
	in[0].Addr = "mutated"
	s, _ := p.Next(t.Context())
	if s.Endpoints[0].ID != "10.0.0.1:1" || s.Endpoints[1].Addr != "10.0.0.2:1" {
		t.Fatalf("state %+v: want sorted and not aliased to the caller's slice", s.Endpoints)
	}
}

func TestPublisherNextBlocksUntilChangeOrCancelOrClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p Publisher
		got := make(chan State, 1)
		go func() {
			s, _ := p.Next(context.Background())
			got <- s
		}()
		synctest.Wait()
		select {
		case s := <-got:
			t.Fatalf("Next returned %+v before anything was published", s)
		default:
		}
		p.Update(eps("10.0.0.1:1"), time.Now())
		if s := <-got; s.Version != 1 {
			t.Fatalf("Next = %+v", s)
		}

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := p.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next with nothing new = %v, want DeadlineExceeded", err)
		}

		errc := make(chan error, 1)
		go func() {
			_, err := p.Next(context.Background())
			errc <- err
		}()
		synctest.Wait()
		p.Close()
		p.Close()
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close = %v, want ErrClosed", err)
		}
		if p.Update(eps("10.0.0.2:1"), time.Now()) {
			t.Fatal("Update after Close published")
		}
	})
}

// An update hands on the previous State's values for the endpoints it
// leaves unchanged (their Tags and Meta are the same slices and maps), and
// the new values for the ones it changes.
func TestPublisherHandsOnUnchangedEndpoints(t *testing.T) {
	mk := func(v string) []Endpoint {
		var out []Endpoint
		for _, id := range []string{"a", "b", "c"} {
			m := map[string]string{"v": "1"}
			if id == "b" {
				m["v"] = v
			}
			out = append(out, Endpoint{ID: id, Addr: "10.0.0.1:80" + string(rune('1'+len(out))), Weight: 1,
				Tags: []string{"t"}, Meta: m})
		}
		return out
	}
	var p Publisher
	p.Update(mk("1"), time.Now())
	first, _ := p.Next(context.Background())
	if !p.Update(mk("2"), time.Now()) {
		t.Fatal("a changed endpoint was not published")
	}
	second := p.Current()
	for i, e := range second.Endpoints {
		old := first.Endpoints[i]
		same := &e.Tags[0] == &old.Tags[0] && reflect.ValueOf(e.Meta).UnsafePointer() == reflect.ValueOf(old.Meta).UnsafePointer()
		if changed := e.ID == "b"; same == changed {
			t.Errorf("endpoint %s: shares its Tags and Meta with the previous State: %v; want %v", e.ID, same, !changed)
		}
	}
	if second.Endpoints[1].Meta["v"] != "2" {
		t.Fatalf("the changed endpoint carries %v", second.Endpoints[1].Meta)
	}
}

// SetErrorKeeping takes out of the last known good set the endpoints keep
// rejects, and is SetError when it keeps them all.
func TestPublisherSetErrorKeeping(t *testing.T) {
	var p Publisher
	p.Update(eps("10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"), time.Unix(1, 0))
	all := func(Endpoint) bool { return true }
	boom := errors.New("all invalid")
	if !p.SetErrorKeeping(boom, all) {
		t.Fatal("first error not published")
	}
	if p.SetErrorKeeping(errors.New("all invalid"), all) {
		t.Fatal("the same error with the same set published a new version")
	}
	gone := eps("10.0.0.2:1")[0].ID
	if !p.SetErrorKeeping(boom, func(e Endpoint) bool { return e.ID != gone }) {
		t.Fatal("the same error with an endpoint gone did not publish")
	}
	s := p.Current()
	if s.Version != 3 || len(s.Endpoints) != 2 || s.Endpoints[0].Addr != "10.0.0.1:1" || s.Endpoints[1].Addr != "10.0.0.3:1" ||
		s.Err != boom || !s.Synced.Equal(time.Unix(1, 0)) {
		t.Fatalf("after SetErrorKeeping: %+v; want 10.0.0.1:1 and 10.0.0.3:1 with the error, Synced kept", s)
	}
	p.SetErrorKeeping(boom, func(Endpoint) bool { return false })
	if s := p.Current(); s.Version != 4 || len(s.Endpoints) != 0 || s.Err != boom {
		t.Fatalf("keeping none: %+v; want an empty set with the error", s)
	}
}

// Recovery with an unchanged set: a registry that comes back with the very
// set it had before its error must clear the error (Update's doc: a new
// Version when "the previous State carried an error"). Skipping the
// publication as "nothing changed" would leave the consumer on a State
// with Err set for good: the balancer would keep reporting the discovery
// error in every ErrUnavailable, and health checks of the watcher would
// stay red although it is synced.
func TestPublisherUpdateAfterErrorWithSameSetClearsTheError(t *testing.T) {
	var p Publisher
	set := eps("10.0.0.1:1", "10.0.0.2:1")
	p.Update(set, time.Unix(1, 0))
	p.SetError(errors.New("registry down"))
	if !p.Update(set, time.Unix(2, 0)) {
		t.Fatal("Update with the set of before the error did not publish: the error stays")
	}
	if s := p.Current(); s.Err != nil || s.Version != 3 || len(s.Endpoints) != 2 || !s.Synced.Equal(time.Unix(2, 0)) {
		t.Fatalf("after recovery: %+v; want Err nil, Version 3, both endpoints, Synced moved", s)
	}
}
