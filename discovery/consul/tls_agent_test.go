package consul

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/testcert"
)

// A real agent serves its HTTP API over TLS and requires client
// certificates there (mutual TLS). Consul's standard variables, which the
// package doc and README name, are all a registrar and a watcher need, with
// an address that names the HTTPS port: CONSUL_HTTP_SSL, CONSUL_CACERT,
// CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY. Without the client certificate
// the watcher reports the agent's refusal, and publishes nothing.
func TestAgentOverMutualTLSFromTheEnvironment(t *testing.T) {
	files := testcert.New(t).Files(t)
	a := consultest.StartTLS(t, files, true)
	t.Setenv("CONSUL_HTTP_SSL", "true")
	t.Setenv("CONSUL_CACERT", files.CA)
	t.Setenv("CONSUL_CLIENT_CERT", files.ClientCert)
	t.Setenv("CONSUL_CLIENT_KEY", files.ClientKey)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	r, err := NewRegistrar(ctx, Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001", Check: Check{TTL: 10 * time.Second}},
		WithAddress(a.HTTPSAddr()))
	if err != nil {
		t.Fatalf("registrar over mutual TLS: %v", err)
	}
	defer r.Close()
	w, err := discovery.Watch(ctx, "consul://"+a.HTTPSAddr()+"/web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := nextWhere(t, w, 10*time.Second, "web-1 over mutual TLS", func(s discovery.State) bool {
		return s.Err == nil && len(s.Endpoints) == 1
	})
	if e := s.Endpoints[0]; e.ID != "web-1" || e.Addr != "127.0.0.1:9001" {
		t.Fatalf("published %+v", e)
	}

	// The control: the same, without the client certificate.
	t.Setenv("CONSUL_CLIENT_CERT", "")
	t.Setenv("CONSUL_CLIENT_KEY", "")
	anon, err := discovery.Watch(ctx, "consul://"+a.HTTPSAddr()+"/web")
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	s = nextWhere(t, anon, 10*time.Second, "the agent's refusal", func(s discovery.State) bool { return s.Err != nil })
	t.Logf("without a client certificate: %v", s.Err)
	if len(s.Endpoints) != 0 || !strings.Contains(s.Err.Error(), "certificate") {
		t.Fatalf("without a client certificate: %d endpoints, error %v; want none, and an error about the certificate", len(s.Endpoints), s.Err)
	}
}
