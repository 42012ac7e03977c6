package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/hashicorp/consul/api"
)

// Registration describes one service instance to register with the local
// Consul agent.
type Registration struct {
	// Name is the service name clients watch. Required.
	Name string
	// ID is unique on the agent. Default: Name-host-port, of Addr in its
	// canonical spelling.
	ID string
	// Addr is the host:port clients dial; validated by discovery.ValidateAddr
	// and registered in its canonical spelling (discovery.CanonicalAddr).
	Addr string
	// Tags and Meta are published with the instance. Meta["zone"] becomes
	// discovery.Endpoint.Zone. NewRegistrar copies both: the caller may
	// change or reuse them afterwards.
	Tags []string
	Meta map[string]string
	// Weight is the passing weight (default 1); WarningWeight the weight while
	// the check is at warning (default 1).
	Weight, WarningWeight int
	// Check is the health check. Exactly one of its TTL, TCP or HTTP fields
	// must be set.
	Check Check
}

// Check is the health check attached to a Registration.
type Check struct {
	// TTL makes a TTL check that the Registrar keeps at its status (passing
	// unless SetStatus says otherwise) by updating it every TTL/3.
	TTL time.Duration
	// TCP is a host:port the agent dials every Interval.
	TCP string
	// HTTP is a URL the agent GETs every Interval; 2xx is passing, 429 warning.
	HTTP string
	// Interval for TCP and HTTP checks. Default 10 s.
	Interval time.Duration
	// Timeout for TCP and HTTP checks. Default: Consul's (10 s).
	Timeout time.Duration
	// DeregisterCriticalServiceAfter makes the agent remove the instance after
	// it has been critical this long, so a crashed process leaves nothing
	// behind. Default 1 minute; Consul's minimum is 1 minute.
	DeregisterCriticalServiceAfter time.Duration
}

// Registrar keeps one service instance registered with the local agent. It
// runs one goroutine, which it stops on Close.
type Registrar struct {
	client *api.Client
	http   *http.Client
	reg    *api.AgentServiceRegistration
	ttl    time.Duration
	logger func(msg string, args ...any)

	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{} // closed by Close: run returns after the request in flight
	wg     sync.WaitGroup

	mu     sync.Mutex
	status string // TTL check status to keep

	// slot is held by whoever sends the TTL status or registers again
	// (SetStatus, refresh), so that the status SetStatus sets is the last
	// the agent applies, not overwritten by a refresh that read the old
	// one and sent it later.
	slot chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// NewRegistrar registers r with the agent and starts keeping it registered:
// a TTL check is updated every TTL/3, and the instance is registered again
// whenever the agent has forgotten it (an agent restart). ctx bounds the first
// registration only; if it fails after its request was written,
// NewRegistrar deregisters what the agent may have applied before the
// answer was lost (bounded by 2 s past ctx; best effort: an agent that
// applies the registration after the deregistration keeps it).
// Options that configure the agent connection (address, token, TLS,
// logger) apply.
func NewRegistrar(ctx context.Context, r Registration, opts ...Option) (*Registrar, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	reg, ttl, err := agentRegistration(r)
	if err != nil {
		return nil, err
	}
	c, hc, err := newClient(&o, 1<<20)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	rg := &Registrar{
		client: c, http: hc, reg: reg, ttl: ttl, logger: o.logger.Warn,
		ctx: rctx, cancel: cancel, stop: make(chan struct{}), status: api.HealthPassing, slot: make(chan struct{}, 1),
	}
	// wrote says whether any request of the first registration reached
	// the connection: one that did not (ctx done before or during the
	// dial, a refused dial) cannot have been applied, and the cleanup
	// below must not deregister an instance another owner of the ID
	// registered.
	var wrote atomic.Bool
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }})
	if err := rg.register(tctx, api.HealthPassing); err != nil {
		// The request may have reached the agent and been applied, its
		// answer lost to ctx or the connection: the caller, who has no
		// Registrar to Close, must not find the instance left registered
		// (passing). An agent that answered with an error applied nothing,
		// and one that could not be dialed received nothing. The attempt
		// is bounded by 2 s past ctx.
		var se api.StatusError
		var oe *net.OpError
		if wrote.Load() && !errors.As(err, &se) && !(errors.As(err, &oe) && oe.Op == "dial") {
			dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = c.Agent().ServiceDeregisterOpts(reg.ID, (&api.QueryOptions{}).WithContext(dctx))
			dcancel()
		}
		cancel()
		hc.CloseIdleConnections()
		return nil, err
	}
	rg.wg.Add(1)
	go rg.run()
	return rg, nil
}

