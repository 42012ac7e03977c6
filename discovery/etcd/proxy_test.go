package etcd

import (
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// proxy is a loopback TCP proxy that can blackhole traffic: while
// blackholed, bytes are read but held back, and connections stay open, so
// the peers see silence rather than an error. It stops at test cleanup.
type proxy struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	cond   *sync.Cond
	held   bool
	closed bool
	conns  []net.Conn
	first  []byte // the first byte each client sent, in accept order
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// client returns an etcd client that goes through the proxy, without gRPC
// keepalives (so a blackhole is silent), closed at cleanup.
func (p *proxy) client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + p.ln.Addr().String()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// switchTo sends the connections accepted from now on to upstream, and
// closes the ones open now: the client reconnects, to another server.
func (p *proxy) switchTo(upstream string) {
	p.mu.Lock()
	p.upstream = upstream
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// blackhole starts (true) or ends (false) holding back all traffic.
func (p *proxy) blackhole(on bool) {
	p.mu.Lock()
	p.held = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		upstream := p.upstream
		p.mu.Unlock()
		u, err := net.Dial("tcp", upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			u.Close()
			return
		}
		p.conns = append(p.conns, c, u)
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, u, false)
		go p.pipe(u, c, true)
	}
}

// firstBytes returns the first byte of every connection a client opened
// and sent something on: 0x16 for a TLS handshake, 'P' for the plaintext
// HTTP/2 preface ("PRI * HTTP/2.0").
func (p *proxy) firstBytes() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.first...)
}

// pipe copies src to dst, waiting before each write while traffic is held.
// fromClient records the first byte src sends (see firstBytes).
func (p *proxy) pipe(dst, src net.Conn, fromClient bool) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if fromClient {
				p.first = append(p.first, buf[0])
				fromClient = false
			}
			for p.held && !p.closed {
				p.cond.Wait()
			}
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.cond.Broadcast()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
}
