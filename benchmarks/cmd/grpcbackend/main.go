// Command grpcbackend is the gRPC backend that BenchmarkFailover starts
// three of and SIGKILLs one of, for grpc-go's side of the comparison: it
// serves grpc.health.v1 on 127.0.0.1:0, prints "LISTENING addr" on stdout,
// and exits when its stdin closes. It is a program of its own for the
// reason cmd/rpcbackend is: the kernel closes a killed process's sockets
// only after tearing down its memory, so both clients' victims must be
// small, and alike.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcbackend:", err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(l)
	fmt.Printf("LISTENING %s\n", l.Addr())
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent goes away
	os.Exit(0)
}
