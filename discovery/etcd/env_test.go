package etcd

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// secret is the password used in these tests; no error may contain it.
const secret = "s3cret-pw"

func TestConfigFromEnv(t *testing.T) {
	pki := etcdtest.NewPKI(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")

	type env map[string]string
	cases := []struct {
		name      string
		env       env
		endpoints []string
		wantErr   string // substring of the error; "" for success
		tls       bool   // TLS configured
		ownCA     bool   // RootCAs set (otherwise the system roots)
		clientCrt bool   // a client certificate is offered
		user, pw  string
	}{
		{name: "nothing", env: env{}},
		{name: "https endpoint: system roots", env: env{varEndpoints: "https://etcd.example:2379"}, tls: true},
		{name: "https endpoint in the list", endpoints: []string{"10.0.0.1:2379", "https://10.0.0.2:2379"}, tls: true},
		{name: "insecure transport false", env: env{varInsecureTransport: "false"}, tls: true},
		{name: "insecure transport true", env: env{varInsecureTransport: "true"}},
		{name: "insecure transport garbage", env: env{varInsecureTransport: "maybe"}, wantErr: varInsecureTransport},
		{name: "CA", env: env{varCACert: pki.CACert}, tls: true, ownCA: true},
		{name: "CA and client cert", env: env{varCACert: pki.CACert, varCert: pki.ClientCert, varKey: pki.ClientKey}, tls: true, ownCA: true, clientCrt: true},
		{name: "client cert, system roots", env: env{varCert: pki.ClientCert, varKey: pki.ClientKey}, tls: true, clientCrt: true},
		{name: "CA unreadable", env: env{varCACert: missing}, wantErr: varCACert},
		{name: "CA not PEM", env: env{varCACert: notPEM}, wantErr: varCACert},
		{name: "cert without key", env: env{varCert: pki.ClientCert}, wantErr: varKey},
		{name: "key without cert", env: env{varKey: pki.ClientKey}, wantErr: varCert},
		{name: "cert unreadable", env: env{varCert: missing, varKey: pki.ClientKey}, wantErr: varCert},
		{name: "key unreadable", env: env{varCert: pki.ClientCert, varKey: missing}, wantErr: varKey},
		{name: "key of another cert", env: env{varCert: pki.ClientCert, varKey: pki.ServerKey}, wantErr: varKey},
		{name: "skip verify refused", env: env{varCACert: pki.CACert, varInsecureSkipVerify: "true"}, wantErr: varInsecureSkipVerify},
		{name: "skip verify refused without TLS", env: env{varInsecureSkipVerify: "1"}, wantErr: varInsecureSkipVerify},
		{name: "skip verify false", env: env{varCACert: pki.CACert, varInsecureSkipVerify: "false"}, tls: true, ownCA: true},
		{name: "skip verify garbage", env: env{varInsecureSkipVerify: "yes please"}, wantErr: varInsecureSkipVerify},
		{name: "http endpoint with CA", env: env{varCACert: pki.CACert}, endpoints: []string{"http://10.0.0.1:2379"}, wantErr: varCACert},
		{name: "http before https", endpoints: []string{"http://10.0.0.1:2379", "https://10.0.0.2:2379"}, wantErr: "http://10.0.0.1:2379"},
		{name: "user:password", env: env{varUser: "alice:" + secret}, user: "alice", pw: secret},
		{name: "password with a colon", env: env{varUser: "alice:a:" + secret}, user: "alice", pw: "a:" + secret},
		{name: "user and password", env: env{varUser: "alice", varPassword: secret}, user: "alice", pw: secret},
		{name: "password set: user taken whole", env: env{varUser: "al:ice", varPassword: secret}, user: "al:ice", pw: secret},
		{name: "user without password", env: env{varUser: "alice"}, wantErr: varPassword},
		{name: "password without user", env: env{varPassword: secret}, wantErr: varUser},
		{name: "empty user name", env: env{varUser: ":" + secret}, wantErr: varUser},
		{name: "empty password", env: env{varUser: "alice:"}, wantErr: varUser},
		{name: "credentials in an endpoint", endpoints: []string{"https://alice:" + secret + "@10.0.0.1:2379"}, wantErr: varUser},
		{name: "credentials in ETCD_ENDPOINTS", env: env{varEndpoints: "alice:" + secret + "@10.0.0.1:2379"}, wantErr: varUser},
		{name: "bad CA with a password", env: env{varCACert: notPEM, varUser: "alice:" + secret}, wantErr: varCACert},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := configFromEnv(func(k string) string { return c.env[k] }, c.endpoints)
			if c.wantErr != "" {
				if err == nil {
					t.Fatalf("no error; want one naming %s", c.wantErr)
				}
				if !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("error %q does not name %s", err, c.wantErr)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains the password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if got := cfg.TLS != nil; got != c.tls {
				t.Fatalf("TLS configured = %v; want %v", got, c.tls)
			}
			if cfg.TLS != nil {
				if cfg.TLS.InsecureSkipVerify {
					t.Error("InsecureSkipVerify is set")
				}
				if got := cfg.TLS.RootCAs != nil; got != c.ownCA {
					t.Errorf("own CA pool = %v; want %v", got, c.ownCA)
				}
				offers := cfg.TLS.GetClientCertificate != nil || len(cfg.TLS.Certificates) > 0
				if offers != c.clientCrt {
					t.Errorf("client certificate offered = %v; want %v", offers, c.clientCrt)
				}
			}
			if cfg.Username != c.user || cfg.Password != c.pw {
				t.Errorf("credentials %q/%q; want %q/%q", cfg.Username, cfg.Password, c.user, c.pw)
			}
			if len(cfg.Endpoints) == 0 {
				t.Error("no endpoints")
			}
		})
	}
}

