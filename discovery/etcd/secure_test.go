package etcd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The users of the secured etcd: root writes, reader may only read svc/.
const (
	rootPassword   = "root-" + secret
	readerPassword = "reader-" + secret
)

// startSecureEtcd runs an etcd that serves clients over TLS only, requires
// a client certificate signed by its CA, and has authentication on, with
// root and reader (read access to svc/). It returns the server, its PKI,
// and a client logged in as root.
func startSecureEtcd(t *testing.T) (*etcdtest.Server, *etcdtest.PKI, *clientv3.Client) {
	t.Helper()
	pki := etcdtest.NewPKI(t)
	srv := etcdtest.Start(t, etcdtest.WithClientTLS(pki))
	etcdtest.EnableAuth(t, srv.Client(t), rootPassword, etcdtest.User{Name: "reader", Password: readerPassword, ReadPrefix: "svc/"})
	return srv, pki, srv.ClientAs(t, "root", rootPassword)
}

// setEnv sets etcdctl's variables to vars and clears the others, for the
// rest of the test.
func setEnv(t *testing.T, vars map[string]string) {
	for _, v := range []string{varEndpoints, varCACert, varCert, varKey, varUser, varPassword, varInsecureSkipVerify, varInsecureTransport} {
		t.Setenv(v, vars[v])
	}
}

// TestTargetTLSAuth resolves etcd://127.0.0.1:PORT/svc through
// discovery.Watch against an etcd with TLS, client certificates and
// authentication, configured only through etcdctl's environment variables.
func TestTargetTLSAuth(t *testing.T) {
	srv, pki, root := startSecureEtcd(t)
	newRegistrar(t, root, "svc", ep("n1", "10.0.0.1:80"))
	put(t, root, "svc/n2", ep("n2", "10.0.0.2:80"))
	target := "etcd://" + srv.Hosts()[0] + "/svc"
	tlsVars := map[string]string{varCACert: pki.CACert, varCert: pki.ClientCert, varKey: pki.ClientKey}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range tlsVars {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	for _, c := range []struct {
		name string
		env  map[string]string
	}{
		{"user:password", with(map[string]string{varUser: "reader:" + readerPassword})},
		{"user and password", with(map[string]string{varUser: "reader", varPassword: readerPassword})},
		{"https in ETCD_ENDPOINTS", with(map[string]string{varEndpoints: srv.Endpoints()[0], varUser: "reader:" + readerPassword})},
	} {
		t.Run(c.name, func(t *testing.T) {
			setEnv(t, c.env)
			tgt := target
			if c.env[varEndpoints] != "" {
				tgt = "etcd:///svc"
			}
			w, err := discovery.Watch(testCtx(t), tgt)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			defer w.Close()
			waitSet(t, w, "n1=10.0.0.1:80", "n2=10.0.0.2:80")
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		setEnv(t, with(map[string]string{varUser: "reader:wrong-" + secret}))
		w, err := discovery.Watch(testCtx(t), target)
		if err == nil {
			w.Close()
			t.Fatal("Watch succeeded with a wrong password")
		}
		t.Logf("wrong password: %v", err)
		if !errors.Is(err, rpctypes.ErrAuthFailed) {
			t.Errorf("error %v; want rpctypes.ErrAuthFailed", err)
		}
		if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), varUser) {
			t.Errorf("error %q: want it to name %s and not contain the password", err, varUser)
		}
	})

	// A server certificate that the configured CA did not sign: the
	// connection fails and is never retried in plaintext.
	other := etcdtest.NewPKI(t)
	wrongCA := map[string]string{varCACert: other.CACert, varCert: pki.ClientCert, varKey: pki.ClientKey}
	t.Run("wrong CA with credentials", func(t *testing.T) {
		p := newProxy(t, srv.Hosts()[0])
		vars := map[string]string{varUser: "reader:" + readerPassword}
		for k, v := range wrongCA {
			vars[k] = v
		}
		setEnv(t, vars)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		w, err := discovery.Watch(ctx, "etcd://"+p.ln.Addr().String()+"/svc")
		if err == nil {
			w.Close()
			t.Fatal("Watch succeeded with the wrong CA")
		}
		t.Logf("wrong CA with credentials: Watch failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		if !errors.Is(err, ErrTLSVerify) {
			t.Errorf("error %v; want ErrTLSVerify", err)
		}
		checkTLSOnly(t, p)
	})
	t.Run("wrong CA without credentials", func(t *testing.T) {
		p := newProxy(t, srv.Hosts()[0])
		setEnv(t, wrongCA)
		start := time.Now()
		w, err := discovery.Watch(testCtx(t), "etcd://"+p.ln.Addr().String()+"/svc")
		if err != nil {
			t.Fatalf("Watch: %v; want the error in the first State", err)
		}
		defer w.Close()
		s, err := w.Next(testCtx(t))
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		t.Logf("wrong CA without credentials: first State after %v: %s", time.Since(start).Round(time.Millisecond), describe(s))
		if !errors.Is(s.Err, ErrTLSVerify) || len(s.Endpoints) != 0 {
			t.Errorf("first State %s; want ErrTLSVerify and no endpoints", describe(s))
		}
		checkTLSOnly(t, p)
	})
}

// checkTLSOnly fails the test unless clients opened connections through p
// and every one of them started with a TLS handshake record.
func checkTLSOnly(t *testing.T, p *proxy) {
	t.Helper()
	first := p.firstBytes()
	plain := 0
	for _, b := range first {
		if b != 0x16 {
			plain++
		}
	}
	t.Logf("connections: %d, plaintext: %d", len(first), plain)
	if len(first) == 0 || plain > 0 {
		t.Errorf("first bytes of the connections: %q; want at least one, all TLS handshakes (0x16)", first)
	}
}

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