// ID returns the service ID registered with the agent.
func (r *Registrar) ID() string { return r.reg.ID }

func agentRegistration(r Registration) (*api.AgentServiceRegistration, time.Duration, error) {
	if err := validServiceName(r.Name); err != nil {
		return nil, 0, err
	}
	// The canonical spelling, which the watchers publish and the etcd
	// Registrar registers: "[2001:DB8:0::1]:080" and "[2001:db8::1]:80"
	// are one instance, with one default ID.
	addr, err := discovery.CanonicalAddr(r.Addr)
	if err != nil {
		return nil, 0, fmt.Errorf("consul: registration %q: %w", r.Name, err)
	}
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	id := r.ID
	if id == "" {
		id = r.Name + "-" + host + "-" + portStr
	}
	c := r.Check
	n := 0
	for _, set := range []bool{c.TTL > 0, c.TCP != "", c.HTTP != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, 0, fmt.Errorf("consul: registration %q: set exactly one of Check.TTL, Check.TCP and Check.HTTP", id)
	}
	dereg := c.DeregisterCriticalServiceAfter
	if dereg <= 0 {
		dereg = time.Minute
	}
	interval := c.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	check := &api.AgentServiceCheck{
		CheckID:                        "service:" + id,
		Name:                           "dialtone " + r.Name,
		DeregisterCriticalServiceAfter: dereg.String(),
	}
	switch {
	case c.TTL > 0:
		check.TTL = c.TTL.String()
		check.Status = api.HealthPassing
	case c.TCP != "":
		check.TCP = c.TCP
		check.Interval = interval.String()
	default:
		check.HTTP = c.HTTP
		check.Interval = interval.String()
	}
	if c.Timeout > 0 {
		check.Timeout = c.Timeout.String()
	}
	w, ww := max(r.Weight, 1), max(r.WarningWeight, 1)
	return &api.AgentServiceRegistration{
		// Copies: the Registrar sends them again from its goroutine, and
		// the caller may reuse its Registration.
		ID: id, Name: r.Name, Address: host, Port: port, Tags: slices.Clone(r.Tags), Meta: maps.Clone(r.Meta),
		Weights: &api.AgentWeights{Passing: w, Warning: ww},
		Check:   check,
	}, c.TTL, nil
}

// register registers the instance with the agent; a TTL check starts at
// status (the one SetStatus keeps), so that an agent that forgot the
// instance never serves a node set critical as passing, even for the one
// request a status update after the registration would take.
func (r *Registrar) register(ctx context.Context, status string) error {
	reg := r.reg
	if r.ttl > 0 && r.reg.Check != nil && r.reg.Check.Status != status {
		cp, check := *r.reg, *r.reg.Check
		check.Status = status
		cp.Check = &check
		reg = &cp
	}
	err := r.client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul: register %q: %w", r.reg.ID, err)
	}
	return nil
}

// SetStatus sets the status the Registrar keeps on its TTL check:
// api.HealthPassing, api.HealthWarning or api.HealthCritical. It applies it
// at once, after the keep-alive update in flight if there is one, so that
// the agent never ends up with an older status sent later. It is an error
// for a registration without a TTL check. If ctx is done before the
// keep-alive update in flight ends, SetStatus fails and the kept status is
// unchanged; once that update has ended, the Registrar keeps the new status
// even if sending it fails (an agent error, or ctx ending meanwhile), and
// sends it at its next keep-alive.
func (r *Registrar) SetStatus(ctx context.Context, status string) error {
	if r.ttl <= 0 {
		return errors.New("consul: SetStatus needs a TTL check")
	}
	switch status {
	case api.HealthPassing, api.HealthWarning, api.HealthCritical:
	default:
		return fmt.Errorf("consul: SetStatus(%q): want passing, warning or critical", status)
	}
	if err := r.takeSlot(ctx); err != nil {
		return fmt.Errorf("consul: SetStatus(%q): %w", status, err)
	}
	defer func() { <-r.slot }()
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
	return r.updateTTL(ctx, status)
}

