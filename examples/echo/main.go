// Command echo is a net/rpc echo server that registers itself with Consul or
// etcd, so that dialtone clients find it by name. It serves the service
// "Echo" (see package echoapi for the message types) and the dialtone
// heartbeat. It speaks net/rpc's gob format (what dialtone's rpcclient uses)
// and, on the same port, JSON-RPC (net/rpc/jsonrpc, what dialtone call uses).
//
// Run one on its own, or several registered in a registry:
//
//	go run ./examples/echo -listen 127.0.0.1:9000
//	CONSUL_HTTP_ADDR=127.0.0.1:8500 go run ./examples/echo -registry consul -listen 127.0.0.1:9001 -name a
//	ETCD_ENDPOINTS=127.0.0.1:2379 go run ./examples/echo -registry etcd -listen 127.0.0.1:9002 -name b
//
// and call them with examples/client or the dialtone CLI:
//
//	go run ./examples/client -target consul:///echo
//	go run ./cmd/dialtone watch etcd:///services/echo
//
// With -registry consul the instance is registered with the local agent
// (CONSUL_HTTP_ADDR, default 127.0.0.1:8500; token from CONSUL_HTTP_TOKEN) as
// service -service with a TTL check that the process keeps passing. With
// -registry etcd it is written under the key services/SERVICE/NAME
// (ETCD_ENDPOINTS, comma-separated, default 127.0.0.1:2379; TLS and auth from
// etcdctl's ETCDCTL_* variables, as for the etcd:// target) on a lease that
// the process keeps alive; clients watch it as etcd:///services/SERVICE.
//
// Once it serves and is registered, it prints "listening on HOST:PORT" on
// standard output. On SIGINT or SIGTERM it deregisters, keeps serving for
// -drain so that clients see it leave before its connections close, then
// exits 0. Logs go to standard error.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/consul"
	"github.com/dialtone-go/dialtone/discovery/etcd"
	"github.com/dialtone-go/dialtone/examples/echo/echoapi"
	"github.com/dialtone-go/dialtone/rpcclient"
)

// registerTimeout bounds the first registration with the registry.
const registerTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal during the drain kills the process at once
	}()
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2) // the flag package has printed the error and the usage
	default:
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

// errUsage marks command-line errors, already reported on standard error.
var errUsage = errors.New("usage error")

// config is the parsed command line.
type config struct {
	listen, advertise, name string
	registry, service       string
	ttl, drain              time.Duration
	weight                  int
	zone, tags              string
}

// parseFlags parses args. Errors and -h print to standard error.
func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:0", "`address` to listen on (host:port; port 0 picks a free one)")
	fs.StringVar(&c.advertise, "advertise", "", "`host:port` clients dial, as registered (default: the listening address)")
	fs.StringVar(&c.name, "name", "", "instance `name`: returned in every reply and used as the registry ID (default: the advertised address)")
	fs.StringVar(&c.registry, "registry", "none", "where to register: consul, etcd or none")
	fs.StringVar(&c.service, "service", "echo", "service `name` to register (etcd: under the key prefix services/NAME)")
	fs.DurationVar(&c.ttl, "ttl", 10*time.Second, "Consul TTL check period, or etcd lease TTL (at least 1s)")
	fs.DurationVar(&c.drain, "drain", 2*time.Second, "on shutdown, how long to keep serving after deregistering")
	fs.IntVar(&c.weight, "weight", 1, "weight registered with the instance (>= 1)")
	fs.StringVar(&c.zone, "zone", "", "optional locality registered with the instance")
	fs.StringVar(&c.tags, "tags", "", "comma-separated tags registered with the instance")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: echo [flags]\n\nA net/rpc echo server (service %q) that registers with Consul or etcd.\n"+
			"Environment: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN (consul); ETCD_ENDPOINTS (etcd, comma-separated), ETCDCTL_* (etcd TLS and auth).\n\nFlags:\n", echoapi.ServiceName)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	bad := func(format string, a ...any) (config, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintln(fs.Output(), err)
		fs.Usage()
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected arguments: %q", fs.Args())
	case c.registry != "none" && c.registry != "consul" && c.registry != "etcd":
		return bad("-registry %q: want consul, etcd or none", c.registry)
	case c.service == "" || strings.ContainsAny(c.service, "/?# "):
		return bad("-service %q: want a non-empty name without '/', '?', '#' or spaces", c.service)
	case c.ttl < time.Second:
		return bad("-ttl %v: want at least 1s", c.ttl)
	case c.drain < 0:
		return bad("-drain %v: want 0 or more", c.drain)
	case c.weight < 1:
		return bad("-weight %d: want 1 or more", c.weight)
	}
	return c, nil
}

