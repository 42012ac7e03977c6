package rpcclient

import (
	"context"
	"math"
	"math/rand/v2"
	"net/rpc"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// echoServer starts a loopback server with the Echo service and dials a
// bare *rpc.Client to it, the peer the Call benchmarks and the allocation
// test compare with; both are closed when t ends.
func echoServer(t testing.TB) (*rpctest.Server, *rpc.Client) {
	t.Helper()
	srv := rpctest.Start(t)
	bare, err := rpc.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bare.Close() })
	return srv, bare
}

// BenchmarkCall compares Call with a bare *rpc.Client on the same loopback
// server, side by side: serial (latency at concurrency 1) and with 64
// concurrent callers (throughput). The failover run, with grpc-go beside
// dialtone, is benchmarks/failover_test.go.
//
//	go test -run='^$' -bench=Call -benchmem ./rpcclient/
func BenchmarkCall(b *testing.B) {
	srv, bare := echoServer(b)
	args := &rpctest.EchoArgs{Msg: "hello"}
	peers := []struct {
		name string
		call func(ctx context.Context, r *rpctest.EchoReply) error
	}{
		{"netrpc", func(_ context.Context, r *rpctest.EchoReply) error { return bare.Call("Echo.Echo", args, r) }},
	}
	for _, v := range []struct {
		name string
		opts []Option
	}{
		{"dialtone", nil},
		{"dialtone-nobreakers", []Option{WithBalancer(balancer.WithoutBreakers())}},
	} {
		c, _ := newTestClient(b, []string{srv.Addr()}, v.opts...)
		peers = append(peers, struct {
			name string
			call func(ctx context.Context, r *rpctest.EchoReply) error
		}{v.name, func(ctx context.Context, r *rpctest.EchoReply) error {
			return c.Call(ctx, "Echo.Echo", args, r, Idempotent())
		}})
	}
	for _, p := range peers {
		b.Run("peer="+p.name+"/c=1", func(b *testing.B) {
			ctx := context.Background()
			var r rpctest.EchoReply
			b.ReportAllocs()
			for range b.N {
				if err := p.call(ctx, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("peer="+p.name+"/c=64", func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			// 64 callers whatever GOMAXPROCS (RunParallel starts
			// parallelism x GOMAXPROCS goroutines).
			b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				var r rpctest.EchoReply
				for pb.Next() {
					if err := p.call(ctx, &r); err != nil {
						b.Error(err) // not Fatal: this is not the benchmark's goroutine
						return
					}
				}
			})
		})
	}
}

// BenchmarkCallInterleaved measures latency at concurrency 1 with the
// clients taking turns call by call, so that drift on a shared machine
// (another tenant, CPU frequency, the GC) falls on all alike; BenchmarkCall
// runs them one after the other, seconds apart. The turns come in a new
// random order every round: a call is a little faster after a call on the
// same connection than after one on another, and a fixed order would hand
// that to some clients only. The clients are:
//   - netrpc: a bare *rpc.Client;
//   - transport: the connection Call uses, called directly (conn.do, which
//     makes net/rpc's call cancellable), with no pick, breaker, retry
//     wrapper or Done; it takes two turns per round, counted apart, and
//     their difference is the measurement's own noise floor;
//   - dialtone: Call;
//   - pick: the transport between the balancer's Pick and Done, without
//     the rest of Call, to tell the balancer's share of the path from the
//     client's;
//   - lookup: the transport after Call's lookup of the picked address's
//     endpoint (a hint, or a map read), to tell that share apart too;
//   - spin: the transport after 100 ns of busy work, a control that shows
//     what any 100 ns spent before a call costs in latency on this
//     machine (work before a call shifts when the request reaches a server
//     goroutine that may have gone to sleep, and runs on caches the last
//     round trip left cold, so it costs more than its own time).
//
// It reports the mean time of net/rpc, transport and dialtone, Call's ratios
// to net/rpc (of the means and of the medians), and the success path's
// share of a loopback call, path-%: the median, over the rounds, of
// dialtone's time minus transport's time in the same round, over net/rpc's
// median time. pick-%, lookup-% and spin-% are the same for those clients,
// and floor-% for transport', the measurement's noise floor.
//
// Why the median of the rounds' differences and not the difference of the
// medians: a loopback call's time has several modes (18 us when the
// server's goroutine is still running, 25 us, 35 us and more when it must
// be woken), and the median falls between them, where a small change in
// how often each mode comes moves it by hundreds of nanoseconds. The
// difference of the medians (path-dm-%, floor-dm-%, also reported) swung
// between -1.2 % and +1.1 % of a call between runs for two identical
// clients; the median of the differences stays within 0.05 %.
//
// What the median of the differences misses: it measures a shift of the
// times within a mode, and work that moves some calls into a slower mode
// (a server goroutine that went to sleep meanwhile) shows in the mean but
// hardly in it. path-wm-% is the mean of the rounds' differences with each
// time first capped at twice transport's median, which keeps the modes'
// mix and drops the far tail's noise, and path-wm-se-% its standard error;
// floor-wm-% is the same for transport'. The path's cost is between the
// two figures.
//
//	go test -run='^$' -bench=CallInterleaved -benchtime=20000x ./rpcclient/
func BenchmarkCallInterleaved(b *testing.B) {
	srv, bare := echoServer(b)
	c, _ := newTestClient(b, []string{srv.Addr()})
	args := &rpctest.EchoArgs{Msg: "hello"}
	ctx := context.Background()
	var r rpctest.EchoReply
	if err := c.Call(ctx, "Echo.Echo", args, &r); err != nil { // connect
		b.Fatal(err)
	}
	ep := c.endpoint(srv.Addr())
	res, err := c.bal.Pick(ctx)
	if err != nil {
		b.Fatal(err)
	}
	res.Done(nil)
	addr := res.Endpoint.Addr // the string Call looks up: discovery's, not srv.Addr()'s
	transport := func(r *rpctest.EchoReply) error {
		cn, err := ep.get(ctx)
		if err != nil {
			return err
		}
		return cn.do(ctx, "Echo.Echo", args, r)
	}
	const netrpc, direct, direct2, dialtone, picked, looked, spun = 0, 1, 2, 3, 4, 5, 6
	calls := [...]func(r *rpctest.EchoReply) error{
		netrpc:   func(r *rpctest.EchoReply) error { return bare.Call("Echo.Echo", args, r) },
		direct:   transport,
		direct2:  transport,
		dialtone: func(r *rpctest.EchoReply) error { return c.Call(ctx, "Echo.Echo", args, r, Idempotent()) },
		picked: func(r *rpctest.EchoReply) error {
			res, err := c.bal.Pick(ctx)
			if err != nil {
				return err
			}
			err = transport(r)
			res.Done(err)
			return err
		},
		looked: func(r *rpctest.EchoReply) error {
			if c.endpoint(addr) != ep {
				b.Fatal("the lookup found another endpoint")
			}
			return transport(r)
		},
		spun: func(r *rpctest.EchoReply) error {
			for t0 := time.Now(); time.Since(t0) < 100*time.Nanosecond; {
			}
			return transport(r)
		},
	}
	var took [len(calls)][]time.Duration
	for i := range took {
		took[i] = make([]time.Duration, 0, b.N)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	order := []int{netrpc, direct, direct2, dialtone, picked, looked, spun}
	b.ResetTimer()
	for range b.N {
		rnd.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, who := range order {
			start := time.Now()
			if err := calls[who](&r); err != nil {
				b.Fatal(err)
			}
			took[who] = append(took[who], time.Since(start))
		}
	}
	b.StopTimer()
	// over is the median over the rounds of who's time minus transport's
	// in the same round, and wm and se the mean of those differences with
	// every time capped at twice transport's median, and its standard
	// error; all before the sorts below reorder took.
	var over, wm, se [len(calls)]float64
	limit := 2 * median(slices.Clone(took[direct]))
	diff := make([]time.Duration, len(took[direct]))
	for who := range took {
		var sum, sq float64
		for i, d := range took[who] {
			diff[i] = d - took[direct][i]
			x := float64(min(d, limit) - min(took[direct][i], limit))
			sum += x
			sq += x * x
		}
		n := float64(len(diff))
		wm[who] = sum / n
		se[who] = math.Sqrt((sq/n - wm[who]*wm[who]) / (n - 1))
		over[who] = float64(median(diff))
	}
	var mean, med [len(calls)]float64
	for i := range took {
		var sum time.Duration
		for _, d := range took[i] {
			sum += d
		}
		mean[i] = float64(sum) / float64(len(took[i]))
		med[i] = float64(median(took[i]))
	}
	b.ReportMetric(mean[netrpc], "netrpc-ns/call")
	b.ReportMetric(mean[direct], "transport-ns/call")
	b.ReportMetric(mean[dialtone], "dialtone-ns/call")
	b.ReportMetric(mean[dialtone]/mean[netrpc], "x-mean")
	b.ReportMetric(med[dialtone]/med[netrpc], "x-median")
	b.ReportMetric(100*over[dialtone]/med[netrpc], "path-%")
	b.ReportMetric(100*over[direct2]/med[netrpc], "floor-%")
	b.ReportMetric(100*over[picked]/med[netrpc], "pick-%")
	b.ReportMetric(100*over[looked]/med[netrpc], "lookup-%")
	b.ReportMetric(100*over[spun]/med[netrpc], "spin-%")
	b.ReportMetric(100*wm[dialtone]/med[netrpc], "path-wm-%")
	b.ReportMetric(100*se[dialtone]/med[netrpc], "path-wm-se-%")
	b.ReportMetric(100*wm[direct2]/med[netrpc], "floor-wm-%")
	b.ReportMetric(100*(med[dialtone]-med[direct])/med[netrpc], "path-dm-%")
	b.ReportMetric(100*(med[direct2]-med[direct])/med[netrpc], "floor-dm-%")
	b.ReportMetric(0, "ns/op") // seven calls per op; the metrics above say more
}

// median sorts ds and returns its middle value.
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