// TestConfigFromEnvEndpoints checks the endpoint defaults: the arguments,
// then ETCD_ENDPOINTS, then DefaultEndpoint.
func TestConfigFromEnvEndpoints(t *testing.T) {
	t.Setenv(varEndpoints, "")
	for _, v := range []string{varCACert, varCert, varKey, varUser, varPassword, varInsecureSkipVerify, varInsecureTransport} {
		t.Setenv(v, "")
	}
	cfg, err := ConfigFromEnv()
	if err != nil || strings.Join(cfg.Endpoints, ",") != DefaultEndpoint {
		t.Fatalf("ConfigFromEnv() = %v, %v; want [%s]", cfg.Endpoints, err, DefaultEndpoint)
	}
	t.Setenv(varEndpoints, "a:1, b:2")
	if cfg, _ = ConfigFromEnv(); strings.Join(cfg.Endpoints, ",") != "a:1,b:2" {
		t.Fatalf("with ETCD_ENDPOINTS: %v", cfg.Endpoints)
	}
	if cfg, _ = ConfigFromEnv("c:3"); strings.Join(cfg.Endpoints, ",") != "c:3" {
		t.Fatalf("with an argument: %v", cfg.Endpoints)
	}
}

// TestTargetNoSecrets: a target never carries credentials, and the error
// for one that tries does not repeat them.
func TestTargetNoSecrets(t *testing.T) {
	for _, target := range []string{
		"etcd:///svc?password=" + secret,
		"etcd://127.0.0.1:2379/svc?user=alice:" + secret,
		"etcd:///svc?token=" + secret,
		"etcd:///svc?x=" + secret,
	} {
		w, err := discovery.Watch(context.Background(), target)
		if err == nil {
			w.Close()
			t.Errorf("%s: accepted", target)
			continue
		}
		if !errors.Is(err, discovery.ErrBadTarget) || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v; want ErrBadTarget without the secret", target, err)
		}
	}
}

