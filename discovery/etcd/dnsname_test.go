package etcd

import (
	"testing"

	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/dialtone-go/dialtone/discovery"
)

// Host names against a real etcd: a Registrar at "LocalHost:09001"
// registers "localhost:9001"; names written by endpoints.Manager are
// published in lower case, once per name, a trailing dot kept.
func TestHostNameAddresses(t *testing.T) {
	_, cli := startEtcd(t)
	const prefix = "svc/names"
	w := startWatcher(t, cli, prefix)
	r := newRegistrar(t, cli, prefix, discovery.Endpoint{Addr: "LocalHost:09001"})
	if r.Key() != prefix+"/localhost:9001" {
		t.Fatalf("key %q, want %q", r.Key(), prefix+"/localhost:9001")
	}
	m, err := endpoints.NewManager(cli, prefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for k, a := range map[string]string{"a": "Orders.Example:9002", "b": "orders.example:9002", "c": "orders.example.:9002", "d": "my_svc.example:9003"} {
		if err := m.AddEndpoint(ctx, prefix+"/"+k, endpoints.Endpoint{Addr: a}); err != nil {
			t.Fatal(err)
		}
	}
	waitSet(t, w, "a=orders.example:9002", "c=orders.example.:9002", "d=my_svc.example:9003", "localhost:9001=localhost:9001")
}
