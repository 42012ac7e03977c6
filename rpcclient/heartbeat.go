package rpcclient

import "net/rpc"

// Heartbeat is the server side of the connection heartbeat. Register it on a
// net/rpc server with RegisterHeartbeat.
type Heartbeat struct{}

// Ping answers a client's heartbeat: it echoes args. net/rpc runs it on its
// own goroutine, so a server busy with slow calls still answers, while a
// hung process (SIGSTOP, a stuck runtime) does not.
func (Heartbeat) Ping(args int, reply *int) error {
	*reply = args
	return nil
}

// RegisterHeartbeat installs the heartbeat on a net/rpc server, under the
// name "Dialtone". It is the one line a server adds so that dialtone clients
// can tell a hung server from a slow call:
//
//	rpcclient.RegisterHeartbeat(rpc.DefaultServer)
func RegisterHeartbeat(s *rpc.Server) error { return s.RegisterName(HeartbeatService, Heartbeat{}) }
