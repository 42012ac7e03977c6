package rpcclient

import (
	"context"
	"fmt"
	"net/rpc"
	"sort"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
	"github.com/dialtone-go/dialtone/internal/stats"
)

// BenchmarkCall compares Call with a bare *rpc.Client on the same loopback
// server, side by side: serial (latency at concurrency 1) and with 64
// concurrent callers (throughput).
//
//	go test -run='^$' -bench=Call -benchmem ./rpcclient/
func BenchmarkCall(b *testing.B) {
	srv := rpctest.Start(b)
	bare, err := rpc.Dial("tcp", srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Close()
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
			b.SetParallelism(32) // x GOMAXPROCS 2 = 64 callers
			b.RunParallel(func(pb *testing.PB) {
				var r rpctest.EchoReply
				for pb.Next() {
					if err := p.call(ctx, &r); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkFailover runs closed-loop load on three child-process backends,
// SIGKILLs one a third of the way in, and prints failures and latency before,
// during (the second after the kill) and after, with retries on and off, at
// 16 and 64 callers. Run it once:
//
//	go test -run='^$' -bench=Failover -benchtime=1x ./rpcclient/
func BenchmarkFailover(b *testing.B) {
	type row struct {
		retries           bool
		callers           int
		phase             string
		calls, fails      int
		p50, p99          time.Duration
		lastFailAfterKill time.Duration
	}
	var rows []row
	for _, retries := range []bool{true, false} {
		for _, callers := range []int{16, 64} {
			var addrs []string
			var kids []*rpctest.Child
			for range 3 {
				k := rpctest.StartChild(b, rpctest.WithChildHeartbeat())
				kids = append(kids, k)
				addrs = append(addrs, k.Addr())
			}
			opts := []Option{WithAttemptTimeout(500 * time.Millisecond)}
			if !retries {
				opts = append(opts, WithMaxAttempts(1))
			}
			c, w := newTestClient(b, addrs, opts...)
			const run = 3 * time.Second
			begin := time.Now()
			killed := make(chan time.Duration, 1)
			go func() {
				time.Sleep(run / 3)
				at := time.Since(begin) // the moment SIGKILL is sent
				kids[0].Kill()
				killed <- at
			}()
			out := runLoad(callers, 1<<20, run, func(ctx context.Context, _, _ int) error {
				var r rpctest.EchoReply
				return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "x"}, &r, Idempotent())
			})
			killAt := <-killed
			c.Close()
			w.Close()
			for _, k := range kids {
				k.Kill()
			}
			phases := []struct {
				name     string
				from, to time.Duration
			}{{"before", 0, killAt}, {"during", killAt, killAt + time.Second}, {"after", killAt + time.Second, run}}
			for _, ph := range phases {
				r := row{retries: retries, callers: callers, phase: ph.name}
				var lat []time.Duration
				for _, o := range out {
					if o.at < ph.from || o.at >= ph.to {
						continue
					}
					r.calls++
					lat = append(lat, o.latency)
					if o.err != nil {
						r.fails++
						if end := o.at + o.latency - killAt; end > r.lastFailAfterKill {
							r.lastFailAfterKill = end
						}
					}
				}
				r.p50, r.p99 = stats.Percentile(lat, 50), stats.Percentile(lat, 99)
				rows = append(rows, r)
			}
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].retries && !rows[j].retries })
	fmt.Printf("\n| retries | callers | phase  |  calls | failures |  p50 ms |  p99 ms | last failure after kill |\n")
	fmt.Printf("|---------|---------|--------|--------|----------|---------|---------|-------------------------|\n")
	for _, r := range rows {
		last := "-"
		if r.fails > 0 {
			last = fmt.Sprintf("%.1f ms", stats.Ms(r.lastFailAfterKill))
		}
		fmt.Printf("| %-7v | %7d | %-6s | %6d | %8d | %7.2f | %7.2f | %23s |\n", r.retries, r.callers, r.phase,
			r.calls, r.fails, stats.Ms(r.p50), stats.Ms(r.p99), last)
	}
	fmt.Println()
}
