package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/rpcclient"

	_ "github.com/dialtone-go/dialtone/discovery/consul" // consul:// targets
	_ "github.com/dialtone-go/dialtone/discovery/etcd"   // etcd:// targets
)

// options are the demo's settings; see parseFlags for their meaning.
type options struct {
	backends    int
	workers     int
	duration    time.Duration
	short       bool
	consul      string
	chart       string
	maxFailures int

	// Not flags: the client's call policy.
	attemptTimeout time.Duration
	callTimeout    time.Duration
}

func defaultOptions() options {
	return options{
		backends:       4,
		workers:        8,
		duration:       25 * time.Second,
		chart:          "dialtone-demo.svg",
		attemptTimeout: 300 * time.Millisecond,
		callTimeout:    2 * time.Second,
	}
}

func (o options) validate() error {
	switch {
	case o.backends < 4:
		return fmt.Errorf("-backends %d: need at least 4 (one killed, one hung, one moved, one healthy)", o.backends)
	case o.backends > 64:
		return fmt.Errorf("-backends %d: at most 64", o.backends)
	case o.workers < 1 || o.workers > 256:
		return fmt.Errorf("-workers %d: want 1 to 256", o.workers)
	case o.duration < 5*time.Second:
		return fmt.Errorf("-duration %v: at least 5s (5 phases of 1 s)", o.duration)
	case o.duration > time.Hour:
		return fmt.Errorf("-duration %v: at most 1h", o.duration)
	case o.maxFailures < 0:
		return fmt.Errorf("-max-failures %d: must not be negative", o.maxFailures)
	case o.attemptTimeout <= 0 || o.callTimeout <= 0:
		return errors.New("attempt and call timeouts must be positive")
	}
	return nil
}

// phaseNames are the phases of the timeline, in order; each lasts
// duration/len(phaseNames).
var phaseNames = []string{"warmup", "kill", "hang", "move", "restore"}

// event is a fault injected by the timeline, for the chart.
type event struct {
	at    time.Duration // since the load started
	label string
}

// demo is one run: the registry, the backends, the client and the load.
type demo struct {
	opts     options
	reg      registry
	backends []*backend
	client   *rpcclient.Client
	view     *view
	phase    atomic.Int32 // index into phaseNames
	start    time.Time    // when the load started
	events   []event      // written by the timeline goroutine only
}

