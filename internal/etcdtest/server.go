package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Timeouts of the harness: how long etcd may take to become ready, and how
// many times Start tries fresh ports when another process took one.
const (
	readyTimeout = 30 * time.Second
	bindAttempts = 5
)

// Option adjusts the embed.Config of a Server before it starts (and again on
// every Restart). Tests use it for settings the defaults below do not cover.
type Option func(*embed.Config)

// Server is one embedded etcd member. Its methods may be called from the test
// goroutine and its helpers; they are safe for concurrent use.
type Server struct {
	name      string
	dir       string
	clientURL url.URL
	peerURL   url.URL
	opts      []Option
	tls       transport.TLSInfo // client TLS (WithClientTLS); empty for http://

	mu   sync.Mutex
	etcd *embed.Etcd // nil while stopped
}

// Start runs an etcd member on 127.0.0.1 with free ports and a data directory
// under t.TempDir(), and blocks until it is ready to serve (at most 30 s, or
// the test fails). It picks new ports and tries again, up to 5 times, if a
// port was taken between choosing and binding it. The server is stopped by
// t.Cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		name: "etcdtest",
		dir:  filepath.Join(t.TempDir(), "etcd"),
		opts: opts,
		tls:  clientTLS(opts),
	}
	scheme := "http"
	if !s.tls.Empty() {
		scheme = "https"
	}
	var err error
	for range bindAttempts {
		var ports []int
		if ports, err = freePorts(2); err != nil {
			break
		}
		s.clientURL = url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
		s.peerURL = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
		if err = s.start(); err == nil || !isAddrInUse(err) {
			break
		}
	}
	if err != nil {
		t.Fatalf("etcdtest: start: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Endpoints returns the client URLs of the member, e.g.
// ["http://127.0.0.1:40123"] (https:// with WithClientTLS). They stay the
// same across Restart.
func (s *Server) Endpoints() []string { return []string{s.clientURL.String()} }

// Hosts returns the client addresses as host:port, the form targets take
// (etcd://HOST:PORT/prefix).
func (s *Server) Hosts() []string { return []string{s.clientURL.Host} }

// ClientConfig returns the configuration Client uses: the member's
// endpoint, a 5 s dial timeout, no logging, and with WithClientTLS the
// PKI's CA and client certificate. Tests add credentials to it (see
// ClientAs) or change it before calling clientv3.New.
func (s *Server) ClientConfig(t testing.TB) clientv3.Config {
	t.Helper()
	cfg := clientv3.Config{
		Endpoints:   s.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if !s.tls.Empty() {
		info := transport.TLSInfo{
			CertFile:      s.tls.ClientCertFile,
			KeyFile:       s.tls.ClientKeyFile,
			TrustedCAFile: s.tls.TrustedCAFile,
			Logger:        zap.NewNop(),
		}
		tc, err := info.ClientConfig()
		if err != nil {
			t.Fatalf("etcdtest: client TLS: %v", err)
		}
		cfg.TLS = tc
	}
	return cfg
}

// Client returns a new client connected to the member, closed by t.Cleanup.
// It does not block on the server: a stopped server makes requests fail,
// not Client.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClient(t, s.ClientConfig(t))
}

// ClientAs returns a client like Client that logs in as user (see
// EnableAuth). Unlike Client, it blocks until etcd accepts the password, at
// most 5 s, and the test fails if it does not.
func (s *Server) ClientAs(t testing.TB, user, password string) *clientv3.Client {
	t.Helper()
	cfg := s.ClientConfig(t)
	cfg.Username, cfg.Password = user, password
	return newClient(t, cfg)
}

// newClient makes a client from cfg, closed by t.Cleanup.
func newClient(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop shuts the member down and waits until it has stopped. Clients see the
// connection refused until Restart. It is a no-op on a stopped server.
func (s *Server) Stop() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart stops the member if it runs, then starts it again with the same
// data directory and ports, and blocks until it is ready. The test fails if
// it cannot. Binding is retried for a few seconds in case the old sockets
// linger.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if !isAddrInUse(err) || time.Now().After(deadline) {
			t.Fatalf("etcdtest: restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // bounded by the deadline: waiting for the port to free
	}
}

// start runs the member on s's ports and waits for it to be ready.
func (s *Server) start() error {
	cfg := memberConfig(s.name, s.dir, s.clientURL, s.clientURL, s.peerURL, s.peerURL,
		s.name+"="+s.peerURL.String(), s.opts)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	if err := waitReady(e); err != nil {
		return err
	}
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	return nil
}

// memberConfig is the embed.Config of one member: it listens on the listen
// URLs, tells clients and peers to use the advertised ones, and joins the
// members of initialCluster ("name=peerURL,..."). Logging is silenced,
// progress notifications are sent every 500 ms, and passwords are hashed
// with the cheapest bcrypt cost; opts may change these. With client TLS
// (WithClientTLS) the client URLs are https://.
func memberConfig(name, dir string, listenClient, advClient, listenPeer, advPeer url.URL, initialCluster string, opts []Option) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{listenClient}
	cfg.AdvertiseClientUrls = []url.URL{advClient}
	cfg.ListenPeerUrls = []url.URL{listenPeer}
	cfg.AdvertisePeerUrls = []url.URL{advPeer}
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterToken = "etcdtest"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	cfg.EnableGRPCGateway = false
	cfg.WatchProgressNotifyInterval = 500 * time.Millisecond
	cfg.BcryptCost = 4 // bcrypt.MinCost: a login costs about a millisecond, not 100 ms under -race
	for _, o := range opts {
		o(cfg)
	}
	if !cfg.ClientTLSInfo.Empty() {
		for _, us := range [][]url.URL{cfg.ListenClientUrls, cfg.AdvertiseClientUrls} {
			for i := range us {
				us[i].Scheme = "https"
			}
		}
	}
	return cfg
}

// waitReady blocks until e serves (for a cluster member: until it has
// joined a cluster with a leader), at most readyTimeout. It closes e if
// e fails or is not ready in time.
func waitReady(e *embed.Etcd) error {
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcd failed before ready: %w", err)
	case <-t.C:
		e.Close()
		return fmt.Errorf("etcd not ready within %v", readyTimeout)
	}
}

// freePorts returns n distinct ports that were free a moment ago: it listens
// on 127.0.0.1:0 n times, then closes the listeners. Start retries if one
// is taken before etcd binds it.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// isAddrInUse reports whether err says a port was taken; embed does not
// always keep the syscall error in its chain.
func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}
