package rpctest

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// proxyMode is what a Proxy does with connections and bytes.
type proxyMode int

const (
	modePass      proxyMode = iota // forward both ways (after latency)
	modeReset                      // RST every connection
	modeBlackhole                  // forward requests, drop responses
)

// proxyDialTimeout bounds the proxy's dial to its target.
const proxyDialTimeout = 5 * time.Second

// Proxy is a TCP proxy on 127.0.0.1 in front of one target, whose behaviour
// the test switches at runtime (Pass, Reset, BlackholeResponses, Latency). It
// starts in Pass mode. Each accepted connection gets its own connection to
// the target. Its methods are safe for concurrent use from any goroutine.
type Proxy struct {
	lis    net.Listener
	ctx    context.Context // cancelled by Close: aborts dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	target  string // where new connections go
	mode    proxyMode
	latency time.Duration
	up      int // bytes per second toward the target for new connections; 0: no limit
	down    int // bytes per second toward the client for new connections; 0: no limit
	conns   map[*proxyConn]struct{}
	closed  bool
}

// proxyConn is one client connection and its connection to the target.
type proxyConn struct {
	client, server net.Conn
	done           chan struct{} // closed by close
	once           sync.Once
	dropped        bool // response bytes were dropped; guarded by Proxy.mu
}

// close closes both sides, with RST (SO_LINGER 0) if rst.
func (pc *proxyConn) close(rst bool) {
	pc.once.Do(func() {
		if rst {
			setLinger0(pc.client)
			setLinger0(pc.server)
		}
		pc.client.Close()
		pc.server.Close()
		close(pc.done)
	})
}

func setReadBuffer(c net.Conn, n int) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(n)
	}
}

func setLinger0(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// NewProxy starts a Proxy on 127.0.0.1:0 forwarding to target (host:port).
// A listen error fails t. t.Cleanup closes it. Call it from the test
// goroutine.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("rpctest: proxy listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target: target,
		lis:    lis,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*proxyConn]struct{}),
	}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's address, 127.0.0.1:port. Clients dial it instead
// of the target.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Retarget sends the connections accepted from now on to target; those
// made before keep theirs. It is what a client sees when the DNS name or
// the virtual IP it dials moves to other machines.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Pass forwards bytes both ways without delay (the initial mode). It closes
// with RST the connections that lost response bytes in BlackholeResponses
// mode, since TCP never delivers a stream with a hole in it (and gob could
// not decode one).
func (p *Proxy) Pass() { p.setMode(modePass, 0) }

// Latency forwards bytes both ways, each chunk from the target to the client
// delivered d after the proxy read it (chunks keep their order; they are not
// delayed by each other's latency). Client-to-target bytes are not delayed.
// Like Pass, it resets connections that lost response bytes.
func (p *Proxy) Latency(d time.Duration) { p.setMode(modePass, d) }

// Reset closes every existing connection with RST (SO_LINGER 0, then
// Close), on the client side and the target side. While in this mode, new
// connections are accepted and reset at once: the client's dial succeeds
// (the kernel completed the handshake) and its first read or write fails
// with ECONNRESET (or EPIPE).
func (p *Proxy) Reset() { p.setMode(modeReset, 0) }

// BlackholeResponses forwards client-to-target bytes but reads and drops
// every target-to-client byte, on existing and new connections: the request
// reaches the server and executes, the response never arrives ("request
// passes, response dropped"). Leaving this mode resets the connections that
// lost bytes.
func (p *Proxy) BlackholeResponses() { p.setMode(modeBlackhole, 0) }

// Throttle limits the connections accepted from now on to about up bytes
// per second toward the target and down bytes per second toward the client
// (0: no limit): a live peer on a slow link.
func (p *Proxy) Throttle(up, down int) {
	p.mu.Lock()
	p.up, p.down = up, down
	p.mu.Unlock()
}

func (p *Proxy) setMode(m proxyMode, latency time.Duration) {
	var kill []*proxyConn
	p.mu.Lock()
	p.mode, p.latency = m, latency
	for pc := range p.conns {
		if m == modeReset || (m != modeBlackhole && pc.dropped) {
			kill = append(kill, pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range kill {
		pc.close(true)
	}
}

// Close stops accepting, closes every connection (with FIN, not RST) and
// waits until all the proxy's goroutines have exited. It is idempotent;
// t.Cleanup calls it.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	p.cancel()
	p.lis.Close()
	for _, pc := range conns {
		pc.close(false)
	}
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		p.mu.Lock()
		reset := p.mode == modeReset
		p.mu.Unlock()
		if reset {
			setLinger0(c)
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

// handle dials the target for client and pumps bytes until either side ends.
func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: proxyDialTimeout}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	server, err := d.DialContext(p.ctx, "tcp", target)
	if err != nil {
		client.Close()
		return
	}
	pc := &proxyConn{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	closed, reset := p.closed, p.mode == modeReset
	up, down := p.up, p.down
	if !closed && !reset {
		p.conns[pc] = struct{}{}
	}
	p.mu.Unlock()
	if closed || reset {
		pc.close(reset)
		return
	}
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()

	if up > 0 || down > 0 {
		// Small receive buffers, so that the rate, not the kernel's
		// buffers, sets the pace.
		setReadBuffer(client, 64<<10)
		setReadBuffer(server, 64<<10)
	}
	pace := func(n, rate int) {
		if rate > 0 {
			time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
		}
	}

	type chunk struct {
		data []byte
		due  time.Time
	}
	chunks := make(chan chunk, 64)
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { // client -> server
		defer pumps.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if _, werr := server.Write(buf[:n]); werr != nil {
					break
				}
				pace(n, up)
			}
			if err != nil {
				break
			}
		}
		pc.close(false)
	}()
	go func() { // server -> chunks
		defer pumps.Done()
		defer close(chunks)
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				pace(n, down)
				p.mu.Lock()
				drop, latency := p.mode == modeBlackhole, p.latency
				if drop {
					pc.dropped = true
				}
				p.mu.Unlock()
				if !drop {
					c := chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(latency)}
					select {
					case chunks <- c:
					case <-pc.done:
						return
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// chunks -> client, each at its due time. Chunks read before the target
	// closed are still delivered; then both sides are closed.
	for c := range chunks {
		if wait := time.Until(c.due); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-pc.done:
			}
			timer.Stop()
		}
		if _, err := client.Write(c.data); err != nil {
			break
		}
	}
	pc.close(false)
	pumps.Wait()
}