// takeSlot waits for the slot, bounded by ctx; the caller releases it with
// <-r.slot. A ctx already done fails at once, even with the slot free
// (select would pick either at random).
func (r *Registrar) takeSlot(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case r.slot <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Registrar) updateTTL(ctx context.Context, status string) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := r.client.Agent().UpdateTTLOpts(r.reg.Check.CheckID, "", status, q); err != nil {
		return fmt.Errorf("consul: update TTL of %q: %w", r.reg.ID, err)
	}
	return nil
}

// run keeps the registration alive until Close.
func (r *Registrar) run() {
	defer r.wg.Done()
	every := 10 * time.Second
	if r.ttl > 0 {
		every = max(r.ttl/3, 100*time.Millisecond)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			// A refresh that ran to its timeout leaves a tick waiting,
			// and select picks at random among ready cases: after Close,
			// send nothing more.
			select {
			case <-r.stop:
				return
			default:
			}
		}
		ctx, cancel := context.WithTimeout(r.ctx, every)
		if err := r.refresh(ctx); err != nil && r.ctx.Err() == nil {
			r.logger("consul: keeping registration alive failed", "id", r.reg.ID, "error", err)
		}
		cancel()
	}
}

// refresh updates the TTL check or, if the agent no longer knows the
// instance, registers it again.
func (r *Registrar) refresh(ctx context.Context) error {
	if err := r.takeSlot(ctx); err != nil {
		return err
	}
	defer func() { <-r.slot }()
	if r.ttl > 0 {
		r.mu.Lock()
		status := r.status
		r.mu.Unlock()
		if err := r.updateTTL(ctx, status); err == nil {
			return nil
		}
	} else {
		svc, _, err := r.client.Agent().Service(r.reg.ID, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil && svc != nil {
			return nil
		}
		var se api.StatusError
		if err != nil && !(errors.As(err, &se) && se.Code == 404) {
			return err
		}
	}
	r.mu.Lock()
	status := r.status
	r.mu.Unlock()
	return r.register(ctx, status)
}

// closeGrace bounds how long Close waits for a keep-alive request in flight
// (a TTL update, or a registration again) to be answered before it cancels
// it.
const closeGrace = 2 * time.Second

// Close stops keeping the instance registered and deregisters it. It first
// lets a keep-alive request in flight finish (bounded by 2 s): a
// registration again that Close cancelled could still reach the agent after
// the deregistration and bring the instance back with no Registrar left to
// remove it. The deregistration is bounded by 5 s; an agent that no longer
// knows the instance (404) has nothing to remove, which is no error. It waits
// for the goroutine. It is idempotent and safe to call from several
// goroutines at once: every call returns only after the one shutdown is
// complete (the instance deregistered, or the deregistration failed), and
// every call returns its error.
func (r *Registrar) Close() error {
	r.closeOnce.Do(func() {
		close(r.stop)
		done := make(chan struct{})
		go func() { r.wg.Wait(); close(done) }()
		grace := time.NewTimer(closeGrace)
		select {
		case <-done:
		case <-grace.C:
		}
		grace.Stop()
		r.cancel()
		<-done
		defer r.http.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := r.client.Agent().ServiceDeregisterOpts(r.reg.ID, (&api.QueryOptions{}).WithContext(ctx))
		var se api.StatusError
		if err != nil && !(errors.As(err, &se) && se.Code == http.StatusNotFound) {
			r.closeErr = fmt.Errorf("consul: deregister %q: %w", r.reg.ID, err)
		}
	})
	return r.closeErr
}
