package discovery

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestWatchStatic(t *testing.T) {
	w, err := Watch(t.Context(), "static:///10.0.0.1:80,10.0.0.2:81")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s, err := w.Next(t.Context())
	if err != nil || len(s.Endpoints) != 2 || s.Endpoints[1].Addr != "10.0.0.2:81" || s.Endpoints[0].Weight != 1 {
		t.Fatalf("Next = %+v, %v", s, err)
	}
	w.ResolveNow()
	w.Close()
	if _, err := w.Next(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
}

func TestWatchErrors(t *testing.T) {
	for _, tc := range []struct{ target, want string }{
		{"nope://h:1/x", "unknown scheme \"nope\""},
		{"static:///10.0.0.1:0", "out of range"},
		{"static:///", "no addresses"},
		{"static://h:1/10.0.0.1:80", "authority"},
		{"static:///10.0.0.1:80?tag=a", "no options"},
		{"static:///10.0.0.1:80,10.0.0.1:80", "duplicate"},
		{"static:///0.0.0.0:80", "unspecified"},
		{"orders", "scheme"},
	} {
		w, err := Watch(context.Background(), tc.target)
		if err == nil {
			w.Close()
			t.Errorf("Watch(%q) succeeded", tc.target)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Watch(%q) = %v, want it to name %q", tc.target, err, tc.want)
		}
		if !errors.Is(err, ErrBadTarget) && !errors.Is(err, ErrUnknownScheme) {
			t.Errorf("Watch(%q) = %v, want an ErrBadTarget", tc.target, err)
		}
	}
}

// TestRegisterReplacesAndIsUsed: Watch uses the Builder registered for the
// scheme (matched without regard to case), and a later Register for the
// same scheme replaces the earlier Builder.
func TestRegisterReplacesAndIsUsed(t *testing.T) {
	t.Cleanup(func() {
		registryMu.Lock()
		delete(registry, "test-scheme")
		registryMu.Unlock()
	})
	var used []string // which builders Watch called, in order
	builder := func(name, addr string) Builder {
		return func(ctx context.Context, tg Target) (Watcher, error) {
			used = append(used, name)
			return StaticAddrs(addr)
		}
	}
	watchAddr := func() string {
		t.Helper()
		w, err := Watch(t.Context(), "test-scheme:///x")
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		defer w.Close()
		s, err := w.Next(t.Context())
		if err != nil || len(s.Endpoints) != 1 {
			t.Fatalf("Next = %+v, %v", s, err)
		}
		return s.Endpoints[0].Addr
	}
	Register("Test-Scheme", builder("first", "10.9.9.1:9"))
	if got := watchAddr(); got != "10.9.9.1:9" || strings.Join(used, ",") != "first" {
		t.Fatalf("after one Register: Watch gave %s, builders called %v; want 10.9.9.1:9 from first", got, used)
	}
	Register("test-scheme", builder("second", "10.9.9.2:9"))
	if got := watchAddr(); got != "10.9.9.2:9" || strings.Join(used, ",") != "first,second" {
		t.Fatalf("after a second Register: Watch gave %s, builders called %v; want 10.9.9.2:9 from second only", got, used)
	}
	// The target's scheme is matched without regard to case too.
	w, err := Watch(t.Context(), "TEST-Scheme:///x")
	if err != nil {
		t.Fatalf("Watch with the scheme in upper case: %v", err)
	}
	w.Close()
	if strings.Join(used, ",") != "first,second,second" {
		t.Fatalf("Watch with the scheme in upper case called builders %v; want second again", used)
	}
	if tg, err := ParseTarget("STATIC:///10.0.0.1:80"); err != nil || tg.Scheme != "static" {
		t.Fatalf(`ParseTarget("STATIC:///10.0.0.1:80") = scheme %q, %v; want "static"`, tg.Scheme, err)
	}
}

func TestStaticUpdateIsAllOrNothing(t *testing.T) {
	s, err := StaticAddrs("10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(Endpoint{ID: "x", Addr: "10.0.0.2:80"}, Endpoint{ID: "y", Addr: "224.0.0.1:80"}); err == nil || !strings.Contains(err.Error(), "multicast") {
		t.Fatalf("Update with a multicast address = %v", err)
	}
	st, _ := s.Next(t.Context())
	if len(st.Endpoints) != 1 || st.Endpoints[0].Addr != "10.0.0.1:80" {
		t.Fatalf("a rejected Update changed the set: %+v", st)
	}
}

// TestRegisterRefusesASchemeNoTargetCanName: a scheme that ParseTarget
// refuses ("my_registry", "zk:") can never be looked up: Watch would say
// the target's scheme is invalid, not that the registration was. Register
// panics at program start instead, as it does for an empty scheme.
func TestRegisterRefusesASchemeNoTargetCanName(t *testing.T) {
	b := func(context.Context, Target) (Watcher, error) { return StaticAddrs("10.0.0.1:80") }
	for _, scheme := range []string{"my_registry", "zk:", "1abc", "a b"} {
		func() {
			defer func() {
				if recover() == nil {
					registryMu.Lock()
					delete(registry, strings.ToLower(scheme))
					registryMu.Unlock()
					_, err := Watch(t.Context(), scheme+":///x")
					t.Errorf("Register(%q) did not panic; Watch(%q) then says: %v", scheme, scheme+":///x", err)
				}
			}()
			Register(scheme, b)
		}()
	}
}
