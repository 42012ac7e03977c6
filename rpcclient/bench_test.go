package rpcclient

import (
	"context"
	"net/rpc"
	"testing"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/rpctest"
)

// BenchmarkCall compares Call with a bare *rpc.Client on the same loopback
// server, side by side: serial (latency at concurrency 1) and with 64
// concurrent callers (throughput). The failover run, with grpc-go beside
// dialtone, is benchmarks/failover_test.go.
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
