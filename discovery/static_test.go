package discovery

import (
	"context"
	"testing"
	"time"
)

// Static.Update keeps its own copy of the Tags and Meta it is given: a
// program that reuses (and changes) its map or slice for the next Update
// neither rewrites the State already published nor has its change dropped
// as "no change".
func TestStaticUpdateDoesNotAliasCallersTagsAndMeta(t *testing.T) {
	meta := map[string]string{"version": "1"}
	tags := []string{"blue"}
	s, err := NewStatic(Endpoint{ID: "a", Addr: "10.0.0.1:80", Tags: tags, Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	first, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}

	meta["version"] = "2"
	tags[0] = "green"
	if err := s.Update(Endpoint{ID: "a", Addr: "10.0.0.1:80", Tags: tags, Meta: meta}); err != nil {
		t.Fatal(err)
	}
	if got := first.Endpoints[0].Meta["version"]; got != "1" {
		t.Errorf("published State changed after publication: Meta[version] = %q, want 1", got)
	}
	if got := first.Endpoints[0].Tags[0]; got != "blue" {
		t.Errorf("published State changed after publication: Tags[0] = %q, want blue", got)
	}
	second, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("the Update with version 2 was never published: Next: %v", err)
	}
	if got := second.Endpoints[0].Meta["version"]; got != "2" {
		t.Errorf("second State: Meta[version] = %q, want 2", got)
	}
}
