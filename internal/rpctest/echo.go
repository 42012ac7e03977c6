package rpctest

import (
	"errors"
	"net/rpc"
	"os"
	"strings"
	"sync"
	"time"
)

// Service and method names registered by every Server (in-process or child).
const (
	// EchoService is the name the Echo service is registered under: clients
	// call "Echo.Echo" and "Echo.Exec".
	EchoService = "Echo"
	// HeartbeatService is the name of the heartbeat service registered by
	// WithHeartbeat and WithChildHeartbeat: clients call "Dialtone.Ping".
	// The client library's server-side helper registers the same name and
	// method, so the two are interchangeable.
	HeartbeatService = "Dialtone"
)

// errStopped is returned by handlers interrupted by Server.Stop. The client
// never sees it: Stop closes the connection before the reply could be sent.
var errStopped = errors.New("rpctest: server stopped")

// EchoArgs are the arguments of "Echo.Echo". The zero value echoes an empty
// message at once.
type EchoArgs struct {
	// Msg is copied to EchoReply.Msg.
	Msg string
	// Sleep is how long the handler sleeps before answering. Zero means no
	// sleep. Only Server.Stop (or killing a child) interrupts it.
	Sleep time.Duration
	// Fail, if not empty, makes the handler return errors.New(Fail) after
	// the sleep: the client gets an rpc.ServerError with that text.
	Fail string
	// ReplyBytes, if positive, makes EchoReply.Payload a string of that many
	// bytes, for hostile huge replies. Zero means no payload.
	ReplyBytes int
}

// EchoReply is the reply of "Echo.Echo".
type EchoReply struct {
	// Msg is EchoArgs.Msg.
	Msg string
	// Server is the name of the server that answered (see WithName).
	Server string
	// Payload holds EchoArgs.ReplyBytes bytes of 'x', or is empty.
	Payload string
}

// ExecArgs are the arguments of "Echo.Exec", the non-idempotent operation.
// *ExecArgs implements the client library's idempotency-key interface
// (SetIdempotencyKey and IdempotencyKey).
type ExecArgs struct {
	// ID names the operation; tests count executions per ID. It must not
	// contain spaces or newlines.
	ID string
	// Key is the idempotency key, set by the client library through
	// SetIdempotencyKey. Empty means none. It is logged but the server does
	// not deduplicate on it: every call executes.
	Key string
	// Sleep is how long the handler sleeps before executing. Zero means no
	// sleep. A Stop during the sleep cancels the execution.
	Sleep time.Duration
}

// SetIdempotencyKey sets a.Key. The client library calls it before the first
// attempt of a call that carries an idempotency key.
func (a *ExecArgs) SetIdempotencyKey(k string) { a.Key = k }

// IdempotencyKey returns a.Key, empty if none was set.
func (a *ExecArgs) IdempotencyKey() string { return a.Key }

// ExecReply is the reply of "Echo.Exec".
type ExecReply struct {
	// Server is the name of the server that executed the call.
	Server string
}

// echoService is the receiver registered as "Echo". One is created per
// listening period of a Server, so that stop belongs to that period.
type echoService struct {
	srv  *Server
	stop <-chan struct{} // closed by Server.Stop
}

// Echo implements "Echo.Echo"; see EchoArgs.
func (e *echoService) Echo(args *EchoArgs, reply *EchoReply) error {
	e.srv.calls.Add(1)
	if err := e.sleep(args.Sleep); err != nil {
		return err
	}
	if err := e.srv.hang.Wait(e.stop); err != nil {
		return err
	}
	if args.Fail != "" {
		return errors.New(args.Fail)
	}
	reply.Msg = args.Msg
	reply.Server = e.srv.name
	if args.ReplyBytes > 0 {
		reply.Payload = strings.Repeat("x", args.ReplyBytes)
	}
	return nil
}

// Exec implements "Echo.Exec": it sleeps, then records the line "ID Key" in
// the server's execution log.
func (e *echoService) Exec(args *ExecArgs, reply *ExecReply) error {
	e.srv.calls.Add(1)
	if err := e.sleep(args.Sleep); err != nil {
		return err
	}
	if err := e.srv.hang.Wait(e.stop); err != nil {
		return err
	}
	if err := e.srv.execs.record(args.ID + " " + args.Key); err != nil {
		return err
	}
	reply.Server = e.srv.name
	return nil
}

// sleep waits d, or returns errStopped if the server is stopped first.
func (e *echoService) sleep(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-e.stop:
		return errStopped
	}
}

// heartbeat is the receiver registered as "Dialtone".
type heartbeat struct{}

// Ping implements "Dialtone.Ping": it answers args.
func (heartbeat) Ping(args int, reply *int) error {
	*reply = args
	return nil
}

// registerHeartbeat registers the heartbeat service on srv.
func registerHeartbeat(srv *rpc.Server) error {
	return srv.RegisterName(HeartbeatService, heartbeat{})
}

// execLog is a server's execution log: lines in memory and, when file is
// not nil, appended to a file with one write(2) per line so that they survive
// SIGKILL.
type execLog struct {
	mu    sync.Mutex
	lines []string
	file  *os.File // nil for in-process servers
}

func (l *execLog) record(line string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		if _, err := l.file.Write([]byte(line + "\n")); err != nil {
			return err
		}
	}
	l.lines = append(l.lines, line)
	return nil
}

func (l *execLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Duplicates counts, across the given execution logs (from Server.Executions
// and Child.Executions), the IDs executed more than once, and returns each
// such ID with its number of executions. An empty map means no duplicates.
// The idempotency key is ignored: two executions with the same ID are a
// duplicate whatever their keys.
func Duplicates(logs ...[]string) map[string]int {
	dups := make(map[string]int)
	for id, n := range Runs(logs...) {
		if n > 1 {
			dups[id] = n
		}
	}
	return dups
}

// Runs counts how many times each Exec ID ran across the given execution
// logs (Child.Executions or Server.Executions).
func Runs(logs ...[]string) map[string]int {
	count := make(map[string]int)
	for _, log := range logs {
		for _, line := range log {
			id, _, _ := strings.Cut(line, " ")
			count[id]++
		}
	}
	return count
}
