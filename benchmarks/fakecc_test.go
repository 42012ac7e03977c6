package benchmarks

// A minimal stand-in for grpc-go's ClientConn, just enough to build a grpc
// balancer from the registry and get at the Picker it publishes. grpc's own
// fakes live in internal/testutils and cannot be imported.
//
// Like grpc's real ccBalancerWrapper, every call into the balancer (the
// resolver update and each SubConn state change) runs on one serializer
// goroutine, because grpc balancers such as base (used by go-zero's p2c_ewma)
// rely on never being called concurrently.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	estats "google.golang.org/grpc/experimental/stats"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// serializer runs scheduled funcs one at a time, in order, on its own
// goroutine. Its queue is unbounded so a running func may schedule more.
type serializer struct {
	mu   sync.Mutex
	q    []func()
	wake chan struct{}
	done chan struct{}
}

func newSerializer() *serializer {
	s := &serializer{wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *serializer) schedule(f func()) {
	s.mu.Lock()
	s.q = append(s.q, f)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *serializer) run() {
	for {
		s.mu.Lock()
		if len(s.q) == 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			}
		}
		f := s.q[0]
		s.q[0] = nil
		s.q = s.q[1:]
		s.mu.Unlock()
		f()
	}
}

func (s *serializer) stop() { close(s.done) }

// noopMetrics satisfies estats.MetricsRecorder; pick_first records
// connection metrics through it.
type noopMetrics struct{ estats.MetricsRecorder }

func (noopMetrics) RecordInt64Count(*estats.Int64CountHandle, int64, ...string)             {}
func (noopMetrics) RecordFloat64Count(*estats.Float64CountHandle, float64, ...string)       {}
func (noopMetrics) RecordInt64Histo(*estats.Int64HistoHandle, int64, ...string)             {}
func (noopMetrics) RecordFloat64Histo(*estats.Float64HistoHandle, float64, ...string)       {}
func (noopMetrics) RecordInt64Gauge(*estats.Int64GaugeHandle, int64, ...string)             {}
func (noopMetrics) RecordInt64UpDownCount(*estats.Int64UpDownCountHandle, int64, ...string) {}
func (noopMetrics) RegisterAsyncReporter(estats.AsyncMetricReporter, ...estats.AsyncMetric) func() {
	return func() {}
}

// fakeCC is the balancer.ClientConn handed to the balancer under test.
// The embedded nil interface satisfies grpc's embedding guard; every method
// a balancer actually calls is implemented below.
type fakeCC struct {
	balancer.ClientConn
	ser *serializer

	mu     sync.Mutex
	state  balancer.State
	newSCs int
}

// fakeSubConn reports CONNECTING then READY through the StateListener from
// NewSubConnOptions (grpc >= 1.58 style) as soon as the balancer asks it to
// connect (pick_first and base both call Connect right after NewSubConn), and
// reports healthy as soon as a health listener is registered (round_robin and
// least_request enable pick_first's health listener).
type fakeSubConn struct {
	balancer.SubConn
	cc       *fakeCC
	addr     string
	listener func(balancer.SubConnState)
	once     sync.Once
}

func (sc *fakeSubConn) String() string { return "fakeSubConn(" + sc.addr + ")" }

func (sc *fakeSubConn) Connect() {
	sc.once.Do(func() {
		sc.cc.ser.schedule(func() {
			sc.listener(balancer.SubConnState{ConnectivityState: connectivity.Connecting})
		})
		sc.cc.ser.schedule(func() {
			sc.listener(balancer.SubConnState{ConnectivityState: connectivity.Ready})
		})
	})
}

func (sc *fakeSubConn) RegisterHealthListener(l func(balancer.SubConnState)) {
	sc.cc.ser.schedule(func() { l(balancer.SubConnState{ConnectivityState: connectivity.Ready}) })
}

func (sc *fakeSubConn) UpdateAddresses([]resolver.Address) {}
func (sc *fakeSubConn) Shutdown()                          {}

