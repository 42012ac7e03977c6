// Package hang makes a server look hung without stopping its process: while
// a Gate is closed, connections wrapped by Conn neither deliver the bytes
// they read nor write, and TCP stays open, as with a SIGSTOPped peer. The
// test servers (internal/rpctest) and the demo (examples/demo) use it.
package hang

import (
	"errors"
	"net"
	"sync"
)

// ErrStopped is returned by Wait (and by a gated connection) when the stop
// channel closes while the gate is closed.
var ErrStopped = errors.New("hang: server stopped while hung")

// Gate is open or closed. The zero Gate is open. Safe for concurrent use.
type Gate struct {
	mu     sync.Mutex
	closed chan struct{} // nil while open; closed by Open
}

// Close hangs everything that waits on the gate.
func (g *Gate) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == nil {
		g.closed = make(chan struct{})
	}
}

// Open releases every waiter.
func (g *Gate) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		close(g.closed)
		g.closed = nil
	}
}

// Wait returns nil once the gate is open, or ErrStopped when stop closes
// first.
func (g *Gate) Wait(stop <-chan struct{}) error {
	g.mu.Lock()
	c := g.closed
	g.mu.Unlock()
	if c == nil {
		return nil
	}
	select {
	case <-c:
		return nil
	case <-stop:
		return ErrStopped
	}
}

// Conn wraps a server connection so that it neither delivers read bytes
// nor writes while g is closed; stop releases it with ErrStopped.
func Conn(c net.Conn, g *Gate, stop <-chan struct{}) net.Conn {
	return &gatedConn{Conn: c, gate: g, stop: stop}
}

type gatedConn struct {
	net.Conn
	gate *Gate
	stop <-chan struct{}
}

func (c *gatedConn) Read(p []byte) (int, error) {
	if err := c.gate.Wait(c.stop); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	// A Read already blocked when the gate closed holds its bytes back.
	if werr := c.gate.Wait(c.stop); werr != nil {
		return 0, werr
	}
	return n, err
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if err := c.gate.Wait(c.stop); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