// run is the whole program: it serves until ctx is done, then deregisters
// and shuts down. It prints "listening on ADDR" on stdout once the server
// serves and is registered. Tests call it directly.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parseFlags(args)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	if c.advertise == "" {
		c.advertise = addr
	}
	if c.name == "" {
		c.name = c.advertise
	}
	if host, _, err := net.SplitHostPort(c.advertise); c.registry != "none" && err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			ln.Close()
			return fmt.Errorf("cannot register %s: clients cannot dial a wildcard address; set -advertise host:port", c.advertise)
		}
	}
	srv, err := newServer(ln, c.name, log)
	if err != nil {
		ln.Close()
		return err
	}
	go srv.serve()

	reg, err := register(ctx, c, log)
	if err != nil {
		srv.shutdown()
		return err
	}
	log.Info("serving", "listen", addr, "advertise", c.advertise, "name", c.name, "registry", c.registry, "service", c.service)
	fmt.Fprintf(stdout, "listening on %s\n", addr)

	<-ctx.Done()
	log.Info("shutting down", "registry", c.registry)
	var errs []error
	if err := reg.Close(); err != nil {
		errs = append(errs, err)
		log.Warn("deregistration failed", "error", err)
	}
	if c.drain > 0 && c.registry != "none" {
		log.Info("draining: still serving while clients see the instance leave", "for", c.drain)
		time.Sleep(c.drain)
	}
	srv.shutdown()
	log.Info("stopped")
	return errors.Join(errs...)
}

// register registers the instance as c says, and returns what deregisters it.
func register(ctx context.Context, c config, log *slog.Logger) (io.Closer, error) {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	var tags []string
	for t := range strings.SplitSeq(c.tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	switch c.registry {
	case "consul":
		r := consul.Registration{
			Name: c.service, ID: c.name, Addr: c.advertise, Tags: tags, Weight: c.weight,
			Check: consul.Check{TTL: c.ttl, DeregisterCriticalServiceAfter: time.Minute},
		}
		if c.zone != "" {
			r.Meta = map[string]string{"zone": c.zone}
		}
		reg, err := consul.NewRegistrar(ctx, r, consul.WithLogger(log))
		if err != nil {
			addr := os.Getenv("CONSUL_HTTP_ADDR")
			if strings.Contains(addr, "@") {
				addr = "(not shown: it holds credentials)" // the library refuses it
			}
			return nil, fmt.Errorf("register with consul (CONSUL_HTTP_ADDR=%q): %w", addr, err)
		}
		log.Info("registered with consul", "service", c.service, "id", reg.ID())
		return reg, nil
	case "etcd":
		// The environment the etcd:// target reads: ETCD_ENDPOINTS, then
		// etcdctl's TLS and auth variables.
		cfg, err := etcd.ConfigFromEnv()
		if err != nil {
			return nil, err
		}
		hosts := cfg.Endpoints
		cli, err := clientv3.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(hosts, ","), err)
		}
		e := discovery.Endpoint{ID: c.name, Addr: c.advertise, Weight: c.weight, Zone: c.zone, Tags: tags}
		reg, err := etcd.NewRegistrar(ctx, cli, "services/"+c.service, e,
			etcd.WithTTL(c.ttl), etcd.WithRegistrarLogger(log))
		if err != nil {
			cli.Close()
			return nil, fmt.Errorf("register with etcd (%s): %w", strings.Join(hosts, ","), err)
		}
		log.Info("registered with etcd", "key", reg.Key(), "endpoints", hosts)
		return closers{reg, cli}, nil
	default:
		return closers{}, nil
	}
}

// closers closes each of its elements in order and joins their errors.
type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// server serves net/rpc on a listener and can shut down without leaving a
// goroutine behind: it tracks its connections and interrupts sleeping calls.
type server struct {
	ln   net.Listener
	rpc  *rpc.Server
	log  *slog.Logger
	stop chan struct{} // closed by shutdown; ends sleeps

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // the accept loop and every connection
}

func newServer(ln net.Listener, name string, log *slog.Logger) (*server, error) {
	s := &server{ln: ln, rpc: rpc.NewServer(), log: log, stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	if err := s.rpc.RegisterName(echoapi.ServiceName, &Echo{name: name, stop: s.stop}); err != nil {
		return nil, err
	}
	if err := rpcclient.RegisterHeartbeat(s.rpc); err != nil {
		return nil, err
	}
	s.wg.Add(1)
	return s, nil
}

// serve accepts connections until shutdown. The caller has done wg.Add(1).
func (s *server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept failed", "error", err)
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// serveConn serves one connection until the peer or shutdown closes it. It
// speaks net/rpc's gob format, or JSON-RPC (net/rpc/jsonrpc) when the first
// byte is '{'. A gob stream never starts with '{': its first message is the
// type definition of rpc.Request, whose length prefix is 46.
func (s *server) serveConn(c net.Conn) {
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	bc := &bufferedConn{Conn: c, r: br}
	if first[0] == '{' {
		s.rpc.ServeCodec(jsonrpc.NewServerCodec(bc)) // closes bc
		return
	}
	s.rpc.ServeConn(bc) // closes bc
}

// bufferedConn is a net.Conn whose reads go through the reader that sniffed
// the first byte.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// shutdown stops accepting, ends sleeping calls, closes every connection and
// waits for their goroutines.
func (s *server) shutdown() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.stop)
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Echo is the receiver registered as echoapi.ServiceName.
type Echo struct {
	name string
	stop <-chan struct{}
}

// errShuttingDown fails calls whose sleep is cut short by shutdown.
var errShuttingDown = errors.New("echo: server shutting down")

// Echo answers args.Msg and the server's name, after args.Sleep (capped at
// echoapi.MaxSleep). net/rpc calls it on its own goroutine per request.
func (e *Echo) Echo(args *echoapi.Args, reply *echoapi.Reply) error {
	if d := min(args.Sleep, echoapi.MaxSleep); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-e.stop:
			return errShuttingDown
		}
	}
	reply.Msg = args.Msg
	reply.Server = e.name
	return nil
}