// TestConfigFromEnvRejectsMalformedEndpoints: an endpoint etcd's client can
// never reach (no port, a port out of range, an unknown scheme, an empty
// name) is an error naming ETCD_ENDPOINTS, or the argument, and the endpoint,
// at once. Accepted, it made every list fail with only "context deadline
// exceeded", every 5 s, naming neither.
func TestConfigFromEnvRejectsMalformedEndpoints(t *testing.T) {
	for _, ep := range []string{
		"127.0.0.1",
		"127.0.0.1:99999",
		"127.0.0.1:0",
		"http://127.0.0.1",
		"ftp://127.0.0.1:2379",
		"etcd.example:port",
		"10.0.0.1:2379,127.0.0.1",
	} {
		env := map[string]string{varEndpoints: ep}
		_, err := configFromEnv(func(k string) string { return env[k] }, nil)
		if err == nil || !strings.Contains(err.Error(), varEndpoints) {
			t.Errorf("ETCD_ENDPOINTS=%q: %v; want an error naming %s", ep, err, varEndpoints)
		}
		if ep != "10.0.0.1:2379,127.0.0.1" {
			_, err = configFromEnv(func(string) string { return "" }, []string{ep})
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(ep)) {
				t.Errorf("ConfigFromEnv(%q): %v; want an error naming the endpoint", ep, err)
			}
		}
	}
	for _, ep := range []string{
		"127.0.0.1:2379", "etcd.example:2379", "[::1]:2379", "http://127.0.0.1:2379", "HTTPS://etcd.example:2379",
		"https://etcd.example:2379/", "unix:///run/etcd.sock", "unix://etcd.sock:0",
	} {
		env := map[string]string{varEndpoints: ep}
		if _, err := configFromEnv(func(k string) string { return env[k] }, nil); err != nil {
			t.Errorf("ETCD_ENDPOINTS=%q: %v; want it accepted", ep, err)
		}
	}
}

// TestConfigFromEnvAcceptsUnixColonEndpoint: etcd's client takes a unix
// socket as "unix:PATH" (and "unixs:PATH") as well as "unix://PATH"; the
// doc of ConfigFromEnv names unix as an accepted scheme. Such an endpoint
// must be accepted, and it reaches etcd.
func TestConfigFromEnvAcceptsUnixColonEndpoint(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // etcd names a unix listener's socket after the URL's host, in the working directory
	sock := "etcd.sock"
	etcdtest.Start(t, func(c *embed.Config) {
		c.ListenClientUrls = append(c.ListenClientUrls, url.URL{Scheme: "unix", Host: sock})
	})
	if _, err := os.Stat(filepath.Join(dir, sock)); err != nil {
		t.Fatalf("no socket: %v", err)
	}
	for _, ep := range []string{"unix:" + filepath.Join(dir, sock), "unix:" + sock} {
		cfg, err := configFromEnv(func(string) string { return "" }, []string{ep})
		if err != nil {
			t.Errorf("ConfigFromEnv(%q): %v; want it accepted (etcd's client dials it)", ep, err)
			continue
		}
		c, err := clientv3.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = c.Get(ctx, "x")
		cancel()
		c.Close()
		if err != nil {
			t.Errorf("Get over %q: %v", ep, err)
		}
	}
}

// unixs:PATH, like unixs://PATH and https://, asks for TLS: etcd's client
// takes both socket forms, and TLS must not be left off for the one
// without "//".
func TestUnixsColonEndpointTurnsTLSOn(t *testing.T) {
	for _, ep := range []string{"unixs:/run/etcd.sock", "unixs:///run/etcd.sock", "https://10.0.0.1:2379"} {
		cfg, err := configFromEnv(func(string) string { return "" }, []string{ep})
		if err != nil {
			t.Fatalf("configFromEnv(%q): %v", ep, err)
		}
		if cfg.TLS == nil {
			t.Errorf("configFromEnv(%q): no TLS; want it on", ep)
		}
	}
	cfg, err := configFromEnv(func(string) string { return "" }, []string{"unix:/run/etcd.sock"})
	if err != nil || cfg.TLS != nil {
		t.Errorf("configFromEnv(unix:/run/etcd.sock) = TLS %v, %v; want no TLS", cfg.TLS != nil, err)
	}
}
