package etcd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
)

func TestTargetEndToEnd(t *testing.T) {
	srv, cli := startEtcd(t)
	put(t, cli, "services/orders/a", ep("a", "10.0.0.1:80"))

	w, err := discovery.Watch(context.Background(), "etcd://"+srv.Hosts()[0]+"/services/orders")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	waitSet(t, w, "a=10.0.0.1:80")
	put(t, cli, "services/orders/b", ep("b", "10.0.0.2:80"))
	waitSet(t, w, "a=10.0.0.1:80", "b=10.0.0.2:80")
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestTargetEnvEndpoints(t *testing.T) {
	srv, cli := startEtcd(t)
	put(t, cli, "svc/a", ep("a", "10.0.0.1:80"))
	t.Setenv("ETCD_ENDPOINTS", " , "+srv.Endpoints()[0]+",")
	w, err := discovery.Watch(context.Background(), "etcd:///svc")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w.Close()
	waitSet(t, w, "a=10.0.0.1:80")
}

func TestTargetBad(t *testing.T) {
	cases := []struct{ target, part string }{
		{"etcd:///", "path"},
		{"etcd://127.0.0.1:2379/", "path"},
		{"etcd://127.0.0.1:2379///", "path"},
		{"etcd:///svc?tag=x", "query"},
		{"etcd://127.0.0.1:0/svc", "authority"}, // checked by discovery.ParseTarget
	}
	for _, c := range cases {
		w, err := discovery.Watch(context.Background(), c.target)
		if err == nil {
			w.Close()
			t.Errorf("%s: accepted", c.target)
			continue
		}
		if !errors.Is(err, discovery.ErrBadTarget) || !strings.Contains(err.Error(), c.part) {
			t.Errorf("%s: %v; want ErrBadTarget naming %q", c.target, err, c.part)
		}
	}
}

func TestEnvEndpoints(t *testing.T) {
	got := envEndpoints(" a:1, ,http://b:2,")
	if strings.Join(got, "|") != "a:1|http://b:2" {
		t.Fatalf("envEndpoints = %q", got)
	}
	if envEndpoints("") != nil {
		t.Fatalf("empty env gave endpoints")
	}
}

// TestTargetLoginEndsWithCtx: with credentials, the etcd:// builder logs in
// while it builds, and discovery.Watch's ctx bounds that construction: its
// cancellation (Ctrl-C in dialtone watch) ends the wait for a silent etcd at
// once, with ctx's error, not only its deadline. Before, the login ran on to
// its 5 s dial timeout and reported "context deadline exceeded".
func TestTargetLoginEndsWithCtx(t *testing.T) {
	silent := etcdtest.Silent(t) // an etcd that accepts connections and never answers
	for _, v := range []string{varCACert, varCert, varKey, varPassword, varInsecureSkipVerify, varInsecureTransport, varEndpoints} {
		t.Setenv(v, "")
	}
	t.Setenv(varUser, "alice:"+secret)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	w, err := discovery.Watch(ctx, "etcd://"+silent+"/svc")
	took := time.Since(start)
	if err == nil {
		w.Close()
		t.Fatal("Watch logged in to an etcd that never answers")
	}
	if took > 2*time.Second || !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned after %v with %v; want context.Canceled soon after the 200 ms cancel", took.Round(time.Millisecond), err)
	}
}
