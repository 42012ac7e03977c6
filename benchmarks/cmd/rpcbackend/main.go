// Command rpcbackend is the net/rpc backend that BenchmarkFailover starts
// three of and SIGKILLs one of: rpctest's child server (the Echo service
// and the heartbeat) in a program of its own. The benchmark builds it
// (go build) and runs it through rpctest.StartChild with
// rpctest.WithChildBinary. A small program dies fast: the kernel closes a
// killed process's sockets only after tearing down its memory, which took
// 2-6 ms for the benchmark's own test binary (48 MB resident) under load.
//
// Run by hand, it only says how it is meant to be run.
package main

import (
	"fmt"
	"os"

	"github.com/dialtone-go/dialtone/internal/rpctest"
)

func main() {
	rpctest.RunChildIfRequested() // never returns when started by StartChild
	fmt.Fprintf(os.Stderr, "rpcbackend: started by BenchmarkFailover through rpctest.StartChild, which sets %s\n", rpctest.ChildEnv)
	os.Exit(2)
}
