package etcd

import (
	"testing"

	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/dialtone-go/dialtone/discovery"
)

// Address spellings against a real etcd: a Registrar given a non-canonical
// spelling registers the canonical one (the key too, when the ID defaults
// to the address), and the values etcd's own endpoints.Manager writes are
// published once per address, canonically: IPv6 addresses bracketed and
// compressed, host names in lower case (a trailing dot kept: to a
// resolver it is another name).
func TestAddressSpellings(t *testing.T) {
	_, cli := startEtcd(t)
	for _, tc := range []struct {
		name, prefix string
		reg, key     string                        // the Registrar's address, and its key's suffix
		manager      map[string]endpoints.Endpoint // written by endpoints.Manager, by key suffix
		want         []string                      // the published set, as waitSet takes it
		check        func(t *testing.T, s discovery.State)
	}{
		{
			name: "ipv6", prefix: "svc/v6", reg: "[0:0::1]:09001", key: "[::1]:9001",
			manager: map[string]endpoints.Endpoint{
				"a": {Addr: "[2001:DB8::2]:9002"},
				"b": {Addr: "[2001:db8:0::2]:9002"},
				"c": {Addr: "[::1]:9003", Metadata: map[string]any{"zone": "z"}},
			},
			want: []string{"[::1]:9001=[::1]:9001", "a=[2001:db8::2]:9002", "c=[::1]:9003"},
			check: func(t *testing.T, s discovery.State) {
				if s.Endpoints[2].Zone != "z" {
					t.Fatalf("zone %q", s.Endpoints[2].Zone)
				}
			},
		},
		{
			name: "names", prefix: "svc/names", reg: "LocalHost:09001", key: "localhost:9001",
			manager: map[string]endpoints.Endpoint{
				"a": {Addr: "Orders.Example:9002"},
				"b": {Addr: "orders.example:9002"},
				"c": {Addr: "orders.example.:9002"},
				"d": {Addr: "my_svc.example:9003"},
			},
			want: []string{"a=orders.example:9002", "c=orders.example.:9002", "d=my_svc.example:9003", "localhost:9001=localhost:9001"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startWatcher(t, cli, tc.prefix)
			r := newRegistrar(t, cli, tc.prefix, discovery.Endpoint{Addr: tc.reg})
			if r.Key() != tc.prefix+"/"+tc.key {
				t.Fatalf("key %q, want %q", r.Key(), tc.prefix+"/"+tc.key)
			}
			m, err := endpoints.NewManager(cli, tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t)
			for k, e := range tc.manager {
				if err := m.AddEndpoint(ctx, tc.prefix+"/"+k, e); err != nil {
					t.Fatal(err)
				}
			}
			s := waitSet(t, w, tc.want...)
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}
