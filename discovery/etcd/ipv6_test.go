package etcd

import (
	"testing"

	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/dialtone-go/dialtone/discovery"
)

// IPv6 addresses against a real etcd: a Registrar given a non-canonical
// spelling registers the canonical one (the key too, when the ID defaults
// to the address), and values etcd's own endpoints.Manager writes with
// bracketed IPv6 addresses are published once per address, canonically.
func TestIPv6Addresses(t *testing.T) {
	_, cli := startEtcd(t)
	const prefix = "svc/v6"
	w := startWatcher(t, cli, prefix)
	r := newRegistrar(t, cli, prefix, discovery.Endpoint{Addr: "[0:0::1]:09001"})
	if r.Key() != prefix+"/[::1]:9001" {
		t.Fatalf("key %q, want %q", r.Key(), prefix+"/[::1]:9001")
	}
	m, err := endpoints.NewManager(cli, prefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := m.AddEndpoint(ctx, prefix+"/a", endpoints.Endpoint{Addr: "[2001:DB8::2]:9002"}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddEndpoint(ctx, prefix+"/b", endpoints.Endpoint{Addr: "[2001:db8:0::2]:9002"}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddEndpoint(ctx, prefix+"/c", endpoints.Endpoint{Addr: "[::1]:9003", Metadata: map[string]any{"zone": "z"}}); err != nil {
		t.Fatal(err)
	}
	s := waitSet(t, w, "[::1]:9001=[::1]:9001", "a=[2001:db8::2]:9002", "c=[::1]:9003")
	if s.Endpoints[2].Zone != "z" {
		t.Fatalf("zone %q", s.Endpoints[2].Zone)
	}
}