// run runs the whole demo and writes its output to stdout: it returns nil
// only if the failure budget held. Everything it starts is stopped before
// it returns, also on error or when ctx is cancelled.
func run(ctx context.Context, o options, stdout io.Writer) (err error) {
	if err := o.validate(); err != nil {
		return err
	}
	d := &demo{opts: o}
	d.view = newView(stdout, isTerminal(stdout), d)

	if o.consul != "" {
		d.reg, err = newConsulRegistry(ctx, o.consul)
	} else {
		d.view.logf("starting an embedded etcd on loopback")
		ignoreEtcdctlEnv(d.view.logf)
		d.reg, err = startEtcd(ctx)
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.reg.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("registry: %w", cerr)
		}
	}()

	// Backends: echo-1 stays healthy; echo-2 is killed, echo-3 hung, echo-4
	// moved. Latencies differ a little so that the latency-aware balancer
	// has something to see.
	defer d.stopBackends()
	for i := range o.backends {
		b := newBackend(fmt.Sprintf("echo-%d", i+1), time.Millisecond+time.Duration(i%4)*500*time.Microsecond)
		d.backends = append(d.backends, b)
		if err := d.listen(b); err != nil {
			return err
		}
		r, err := d.reg.Register(ctx, d.regID(b), b.Addr())
		if err != nil {
			return fmt.Errorf("register %s: %w", b.name, err)
		}
		b.setRegistration(r)
	}
	d.view.logf("%d echo backends registered (TTL %v)", o.backends, registrationTTL)

	// The watcher Dial builds logs to slog.Default() as it is at that
	// moment: point it at the view (warnings and errors) for Dial only.
	restoreLog := d.view.captureDefaultLogger()
	d.client, err = rpcclient.Dial(ctx, d.reg.Target(),
		rpcclient.WithAttemptTimeout(o.attemptTimeout),
		rpcclient.WithHeartbeat(500*time.Millisecond, 500*time.Millisecond),
		rpcclient.WithDialTimeout(time.Second),
		rpcclient.WithBalancer(
			// P2C over peak-EWMA latency, with its clock scaled down to
			// the demo's: a 1 s decay (default 10 s) and a probe of an
			// unpicked node after 500 ms (default 2 s), so that a node
			// that recovers wins its share back within a phase.
			balancer.WithPolicy(balancer.P2C(balancer.WithDecay(time.Second), balancer.WithProbeAfter(500*time.Millisecond))),
			// Short open periods and ejections, so that recovery fits in
			// the demo's phases.
			balancer.WithBreakers(breaker.Config{OpenTimeout: 500 * time.Millisecond, MaxOpenTimeout: time.Second}),
			balancer.WithOutlierDetection(balancer.OutlierConfig{BaseEjection: time.Second, MaxEjection: 2 * time.Second}),
			balancer.WithSlowStart(2*time.Second, 0.1),
			balancer.WithBreakerEvents(d.view.breakerEvent),
		),
	)
	restoreLog()
	if err != nil {
		return err
	}
	defer d.client.Close()
	d.view.logf("client: rpcclient.Dial(%q), attempt timeout %v, call deadline %v, %d workers",
		d.reg.Target(), o.attemptTimeout, o.callTimeout, o.workers)
	if err := d.waitForNodes(ctx, o.backends); err != nil {
		return err
	}

	d.start = time.Now()
	names := make([]string, len(d.backends))
	for i, b := range d.backends {
		names[i] = b.name
	}
	rec := newRecorder(d.start, names, d.phaseName)
	d.view.startLive(rec)
	ld := startLoad(ctx, d.client, o.workers, o.callTimeout, rec)
	terr := d.timeline(ctx)
	ld.stop()
	d.view.stopLive()
	if terr != nil {
		return terr
	}

	samples, failures := rec.snapshot()
	stats := phaseStats(samples, d.phaseLen())
	d.view.summary(stats, rec, failures)
	if o.chart != "" {
		svg := chartSVG(samples, d.events, d.phaseLen(), d.reg.Target())
		if err := os.WriteFile(o.chart, []byte(svg), 0o644); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		d.view.printf("chart: %s\n", o.chart)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	fails := rec.fails.Load()
	if fails > int64(o.maxFailures) {
		why := ""
		if len(failures) > 0 {
			why = fmt.Sprintf("; first at %.2fs (%s): %v", failures[0].at.Seconds(), failures[0].phase, failures[0].err)
		}
		d.view.printf("FAILURE BUDGET EXCEEDED: %d idempotent calls failed, budget %d\n", fails, o.maxFailures)
		return fmt.Errorf("failure budget exceeded: %d idempotent calls failed (-max-failures %d)%s", fails, o.maxFailures, why)
	}
	d.view.printf("failure budget held: %d idempotent calls failed of %d (-max-failures %d)\n",
		fails, rec.calls.Load(), o.maxFailures)
	return nil
}

// regID is the registration ID of a backend: its name, prefixed for Consul,
// where IDs share one agent with other services.
func (d *demo) regID(b *backend) string {
	if d.opts.consul != "" {
		return "dialtone-demo-" + b.name
	}
	return b.name
}

// nodeName turns a discovered endpoint ID back into a backend name.
func nodeName(id string) string { return strings.TrimPrefix(id, "dialtone-demo-") }

func (d *demo) phaseLen() time.Duration {
	return d.opts.duration / time.Duration(len(phaseNames))
}

func (d *demo) phaseName() string { return phaseNames[d.phase.Load()] }

// waitForNodes waits until the client's balancer lists n nodes, so that the
// warmup starts with the whole fleet.
func (d *demo) waitForNodes(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	bal := d.client.Balancer()
	for {
		upd := bal.Updated()
		if len(bal.Status()) >= n {
			return nil
		}
		select {
		case <-upd:
		case <-ctx.Done():
			return fmt.Errorf("discovery listed %d of %d backends: %w", len(bal.Status()), n, ctx.Err())
		}
	}
}

