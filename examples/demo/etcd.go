package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/etcd"
)

// etcdRegistry is a single-member etcd embedded in this process, on free
// loopback ports, with its data in a temporary directory.
type etcdRegistry struct {
	e    *embed.Etcd
	dir  string
	host string // client address, host:port
}

// startEtcd starts the embedded etcd and waits until it serves, bounded by
// ctx and 30 s. It picks fresh ports and tries again when one was taken
// between choosing and binding it.
func startEtcd(ctx context.Context) (*etcdRegistry, error) {
	dir, err := os.MkdirTemp("", "dialtone-demo-etcd-")
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		// A fresh data directory per attempt: a failed start may have
		// written the previous ports into it.
		r, err := startEtcdOnce(ctx, dir, filepath.Join(dir, strconv.Itoa(attempt)))
		if err == nil {
			return r, nil
		}
		if attempt == 4 || !isAddrInUse(err) {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
	}
}

func startEtcdOnce(ctx context.Context, dir, dataDir string) (*etcdRegistry, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	cfg := embed.NewConfig()
	cfg.Name = "demo"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.InitialClusterToken = "dialtone-demo"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	cfg.EnableGRPCGateway = false
	cfg.UnsafeNoFsync = true // a throwaway data directory
	// The watcher asks for progress notifications to notice a stalled
	// watch; etcd's default interval is 10 minutes.
	cfg.WatchProgressNotifyInterval = 500 * time.Millisecond
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return &etcdRegistry{e: e, dir: dir, host: client.Host}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("failed before ready: %w", err)
	case <-timer.C:
		e.Close()
		return nil, errors.New("not ready within 30 s")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
}

// ignoreEtcdctlEnv unsets etcdctl's TLS and auth variables, which the
// client's etcd:// target reads: they are an operator's settings for
// another etcd (a TLS cluster), and would make the client speak TLS, or log
// in, to the embedded one, which serves plaintext on loopback without
// authentication.
func ignoreEtcdctlEnv(logf func(format string, args ...any)) {
	for _, v := range []string{
		"ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY", "ETCDCTL_USER", "ETCDCTL_PASSWORD",
		"ETCDCTL_INSECURE_TRANSPORT", "ETCDCTL_INSECURE_SKIP_TLS_VERIFY",
	} {
		if _, ok := os.LookupEnv(v); ok {
			os.Unsetenv(v)
			logf("ignoring %s: the embedded etcd serves plaintext on loopback", v)
		}
	}
}

func (r *etcdRegistry) Target() string { return "etcd://" + r.host + "/" + etcdPrefix }

// Close stops etcd, waits for it, and removes its data.
func (r *etcdRegistry) Close() error {
	r.e.Close()
	return os.RemoveAll(r.dir)
}

// Register registers addr under etcdPrefix/id with an etcd.Registrar on a
// lease of registrationTTL. Each registration has its own etcd client, so
// that Crash can cut it off the way a process death would.
func (r *etcdRegistry) Register(ctx context.Context, id, addr string) (registration, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{r.host},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	reg, err := etcd.NewRegistrar(ctx, cli, etcdPrefix, discovery.Endpoint{ID: id, Addr: addr},
		etcd.WithTTL(registrationTTL), etcd.WithRegistrarLogger(quiet))
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &etcdRegistration{cli: cli, reg: reg}, nil
}

type etcdRegistration struct {
	cli *clientv3.Client
	reg *etcd.Registrar

	mu      sync.Mutex
	crashed chan struct{} // closed once a crashed registration is cleaned up
	closed  bool
}

// Crash closes the registration's client: the keepalives stop and the key
// lives on until its lease expires. The Registrar is closed in the
// background: its revocation cannot reach etcd and gives up after its
// timeout (2 s), which must not hold up the timeline.
func (r *etcdRegistration) Crash() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.crashed != nil || r.closed {
		return
	}
	r.cli.Close()
	done := make(chan struct{})
	r.crashed = done
	go func() {
		defer close(done)
		r.reg.Close()
	}()
}

// Close revokes the lease, deleting the key, then closes the client. After
// Crash it only waits for the background cleanup; the key expires on its
// own.
func (r *etcdRegistration) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.crashed != nil {
		<-r.crashed
		return nil
	}
	err := r.reg.Close()
	if cerr := r.cli.Close(); err == nil {
		err = cerr
	}
	return err
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// isAddrInUse reports whether err says a port was taken; embed does not
// always keep the syscall error in its chain.
func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}