func (cc *fakeCC) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	if opts.StateListener == nil {
		return nil, fmt.Errorf("fakeCC: NewSubConn without StateListener")
	}
	cc.mu.Lock()
	cc.newSCs++
	cc.mu.Unlock()
	return &fakeSubConn{cc: cc, addr: addrs[0].Addr, listener: opts.StateListener}, nil
}

func (cc *fakeCC) RemoveSubConn(balancer.SubConn)                       {}
func (cc *fakeCC) UpdateAddresses(balancer.SubConn, []resolver.Address) {}
func (cc *fakeCC) ResolveNow(resolver.ResolveNowOptions)                {}
func (cc *fakeCC) Target() string                                       { return "passthrough:///bench" }
func (cc *fakeCC) MetricsRecorder() estats.MetricsRecorder              { return noopMetrics{} }

func (cc *fakeCC) UpdateState(s balancer.State) {
	cc.mu.Lock()
	cc.state = s
	cc.mu.Unlock()
}

func (cc *fakeCC) current() balancer.State {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.state
}

// buildGRPCPicker builds the named balancer from grpc's registry, feeds it n
// addresses (as both Endpoints and Addresses, like grpc's ClientConn does),
// and waits until the published picker is READY and returns every one of the
// n SubConns. lbConfigJSON, if non-empty, goes through the builder's
// balancer.ConfigParser.
func buildGRPCPicker(tb testing.TB, name string, lbConfigJSON string, n int) balancer.Picker {
	tb.Helper()
	bb := balancer.Get(name)
	if bb == nil {
		tb.Fatalf("balancer %q is not registered", name)
	}
	var cfg serviceconfig.LoadBalancingConfig
	if lbConfigJSON != "" {
		p, ok := bb.(balancer.ConfigParser)
		if !ok {
			tb.Fatalf("balancer %q has no ConfigParser", name)
		}
		var err error
		if cfg, err = p.ParseConfig([]byte(lbConfigJSON)); err != nil {
			tb.Fatalf("ParseConfig(%s): %v", lbConfigJSON, err)
		}
	}

	cc := &fakeCC{ser: newSerializer()}
	tb.Cleanup(cc.ser.stop)
	var bal balancer.Balancer
	done := make(chan error, 1)
	cc.ser.schedule(func() {
		bal = bb.Build(cc, balancer.BuildOptions{})
		var st resolver.State
		for i := range n {
			a := resolver.Address{Addr: fmt.Sprintf("127.0.%d.%d:8080", i/250, i%250+1)}
			st.Addresses = append(st.Addresses, a)
			st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{a}})
		}
		done <- bal.UpdateClientConnState(balancer.ClientConnState{ResolverState: st, BalancerConfig: cfg})
	})
	if err := <-done; err != nil {
		tb.Fatalf("%s: UpdateClientConnState: %v", name, err)
	}
	tb.Cleanup(func() { cc.ser.schedule(bal.Close) })

	// Wait until the current picker is READY and spreads picks over all n
	// SubConns (the random pickers need a few n picks to hit all of them).
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := cc.current()
		if s.ConnectivityState == connectivity.Ready && s.Picker != nil {
			seen := make(map[balancer.SubConn]struct{}, n)
			var lastErr error
			for i := 0; i < 50*n && len(seen) < n; i++ {
				res, err := s.Picker.Pick(balancer.PickInfo{Ctx: ctx})
				if err != nil {
					lastErr = err
					break
				}
				if _, ok := res.SubConn.(*fakeSubConn); !ok {
					tb.Fatalf("%s: picker returned %T, want *fakeSubConn", name, res.SubConn)
				}
				seen[res.SubConn] = struct{}{}
				if res.Done != nil {
					res.Done(balancer.DoneInfo{})
				}
			}
			if lastErr == nil && len(seen) == n {
				cc.mu.Lock()
				nsc := cc.newSCs
				cc.mu.Unlock()
				if nsc != n {
					tb.Fatalf("%s: %d SubConns created for %d addresses", name, nsc, n)
				}
				return s.Picker
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s/n=%d: picker not ready with all SubConns after 30s (state %v)", name, n, s.ConnectivityState)
		}
		time.Sleep(time.Millisecond)
	}
}
