// Package rpctest runs real net/rpc backends (standard library net/rpc, gob
// codec) on 127.0.0.1 and injects faults into them, for the integration tests
// of an RPC client that retries, fails over and detects hung peers.
//
// Four tools, one per file:
//
//   - Start runs an in-process Server with the Echo service (echo.go). Stop
//     kills every connection, Restart brings it back (same or new port), Hang
//     freezes it while its TCP connections stay open.
//   - StartChild runs the same Server in a child process (the test binary
//     re-executed), so a test can SIGKILL, SIGSTOP and SIGCONT a backend, or
//     stop and restart its server on the same port while the process runs
//     (StopServer, StartServer); Accepts gives the child's accept times. The
//     using package's TestMain must call RunChildIfRequested first.
//   - Blackhole returns an address whose TCP handshakes never complete.
//   - NewProxy puts a TCP proxy in front of a backend that can reset
//     connections, drop responses or delay them.
//
// Everything is cleaned up by t.Cleanup and leaves no goroutine behind, so
// tests can use goleak.VerifyTestMain:
//
//	func TestMain(m *testing.M) {
//		rpctest.RunChildIfRequested()
//		goleak.VerifyTestMain(m)
//	}
//
//	srv := rpctest.Start(t, rpctest.WithName("a"), rpctest.WithHeartbeat())
//	cli, _ := rpc.Dial("tcp", srv.Addr())
//	var reply rpctest.EchoReply
//	err := cli.Call("Echo.Echo", &rpctest.EchoArgs{Msg: "hi"}, &reply)
//
// Exec is the non-idempotent operation: every execution is logged (in memory,
// and for a child in a file that survives SIGKILL), and Duplicates counts the
// IDs that were executed more than once across servers.
package rpctest
