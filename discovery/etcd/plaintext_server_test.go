package etcd

import (
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
)

// TestTLSToPlaintextServerIsExplained: TLS turned on by the environment
// (ETCDCTL_CACERT, or ETCDCTL_INSECURE_TRANSPORT=false) against an etcd
// that serves plaintext (a local or embedded one: make demo with etcdctl's
// variables exported) fails, and State.Err says why: the server does not
// speak TLS, and which setting turned TLS on. etcd's client says only
// "context deadline exceeded", which named neither.
func TestTLSToPlaintextServerIsExplained(t *testing.T) {
	srv, _ := startEtcd(t)
	pki := etcdtest.NewPKI(t)
	for _, tc := range []struct {
		name, want string
		vars       map[string]string
	}{
		{"CA", varCACert, map[string]string{varCACert: pki.CACert}},
		{"insecure transport false", varInsecureTransport, map[string]string{varInsecureTransport: "false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.vars)
			w, err := discovery.Watch(testCtx(t), "etcd://"+srv.Hosts()[0]+"/svc")
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			defer w.Close()
			start := time.Now()
			s, err := w.Next(testCtx(t))
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			t.Logf("first State after %v: %s", time.Since(start).Round(time.Millisecond), describe(s))
			if s.Err == nil || !strings.Contains(s.Err.Error(), "TLS") || !strings.Contains(s.Err.Error(), tc.want) {
				t.Errorf("State.Err = %v; want it to say the server does not speak TLS, and name %s", s.Err, tc.want)
			}
		})
	}
}
