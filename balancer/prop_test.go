package balancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/rpc"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/discovery/discoverytest"
	"go.uber.org/goleak"
)

// recWatcher wraps a discoverytest.Watcher, records every State the
// balancer receives by Version, and may hand it on with one address listed
// twice (a Watcher that does not Sanitize).
type recWatcher struct {
	*discoverytest.Watcher
	mu     sync.Mutex
	states map[uint64]discovery.State
	dup    atomic.Bool
	rng    *rand.Rand // under mu
}

func (w *recWatcher) Next(ctx context.Context) (discovery.State, error) {
	s, err := w.Watcher.Next(ctx)
	if err != nil {
		return s, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dup.Load() && len(s.Endpoints) > 0 {
		i := w.rng.IntN(len(s.Endpoints))
		eps := append([]discovery.Endpoint(nil), s.Endpoints[:i+1]...)
		d := s.Endpoints[i]
		if w.rng.IntN(2) == 0 {
			d.ID += "-dup" // same address under another ID
		}
		d.Weight = 1 + w.rng.IntN(5)
		eps = append(eps, d)
		eps = append(eps, s.Endpoints[i+1:]...)
		s.Endpoints = eps
	}
	w.states[s.Version] = s
	return s, nil
}

// listedSince reports whether some State of Version v or later lists addr.
func (w *recWatcher) listedSince(v uint64, addr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ver, s := range w.states {
		if ver < v {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Addr == addr {
				return true
			}
		}
	}
	return false
}

type propCfg struct {
	policy   Policy
	breakers bool
	closeAt  time.Duration // 0: no Close during churn
	dup      bool
	slow     bool
	panicT   float64
}

func (c propCfg) String() string {
	return fmt.Sprintf("%s/breakers=%v/close=%v/dup=%v/slow=%v/panic=%v", c.policy.Name(), c.breakers, c.closeAt, c.dup, c.slow, c.panicT)
}

const (
	propOpen   = 20 * time.Millisecond
	propEject  = 15 * time.Millisecond
	propMaxEj  = 40 * time.Millisecond
	propQuar   = 25 * time.Millisecond
	propChurn  = 250 * time.Millisecond
	propPool   = 10
	propPicker = 4
)

var errTransport = &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}

