package rpctest

import (
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/hang"
)

// Option configures a Server started by Start.
type Option func(*options)

type options struct {
	name      string
	addr      string
	heartbeat bool
	register  []func(*rpc.Server) error
}

// WithName sets the server's name, returned in EchoReply.Server and
// ExecReply.Server. The default is the listening address of the first Start.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithAddr makes the server listen on addr (host:port) instead of the
// default 127.0.0.1:0 (a free port).
func WithAddr(addr string) Option { return func(o *options) { o.addr = addr } }

// WithHeartbeat also registers the heartbeat service "Dialtone" with method
// Ping(args int, reply *int) error, which sets *reply = args. Off by default.
func WithHeartbeat() Option { return func(o *options) { o.heartbeat = true } }

// WithRegister calls register on the server's new rpc.Server, after Echo is
// registered, on Start and on every Restart. Tests use it to register extra
// services; an error fails the test.
func WithRegister(register func(*rpc.Server) error) Option {
	return func(o *options) { o.register = append(o.register, register) }
}

// Server is a net/rpc server on 127.0.0.1 serving the Echo service. Its
// methods are safe for concurrent use from any goroutine.
type Server struct {
	name  string
	opts  options
	calls atomic.Int64 // Echo.Echo and Echo.Exec requests, across restarts
	execs execLog
	hang  hang.Gate

	mu      sync.Mutex
	addr    string
	accepts []time.Time
	run     *run     // nil while stopped
	events  *os.File // a child's event log (see logEvent); nil in-process
}

// run is one listening period of a Server, from listen to Stop.
type run struct {
	lis  net.Listener
	rpc  *rpc.Server
	stop chan struct{} // closed by Stop: unblocks sleeping and hung handlers
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Start runs a Server on 127.0.0.1:0 (or the WithAddr address) and returns
// once it accepts connections; a listen or register error fails t. t.Cleanup
// stops it. Call it from the test goroutine.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := newServer(opts...)
	addr := s.opts.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if err := s.listen(addr); err != nil {
		t.Fatalf("rpctest: start: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func newServer(opts ...Option) *Server {
	s := &Server{}
	for _, o := range opts {
		o(&s.opts)
	}
	s.name = s.opts.name
	return s
}

// listen starts a new listening period on addr.
func (s *Server) listen(addr string) error {
	srv := rpc.NewServer()
	r := &run{rpc: srv, stop: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	if err := srv.RegisterName(EchoService, &echoService{srv: s, stop: r.stop}); err != nil {
		return err
	}
	if s.opts.heartbeat {
		if err := registerHeartbeat(srv); err != nil {
			return err
		}
	}
	for _, register := range s.opts.register {
		if err := register(srv); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	r.lis = lis
	s.mu.Lock()
	s.addr = lis.Addr().String()
	if s.name == "" {
		s.name = s.addr
	}
	s.run = r
	s.logEvent(eventListen, time.Now())
	s.mu.Unlock()
	r.wg.Add(1)
	go s.serve(r)
	return nil
}

// Event kinds of a child's event log.
const (
	eventListen = "listen"
	eventAccept = "accept"
	eventStop   = "stop"
)

// logEvent appends "kind unixnano" to the event log, if any, with one
// write(2), so that the parent can read it while the child runs. Called
// with s.mu held.
func (s *Server) logEvent(kind string, at time.Time) {
	if s.events == nil {
		return
	}
	s.events.Write([]byte(kind + " " + strconv.FormatInt(at.UnixNano(), 10) + "\n"))
}

// serve accepts connections until r.lis is closed, and serves each with
// ServeConn in its own goroutine.
func (s *Server) serve(r *run) {
	defer r.wg.Done()
	for {
		c, err := r.lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like during a reconnect storm: retry shortly.
			select {
			case <-r.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		now := time.Now()
		s.mu.Lock()
		s.accepts = append(s.accepts, now)
		s.logEvent(eventAccept, now)
		s.mu.Unlock()
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns[c] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go func() {
			defer r.wg.Done()
			r.rpc.ServeConn(hang.Conn(c, &s.hang, r.stop))
			r.mu.Lock()
			delete(r.conns, c)
			r.mu.Unlock()
		}()
	}
}

// Addr returns the address the server listens on (or last listened on, if
// stopped), as host:port. It changes after Restart(t, false).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Name returns the server's name (WithName; default: its first address).
func (s *Server) Name() string { return s.name }

// Calls returns how many Echo.Echo and Echo.Exec requests reached a handler
// since Start, across restarts, including those that failed or were
// interrupted. Heartbeats and WithRegister services are not counted.
func (s *Server) Calls() int64 { return s.calls.Load() }

// Executions returns a copy of the execution log: one "ID Key" line per
// completed Echo.Exec since Start, across restarts, in execution order. Key
// may be empty, so the line may end with a space.
func (s *Server) Executions() []string { return s.execs.snapshot() }

// Accepts returns the times at which the server accepted connections since
// Start, across restarts, oldest first (for reconnect-storm figures).
func (s *Server) Accepts() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.accepts...)
}

// Stop closes the listener and every connection at once (clients see EOF:
// pending calls fail with io.ErrUnexpectedEOF, later ones with
// rpc.ErrShutdown), interrupts sleeping and hung handlers without executing
// them, and waits until all the server's goroutines have exited. New dials are
// refused. Stop is idempotent; t.Cleanup calls it.
func (s *Server) Stop() {
	s.mu.Lock()
	r := s.run
	s.run = nil
	s.mu.Unlock()
	if r == nil {
		return
	}
	// Close the connections before waking the handlers, so that the error
	// replies of interrupted handlers cannot be sent.
	r.lis.Close()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	close(r.stop)
	r.wg.Wait()
	s.mu.Lock()
	s.logEvent(eventStop, time.Now())
	s.mu.Unlock()
}

// stopped reports whether the server is stopped.
func (s *Server) stopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run == nil
}

// Restart stops the server if it runs, then listens again with a new
// rpc.Server: on the same address if samePort, otherwise on 127.0.0.1:0 (a
// new free port, so Addr changes). Calls, executions, accept times and the
// Hang state are kept. A listen error fails t.
func (s *Server) Restart(t testing.TB, samePort bool) {
	t.Helper()
	if err := s.TryRestart(samePort); err != nil {
		t.Fatal(err)
	}
}

// TryRestart is Restart for a goroutine other than the test's: it returns
// the error instead of failing the test. On the same port, listening can
// fail when an outgoing connection took the port as its source port while
// the server was down; the server then stays stopped.
func (s *Server) TryRestart(samePort bool) error {
	s.Stop()
	addr := "127.0.0.1:0"
	if samePort {
		addr = s.Addr()
	}
	if err := s.listen(addr); err != nil {
		return fmt.Errorf("rpctest: restart on %s: %w", addr, err)
	}
	return nil
}

// Hang freezes the server as if its process were stopped, while its TCP
// connections stay open and it keeps accepting new ones (the kernel would
// too):
//   - no request bytes are read from any connection: bytes already read by a
//     blocked Read are held back, so no new request reaches a handler;
//   - handlers already running finish their Sleep, then block before doing
//     anything else (no reply, no execution);
//   - no reply bytes are written.
//
// Unhang resumes everything; Stop interrupts it (the held requests are then
// never executed). Hang is idempotent and survives Restart.
func (s *Server) Hang() { s.hang.Close() }

// Unhang ends a Hang: held requests are served and held replies sent. It is
// a no-op if the server is not hung.
func (s *Server) Unhang() { s.hang.Open() }
