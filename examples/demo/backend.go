package main

import (
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-go/dialtone/internal/hang"
	"github.com/dialtone-go/dialtone/rpcclient"
)

// EchoArgs are the arguments of "Echo.Echo".
type EchoArgs struct {
	// Msg is copied into the reply.
	Msg string
	// Sleep is added to the backend's own latency before it answers.
	Sleep time.Duration
}

// EchoReply is the reply of "Echo.Echo".
type EchoReply struct {
	// Msg is EchoArgs.Msg.
	Msg string
	// Backend is the name of the backend that answered.
	Backend string
}

// backend is one in-process echo server: a net/rpc server with the Echo
// service and the dialtone heartbeat, which the fault timeline can kill,
// hang and move. Its methods are safe from any goroutine.
type backend struct {
	name    string
	latency time.Duration // server-side latency of every Echo call
	hang    hang.Gate
	served  atomic.Int64 // Echo calls answered, across restarts

	mu   sync.Mutex
	addr string   // current (or last) listening address
	srv  *serving // nil while down
	reg  registration
}

// serving is one listening period of a backend, from listen to stop.
type serving struct {
	lis  net.Listener
	rpc  *rpc.Server
	stop chan struct{} // closed by stop: wakes sleeping and hung handlers
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// echo is the "Echo" service of one listening period.
type echo struct {
	b    *backend
	stop <-chan struct{}
}

// errStopped is what an interrupted handler returns; its connection is
// already closed, so no client sees it.
var errStopped = errors.New("backend stopped")

// Echo answers after the backend's latency plus args.Sleep.
func (e *echo) Echo(args EchoArgs, reply *EchoReply) error {
	if d := e.b.latency + args.Sleep; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-e.stop:
			t.Stop()
			return errStopped
		}
	}
	reply.Msg, reply.Backend = args.Msg, e.b.name
	e.b.served.Add(1)
	return nil
}

func newBackend(name string, latency time.Duration) *backend {
	return &backend{name: name, latency: latency}
}

// Addr returns the address the backend listens on, or last listened on.
func (b *backend) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// listen starts serving on addr (127.0.0.1:0 for a free port) with a fresh
// rpc.Server. The backend must be down.
func (b *backend) listen(addr string) error {
	s := &serving{rpc: rpc.NewServer(), stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	if err := s.rpc.RegisterName("Echo", &echo{b: b, stop: s.stop}); err != nil {
		return err
	}
	if err := rpcclient.RegisterHeartbeat(s.rpc); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("backend %s: %w", b.name, err)
	}
	s.lis = lis
	b.mu.Lock()
	if b.srv != nil {
		b.mu.Unlock()
		lis.Close()
		return fmt.Errorf("backend %s: already serving", b.name)
	}
	b.srv, b.addr = s, lis.Addr().String()
	b.mu.Unlock()
	s.wg.Add(1)
	go b.accept(s)
	return nil
}

// accept serves every connection of s in its own goroutine until s.lis is
// closed. It keeps accepting while the backend is hung, as the kernel would
// for a stopped process.
func (b *backend) accept(s *serving) {
	defer s.wg.Done()
	for {
		c, err := s.lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select { // EMFILE and the like: try again shortly
			case <-s.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.rpc.ServeConn(hang.Conn(c, &b.hang, s.stop))
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// stop closes the listener and every connection at once, as a crash would
// (clients see EOF or a reset; new dials are refused), wakes hung and
// sleeping handlers without answering, and waits for the backend's
// goroutines. It reports whether the backend was serving.
func (b *backend) stop() bool {
	b.mu.Lock()
	s := b.srv
	b.srv = nil
	b.mu.Unlock()
	if s == nil {
		return false
	}
	s.lis.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, not FIN: abrupt, like a killed process's sockets
		}
		c.Close()
	}
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	return true
}

// setRegistration swaps the backend's registration and returns the old one.
func (b *backend) setRegistration(r registration) registration {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.reg
	b.reg = r
	return old
}
