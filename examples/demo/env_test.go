package main

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestDemoIgnoresEtcdctlVariables: make demo is "one command, no external
// services"; its embedded etcd serves plaintext on loopback. The etcdctl
// variables an etcd operator keeps exported for a TLS cluster
// (ETCDCTL_INSECURE_TRANSPORT=false, ETCDCTL_CACERT...) are for that
// cluster: the demo's client must not take them for its own etcd. It did,
// and the demo failed with "discovery listed 0 of 4 backends: context
// deadline exceeded".
func TestDemoIgnoresEtcdctlVariables(t *testing.T) {
	t.Setenv("ETCDCTL_INSECURE_TRANSPORT", "false")
	t.Setenv("ETCDCTL_USER", "ops:secret")
	o := defaultOptions()
	o.duration = 5 * time.Second
	o.workers = 2
	o.chart = ""
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, o, &out); err != nil {
		t.Fatalf("run with etcdctl's TLS variables exported: %v\n%s", err, out.String())
	}
}
