package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/dialtone-go/dialtone/discovery/consul"
)

// registrationTTL is how long a crashed backend stays registered: the etcd
// lease TTL, or the Consul TTL check's.
const registrationTTL = 5 * time.Second

// serviceName is the service the demo registers and calls: the etcd key
// prefix is "dialtone-demo/echo", the Consul service "dialtone-demo-echo".
const (
	etcdPrefix    = "dialtone-demo/echo"
	consulService = "dialtone-demo-echo"
)

// registry is where backends register and the client discovers them.
type registry interface {
	// Target is the dialtone target the client dials.
	Target() string
	// Register registers a backend under id at addr; ctx bounds the first
	// registration.
	Register(ctx context.Context, id, addr string) (registration, error)
	// Close stops what the registry started (the embedded etcd). Every
	// registration must be closed first.
	Close() error
}

// registration keeps one backend registered.
type registration interface {
	// Crash stops keeping the registration alive without removing it, as a
	// crashed process would: it disappears when its TTL runs out.
	Crash()
	// Close removes the registration (if it can) and releases its
	// resources. Idempotent.
	Close() error
}

// consulRegistry registers backends with an existing Consul agent, each with
// a TTL check kept passing by consul.Registrar.
type consulRegistry struct{ addr string }

func newConsulRegistry(ctx context.Context, addr string) (*consulRegistry, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %w", addr, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	leader, err := c.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(cctx))
	if err != nil {
		return nil, fmt.Errorf("consul agent at %s: %w", addr, err)
	}
	if leader == "" {
		return nil, fmt.Errorf("consul agent at %s has no leader", addr)
	}
	return &consulRegistry{addr: addr}, nil
}

func (r *consulRegistry) Target() string { return "consul://" + r.addr + "/" + consulService }

func (r *consulRegistry) Close() error { return nil }

func (r *consulRegistry) Register(ctx context.Context, id, addr string) (registration, error) {
	// Each registration talks to the agent through its own transport, which
	// Crash cuts, so that the TTL check stops being updated.
	var cut atomic.Bool
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if cut.Load() {
				return nil, errors.New("demo: backend crashed")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		},
	}
	reg, err := consul.NewRegistrar(ctx, consul.Registration{
		Name:  consulService,
		ID:    id,
		Addr:  addr,
		Check: consul.Check{TTL: registrationTTL, DeregisterCriticalServiceAfter: time.Minute},
	}, consul.WithAddress(r.addr), consul.WithAPIConfig(func(c *api.Config) { c.Transport = tr }))
	if err != nil {
		return nil, err
	}
	return &consulRegistration{reg: reg, cut: &cut}, nil
}

type consulRegistration struct {
	reg  *consul.Registrar
	cut  *atomic.Bool
	once sync.Once
	err  error
}

func (r *consulRegistration) Crash() { r.cut.Store(true) }

// Close deregisters, also after a crash (the demo cleans up after its
// crashed backends rather than leave them critical in the agent).
func (r *consulRegistration) Close() error {
	r.once.Do(func() {
		r.cut.Store(false)
		r.err = r.reg.Close()
	})
	return r.err
}