// stopBackends stops every backend, then removes its registration.
func (d *demo) stopBackends() {
	for _, b := range d.backends {
		b.hang.Open()
		b.stop()
		if r := b.setRegistration(nil); r != nil {
			if err := r.Close(); err != nil {
				d.view.logf("deregister %s: %v", b.name, err)
			}
		}
	}
}

// timeline runs the faults, one phase after the other, and returns when the
// last phase is over or ctx is done (nil then: the summary still prints).
func (d *demo) timeline(ctx context.Context) error {
	p := d.phaseLen()
	killed, hung, moved := d.backends[1], d.backends[2], d.backends[3]
	steps := []func(context.Context) error{
		func(context.Context) error {
			d.view.logf("warmup: %d backends healthy, %d workers calling Echo.Echo (idempotent)", len(d.backends), d.opts.workers)
			return nil
		},
		func(context.Context) error { return d.kill(killed) },
		func(context.Context) error { return d.hang(hung) },
		func(ctx context.Context) error { return d.move(ctx, moved) },
		func(ctx context.Context) error { return d.restore(ctx, killed, hung) },
	}
	for i, step := range steps {
		if !sleepUntil(ctx, d.start.Add(time.Duration(i)*p)) {
			return nil
		}
		d.phase.Store(int32(i))
		if err := step(ctx); err != nil {
			return err
		}
	}
	sleepUntil(ctx, d.start.Add(time.Duration(len(steps))*p))
	return nil
}

func (d *demo) mark(label string) {
	d.events = append(d.events, event{at: time.Since(d.start), label: label})
}

// kill crashes b: its listener and connections close at once, and its
// registration is no longer kept alive, so it lingers until the TTL ends.
func (d *demo) kill(b *backend) error {
	addr := b.Addr()
	b.stop()
	b.mu.Lock()
	r := b.reg
	b.mu.Unlock()
	r.Crash()
	d.mark("kill " + b.name)
	d.view.logf("FAULT kill %s (%s): listener and connections closed; its registration stays until the TTL (%v) runs out",
		b.name, addr, registrationTTL)
	return nil
}

// hang freezes b: it accepts connections but reads and writes nothing, so
// calls and heartbeats go unanswered.
func (d *demo) hang(b *backend) error {
	b.hang.Close()
	d.mark("hang " + b.name)
	d.view.logf("FAULT hang %s (%s): stops reading and writing; connections stay open", b.name, b.Addr())
	return nil
}

// move restarts b on a new port and registers it there.
func (d *demo) move(ctx context.Context, b *backend) error {
	from := b.Addr()
	b.stop()
	if r := b.setRegistration(nil); r != nil {
		if err := r.Close(); err != nil {
			d.view.logf("deregister %s: %v", b.name, err)
		}
	}
	if err := d.listen(b); err != nil {
		return err
	}
	r, err := d.reg.Register(ctx, d.regID(b), b.Addr())
	if err != nil {
		return fmt.Errorf("register %s again: %w", b.name, err)
	}
	b.setRegistration(r)
	d.mark("move " + b.name)
	d.view.logf("FAULT move %s: %s -> %s, registered again", b.name, from, b.Addr())
	return nil
}

// restore brings the killed backend back on a new port with a new
// registration, and lets the hung one answer again.
func (d *demo) restore(ctx context.Context, killed, hung *backend) error {
	if r := killed.setRegistration(nil); r != nil {
		r.Close() // the crashed registration: releases what is left of it
	}
	if err := d.listen(killed); err != nil {
		return err
	}
	r, err := d.reg.Register(ctx, d.regID(killed), killed.Addr())
	if err != nil {
		return fmt.Errorf("register %s again: %w", killed.name, err)
	}
	killed.setRegistration(r)
	hung.hang.Open()
	d.mark("restore " + killed.name + " + " + hung.name)
	d.view.logf("RESTORE %s revived on %s with a new registration; %s answers again", killed.name, killed.Addr(), hung.name)
	return nil
}

// listen starts b on a free loopback port.
func (d *demo) listen(b *backend) error {
	if err := b.listen("127.0.0.1:0"); err != nil {
		return err
	}
	d.view.noteAddr(b.Addr(), b.name)
	return nil
}

// sleepUntil waits until t and reports whether ctx is still live.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