// TestPropChurn drives Balancers of every policy through randomized
// discovery churn, concurrent picks with random outcomes, quarantines and
// Close, and checks the balancer's invariants. PROP_SEEDS sets how many
// seeds run (default 6), PROP_SEED runs one.
func TestPropChurn(t *testing.T) {
	seeds := 6
	if s := os.Getenv("PROP_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	first := uint64(1)
	if s := os.Getenv("PROP_SEED"); s != "" {
		v, _ := strconv.ParseUint(s, 10, 64)
		first, seeds = v, 1
	}
	for seed := first; seed < first+uint64(seeds); seed++ {
		rng := rand.New(rand.NewPCG(seed, 42))
		policies := []Policy{RoundRobin(), Random(), WeightedRoundRobin(), P2C(WithProbeAfter(30 * time.Millisecond)), Maglev(1.25)}
		cfg := propCfg{
			policy:   policies[seed%5],
			breakers: seed/5%2 == 0,
			dup:      rng.IntN(3) == 0,
			slow:     rng.IntN(2) == 0,
			panicT:   []float64{0, 0.5, 1}[rng.IntN(3)],
		}
		if rng.IntN(3) == 0 {
			cfg.closeAt = time.Duration(rng.IntN(int(propChurn)))
		}
		t.Run(fmt.Sprintf("seed=%d/%v", seed, cfg), func(t *testing.T) {
			propRun(t, seed, cfg)
		})
	}
}

func propAddr(i int) string { return fmt.Sprintf("10.9.0.%d:80", i+1) }

func propRun(t *testing.T, seed uint64, cfg propCfg) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rng := rand.New(rand.NewPCG(seed, 7))
	w := &recWatcher{Watcher: discoverytest.New(), states: map[uint64]discovery.State{}, rng: rand.New(rand.NewPCG(seed, 9))}
	w.dup.Store(cfg.dup)
	opts := []Option{
		WithService("prop"), WithPolicy(cfg.policy), WithPanicThreshold(cfg.panicT),
		WithOutlierDetection(OutlierConfig{ConsecutiveFailures: 3, Interval: 5 * time.Millisecond,
			BaseEjection: propEject, MaxEjection: propMaxEj, MaxEjectedShare: 0.3}),
	}
	if cfg.slow {
		opts = append(opts, WithSlowStart(30*time.Millisecond, 0.1))
	} else {
		opts = append(opts, WithSlowStart(0, 0))
	}
	if cfg.breakers {
		opts = append(opts, WithBreakers(breaker.Config{ConsecutiveFailures: 3, OpenTimeout: propOpen,
			MaxOpenTimeout: 2 * propOpen, Window: 50 * time.Millisecond, MinRequests: 10}))
	} else {
		opts = append(opts, WithoutBreakers())
	}
	var ejections, trips atomic.Int64
	opts = append(opts, WithLogger(slog.New(countHandler{&ejections})),
		WithBreakerEvents(func(e breaker.Event) {
			if e.To == breaker.Open {
				trips.Add(1)
			}
		}))
	b := New(w, opts...)

	// Every node the balancer ever had, for the in-flight counts.
	var nmu sync.Mutex
	allNodes := map[*node]bool{}
	collect := func() {
		s := b.set.Load()
		nmu.Lock()
		for _, n := range s.nodes {
			allNodes[n] = true
		}
		nmu.Unlock()
	}

	var failures sync.Mutex
	var fails []string
	fail := func(format string, args ...any) {
		failures.Lock()
		if len(fails) < 20 {
			fails = append(fails, fmt.Sprintf(format, args...))
		}
		failures.Unlock()
	}

	stop := make(chan struct{})
	var healthy atomic.Bool // outcomes are all successes
	var closed atomic.Bool
	var wg sync.WaitGroup

	// Invariant checker: ejection bookkeeping.
	checkEjections := func(where string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		now := mono()
		active := 0
		for _, n := range b.nodes {
			if n.ejectedUntil > now {
				active++
			}
		}
		if c := b.opts.outlier.maxEjected(len(b.nodes)); active > c && len(b.nodes) > 0 {
			fail("%s: %d nodes ejected of %d, cap %d", where, active, len(b.nodes), c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			collect()
			checkEjections("churn")
		}
	}()

	// Pickers.
	var doneWG sync.WaitGroup
	var picks, okPicks atomic.Int64
	for g := range propPicker {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(100+g)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				var po []PickOption
				if r.IntN(3) == 0 {
					po = append(po, Exclude(propAddr(r.IntN(propPool)), propAddr(r.IntN(propPool))))
				}
				if r.IntN(2) == 0 {
					po = append(po, HashKey(strconv.Itoa(r.IntN(20))))
				}
				v0 := b.StateVersion()
				p0 := b.picker.Load()
				res, err := b.Pick(context.Background(), po...)
				p1 := b.picker.Load()
				picks.Add(1)
				if err != nil {
					var e *Error
					if !errors.As(err, &e) {
						fail("Pick error %T %v is not an *Error", err, err)
					} else if e.Kind == ErrClosed && !closed.Load() {
						fail("ErrClosed before Close")
					}
					time.Sleep(50 * time.Microsecond)
					continue
				}
				okPicks.Add(1)
				if !cfg.breakers && p0 == p1 && len(po) > 0 && po[0].exclude != nil {
					ex := po[0].exclude
					isEx := func(a string) bool { return a == ex[0] || a == ex[1] }
					if isEx(res.Endpoint.Addr) {
						for _, e := range p0.ready {
							if a := p0.nodes[e.idx].addr; !isEx(a) {
								fail("picked excluded %s while %s was ready (picker unchanged)", res.Endpoint.Addr, a)
								break
							}
						}
					}
				}
				if !w.listedSince(v0, res.Endpoint.Addr) {
					fail("picked %s, listed by no State since version %d", res.Endpoint.Addr, v0)
				}
				var out error
				if !healthy.Load() {
					switch r.IntN(10) {
					case 0, 1, 2:
						out = errTransport
					case 3:
						out = rpc.ServerError("app")
					case 4:
						out = context.Canceled
					}
				}
				if r.IntN(4) == 0 {
					doneWG.Add(1)
					time.AfterFunc(time.Duration(r.IntN(3000))*time.Microsecond, func() { res.Done(out); doneWG.Done() })
				} else {
					res.Done(out)
				}
				if r.IntN(50) == 0 {
					time.Sleep(100 * time.Microsecond)
				}
			}
		}()
	}

	// Churn.
	randEps := func() []discovery.Endpoint {
		var eps []discovery.Endpoint
		for i := range propPool {
			if rng.IntN(3) == 0 {
				continue
			}
			e := discovery.Endpoint{ID: fmt.Sprintf("id-%d", i), Addr: propAddr(i), Weight: 1 + rng.IntN(4)}
			if rng.IntN(4) == 0 {
				e.Health = discovery.Degraded
			}
			eps = append(eps, e)
		}
		switch rng.IntN(4) {
		case 0:
			eps = append(eps, discovery.Endpoint{ID: "bad", Addr: "not an address"})
		case 1:
			if len(eps) > 0 {
				d := eps[rng.IntN(len(eps))]
				d.ID += "-again" // duplicated address: Sanitize drops it
				eps = append(eps, d)
			}
		}
		return eps
	}
	w.Set(randEps()...)
	start := time.Now()
	closeDone := make(chan struct{})
	if cfg.closeAt > 0 {
		go func() {
			defer close(closeDone)
			time.Sleep(cfg.closeAt)
			closed.Store(true)
			b.Close()
		}()
	} else {
		close(closeDone)
	}
	for time.Since(start) < propChurn {
		switch rng.IntN(10) {
		case 0, 1, 2, 3:
			w.Set(randEps()...)
		case 4:
			w.SetError(errors.New("registry down"))
		case 5:
			drop := propAddr(rng.IntN(propPool))
			w.SetErrorKeeping(errors.New("all invalid"), func(e discovery.Endpoint) bool { return e.Addr != drop })
		case 6, 7:
			d := []time.Duration{0, propQuar / 2, propQuar}[rng.IntN(3)]
			b.Quarantine(propAddr(rng.IntN(propPool)), d)
		default:
			w.Set() // everything leaves
			w.Set(randEps()...)
		}
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
	}
	<-closeDone

	if !closed.Load() {
		// Recovery: one final set, every outcome a success. Every node
		// must come back within its open, ejection and quarantine times.
		w.dup.Store(false)
		var final []discovery.Endpoint
		for i := range propPool {
			if i == 0 || rng.IntN(3) != 0 {
				final = append(final, discovery.Endpoint{ID: fmt.Sprintf("id-%d", i), Addr: propAddr(i), Weight: 1})
			}
		}
		w.Set(final...)
		healthy.Store(true)
		recoverStart := time.Now()
		defer func() { t.Logf("recovered in %v", time.Since(recoverStart)) }()
		deadline := time.Now().Add(propMaxEj + 3*propOpen + propQuar + 2*30*time.Millisecond + 100*time.Millisecond)
		for {
			p := b.picker.Load()
			st := b.Status()
			all := len(st) == len(final) && !p.panic && len(p.ready) == len(final)
			for _, s := range st {
				if !s.Ready || s.Breaker != breaker.Closed || s.Ejected || s.Quarantined {
					all = false
				}
			}
			if all {
				break
			}
			if time.Now().After(deadline) {
				var why []string
				for _, s := range st {
					why = append(why, fmt.Sprintf("%s ready=%v brk=%v ej=%v q=%v", s.Endpoint.Addr, s.Ready, s.Breaker, s.Ejected, s.Quarantined))
				}
				fail("nodes did not all come back: ready %d of %d, panic %v: %v", len(p.ready), len(final), p.panic, why)
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	doneWG.Wait()
	collect()
	checkEjections("end")

	if !closed.Load() {
		// Status agrees with Pick: every Ready node is picked, nothing else.
		ready := map[string]bool{}
		for _, s := range b.Status() {
			if s.Ready {
				ready[s.Endpoint.Addr] = true
			}
			if (s.Ejected || s.Quarantined || s.Breaker == breaker.Open) && s.Ready && !b.picker.Load().panic {
				fail("Status: %s ready but ejected=%v quarantined=%v breaker=%v", s.Endpoint.Addr, s.Ejected, s.Quarantined, s.Breaker)
			}
		}
		got := map[string]bool{}
		for range 2000 {
			r, err := b.Pick(context.Background())
			if err != nil {
				fail("final Pick: %v", err)
				break
			}
			got[r.Endpoint.Addr] = true
			r.Done(nil)
		}
		for a := range got {
			if !ready[a] {
				fail("picked %s, which Status says is not ready", a)
			}
		}
		if cfg.policy.Name() != "p2c_peak_ewma" { // P2C never picks its costliest node
			for a := range ready {
				if !got[a] {
					fail("Status says %s is ready, 2000 picks never chose it", a)
				}
			}
		}
		// Breakers of addresses gone are dropped: with a breaker made
		// for every current node, the Set holds exactly those.
		if b.breakers != nil {
			b.mu.Lock()
			for _, n := range b.nodes {
				n.breaker()
			}
			if got, want := b.breakers.Len(), len(b.nodes); got != want {
				fail("breaker Set holds %d breakers, %d nodes", got, want)
			}
			b.mu.Unlock()
		}
	}
	b.Close()
	w.Close()
	if _, err := b.Pick(context.Background()); !errors.Is(err, ErrClosed) {
		fail("Pick after Close: %v", err)
	}
	nmu.Lock()
	for n := range allNodes {
		if v := n.inflight.Load(); v != 0 {
			fail("node %s (%p) in flight %d after every Done", n.addr, n, v)
		}
	}
	nmu.Unlock()
	if v := b.inflight.Load(); v != 0 {
		fail("balancer in flight %d after every Done", v)
	}
	t.Logf("picks %d, successful %d, nodes seen %d, ejections %d, trips %d", picks.Load(), okPicks.Load(), len(allNodes), ejections.Load(), trips.Load())
	for _, f := range fails {
		t.Error(f)
	}
}

type countHandler struct{ n *atomic.Int64 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "balancer: node ejected" {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }
