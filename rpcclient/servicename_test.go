package rpcclient

import (
	"context"
	"testing"

	_ "github.com/dialtone-go/dialtone/discovery/etcd"
)

// TestDialNamesTheServiceOfAPrefixWithATrailingSlash: etcd watches
// services/orders/ as it watches services/orders (the same keys), and
// Dial names the service "orders" in both cases, as dialtone's CLI does.
// With the slash it named it "" and its errors said "an unnamed service
// (balancer.WithService names it)", advice a Dial caller cannot follow.
func TestDialNamesTheServiceOfAPrefixWithATrailingSlash(t *testing.T) {
	for _, target := range []string{
		"etcd://127.0.0.1:1/services/orders",
		"etcd://127.0.0.1:1/services/orders/",
		"etcd://127.0.0.1:1/services/orders//",
		"etcd://127.0.0.1:1/orders/",
	} {
		c, err := Dial(context.Background(), target)
		if err != nil {
			t.Fatalf("Dial(%q): %v", target, err)
		}
		if c.service != "orders" {
			t.Errorf("Dial(%q) names the service %q, want \"orders\"", target, c.service)
		}
		c.Close()
	}
}
