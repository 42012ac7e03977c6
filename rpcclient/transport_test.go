package rpcclient

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/rpc"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/internal/testcert"
)

// tlsDialer is WithDialer with a TLS dialer that trusts ca only.
func tlsDialer(ca *testcert.CA) Option {
	return WithDialer((&tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool}}).DialContext)
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// serveArithTLS serves Arith and the heartbeat over TLS with ca's server
// certificate, on loopback, with the changes tune makes to the server's
// TLS configuration; it stops at test cleanup.
func serveArithTLS(t testing.TB, a *Arith, ca *testcert.CA, tune ...func(*tls.Config)) (string, *countingListener) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Server}}
	for _, f := range tune {
		f(cfg)
	}
	l := &countingListener{Listener: tls.NewListener(raw, cfg)}
	serveRPCListener(t, l, func(s *rpc.Server) error {
		if err := s.Register(a); err != nil {
			return err
		}
		return RegisterHeartbeat(s)
	}, func() {})
	return raw.Addr().String(), l
}

// trackedListener remembers the connections it accepted, so that a test's
// cleanup can close them: http.Server forgets a connection once net/rpc's
// handler hijacks it.
type trackedListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackedListener) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// serveArithHTTP serves Arith and the heartbeat over HTTP, as
// rpc.HandleHTTP sets it up, at path on an http.Server, through TLS with
// ca's certificate when ca is not nil; it stops at test cleanup.
func serveArithHTTP(t testing.TB, a *Arith, path string, ca *testcert.CA) (string, *trackedListener) {
	t.Helper()
	s := rpc.NewServer()
	if err := s.Register(a); err != nil {
		t.Fatal(err)
	}
	if err := RegisterHeartbeat(s); err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var inner net.Listener = raw
	if ca != nil {
		inner = tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{ca.Server}})
	}
	l := &trackedListener{Listener: inner}
	mux := http.NewServeMux()
	mux.Handle(path, s)
	srv := &http.Server{Handler: mux, ErrorLog: nil}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		l.mu.Lock()
		for _, c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
	})
	return raw.Addr().String(), l
}

// A Client with WithDialer's TLS dialer calls a net/rpc server behind TLS,
// and the heartbeat keeps its one connection (a ping that failed would
// close it); a Client without it cannot.
func TestTLSDialer(t *testing.T) {
	ca := testcert.New(t)
	var a Arith
	addr, l := serveArithTLS(t, &a, ca)
	c, _ := newTestClient(t, []string{addr}, tlsDialer(ca), WithHeartbeat(20*time.Millisecond, time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 5 {
		var sum int
		if err := c.Call(ctx, "Arith.Add", Pair{i, 1}, &sum); err != nil || sum != i+1 {
			t.Fatalf("Add(%d, 1) over TLS = %d, %v", i, sum, err)
		}
	}
	time.Sleep(200 * time.Millisecond) // some 10 heartbeats
	var sum int
	if err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &sum); err != nil || sum != 2 {
		t.Fatalf("Add after the heartbeats = %d, %v", sum, err)
	}
	if n := l.accepted.Load(); n != 1 {
		t.Fatalf("the server accepted %d connections; want 1 (the heartbeat over TLS closed one?)", n)
	}

	// The control: without the TLS dialer the server is out of reach.
	plain, _ := newTestClient(t, []string{addr}, WithMaxAttempts(1), withoutNodeHealth())
	pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer pcancel()
	if err := plain.Call(pctx, "Arith.Add", Pair{1, 1}, &sum, Idempotent()); err == nil {
		t.Fatal("a client without the TLS dialer called the TLS server")
	}
}

// A failed TLS handshake is a failed dial: it sent no request, so a call
// that is not idempotent goes on to another node, and the error names the
// certificate.
func TestTLSHandshakeFailureIsAFailedDial(t *testing.T) {
	trusted, other := testcert.New(t), testcert.New(t)
	var good, bad Arith
	goodAddr, _ := serveArithTLS(t, &good, trusted)
	badAddr, badL := serveArithTLS(t, &bad, other) // a certificate the client does not trust
	c, _ := newTestClient(t, []string{badAddr, goodAddr}, tlsDialer(trusted),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 6 { // round robin: the bad node comes up in the first two
		var sum int
		if err := c.Call(ctx, "Arith.Add", Pair{i, 1}, &sum); err != nil || sum != i+1 {
			t.Fatalf("call %d (not idempotent) = %d, %v; want it served by the trusted node", i, sum, err)
		}
	}
	if badL.accepted.Load() == 0 {
		t.Fatal("no call dialed the node with the untrusted certificate: the test proved nothing")
	}
	if n := bad.calls.Load(); n != 0 {
		t.Fatalf("the untrusted node ran %d calls", n)
	}
	if n := good.calls.Load(); n != 6 {
		t.Fatalf("the trusted node ran %d calls; want 6", n)
	}

	only, _ := newTestClient(t, []string{badAddr}, tlsDialer(trusted), WithMaxAttempts(1))
	octx, ocancel := context.WithTimeout(context.Background(), time.Second)
	defer ocancel()
	var sum int
	err := only.Call(octx, "Arith.Add", Pair{1, 1}, &sum)
	var de *DialError
	var ve *tls.CertificateVerificationError
	if !errors.As(err, &de) || !errors.As(err, &ve) || de.Addr != badAddr {
		t.Fatalf("call to the untrusted node = %v; want a DialError for %s naming the certificate", err, badAddr)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a failed handshake left the outcome unknown: %v", err)
	}
}

// WithHTTPPath talks to servers that serve net/rpc over HTTP, as
// rpc.HandleHTTP sets up, plain and through TLS; the heartbeat works there
// too.
func TestHTTPPath(t *testing.T) {
	ca := testcert.New(t)
	for _, tc := range []struct {
		name string
		ca   *testcert.CA
	}{{"http", nil}, {"https", ca}} {
		t.Run(tc.name, func(t *testing.T) {
			var a Arith
			addr, l := serveArithHTTP(t, &a, rpc.DefaultRPCPath, tc.ca)
			opts := []Option{WithHTTPPath(rpc.DefaultRPCPath), WithHeartbeat(20*time.Millisecond, time.Second)}
			if tc.ca != nil {
				opts = append(opts, tlsDialer(tc.ca))
			}
			c, _ := newTestClient(t, []string{addr}, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for i := range 5 {
				var q int
				if err := c.Call(ctx, "Arith.Div", Pair{10 * i, 5}, &q); err != nil || q != 2*i {
					t.Fatalf("Div(%d, 5) = %d, %v", 10*i, q, err)
				}
			}
			var q int
			var se rpc.ServerError
			if err := c.Call(ctx, "Arith.Div", Pair{1, 0}, &q); !errors.As(err, &se) {
				t.Fatalf("Div by zero = %v; want the server's error", err)
			}
			time.Sleep(200 * time.Millisecond) // some 10 heartbeats
			if err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &q); err != nil || q != 2 {
				t.Fatalf("Add after the heartbeats = %d, %v", q, err)
			}
			if n := l.accepted(); n != 1 {
				t.Fatalf("the server accepted %d connections; want 1", n)
			}
		})
	}
}

// rawServer accepts connections on loopback and runs handle on each, in
// a goroutine, until test cleanup, which closes the listener and every
// connection and waits.
func rawServer(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveConns(t, l, handle, func() {})
	return l.Addr().String()
}

// readHead reads the CONNECT request's head; false if the connection
// closed first.
func readHead(c net.Conn) bool {
	var buf [256]byte
	head := ""
	for !strings.Contains(head, "\n\n") {
		n, err := c.Read(buf[:])
		if err != nil {
			return false
		}
		head += string(buf[:n])
	}
	return true
}

// answerConnect reads the CONNECT request's head and writes answer.
func answerConnect(answer string) func(net.Conn) {
	return func(c net.Conn) {
		if readHead(c) {
			io.WriteString(c, answer)
			io.Copy(io.Discard, c) // until the client or cleanup closes
		}
	}
}

// A CONNECT handshake that fails is a failed dial whose error says what
// the server answered, or that it did not answer; it never runs past the
// dial timeout, and a server that answers without end is cut off.
func TestHTTPPathFailuresNameTheAnswer(t *testing.T) {
	var a Arith
	rpcHTTP, _ := serveArithHTTP(t, &a, rpc.DefaultRPCPath, nil)
	endless := func(c net.Conn) { // headers without end, 1 MiB at most
		io.WriteString(c, "HTTP/1.0 200 Connected to Go RPC\nX-Filler: ")
		chunk := strings.Repeat("a", 4096)
		for range 256 {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
		io.Copy(io.Discard, c)
	}
	for _, tc := range []struct {
		name, addr, path string
		want             []string
		timeout          bool // the error is the dial timeout's
	}{
		{name: "wrong path", addr: rpcHTTP, path: "/nope",
			want: []string{"HTTP CONNECT /nope", `answered "404 Not Found"`, `"200 Connected to Go RPC"`}},
		{name: "plain HTTP 200", addr: rawServer(t, answerConnect("HTTP/1.0 200 OK\r\n\r\n")), path: rpc.DefaultRPCPath,
			want: []string{`answered "200 OK"`}},
		{name: "bytes after the answer", addr: rawServer(t, answerConnect("HTTP/1.0 200 Connected to Go RPC\n\nxyz")), path: rpc.DefaultRPCPath,
			want: []string{"sent 3 bytes after its answer"}},
		{name: "closes at once", addr: rawServer(t, func(c net.Conn) { readHead(c); c.Close() }), path: rpc.DefaultRPCPath,
			want: []string{"reading the answer", "closed the connection"}},
		{name: "endless headers", addr: rawServer(t, endless), path: rpc.DefaultRPCPath,
			want: []string{"reading the answer", "16384 bytes"}},
		// net/rpc's own server, not over HTTP, reads the CONNECT line as
		// the start of a gob message and waits for the rest.
		{name: "raw net/rpc server", addr: serveArith(t, &a), path: rpc.DefaultRPCPath,
			want: []string{"HTTP CONNECT", "reading the answer"}, timeout: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestClient(t, []string{tc.addr}, WithHTTPPath(tc.path), WithDialTimeout(300*time.Millisecond), WithMaxAttempts(1))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			var sum int
			err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &sum)
			took := time.Since(start)
			var de *DialError
			if !errors.As(err, &de) {
				t.Fatalf("Call = %v after %v; want a DialError", err, took)
			}
			for _, w := range tc.want {
				if !strings.Contains(de.Error(), w) {
					t.Errorf("dial error %q does not say %q", de.Error(), w)
				}
			}
			if got := errors.Is(err, os.ErrDeadlineExceeded); got != tc.timeout {
				t.Errorf("dial error %q: is the dial timeout's: %v, want %v", de.Error(), got, tc.timeout)
			}
			if errors.Is(err, ErrOutcomeUnknown) {
				t.Errorf("a failed handshake left the outcome unknown: %v", err)
			}
		})
	}
	if n := a.calls.Load(); n != 0 {
		t.Fatalf("the servers ran %d calls", n)
	}
}

// A server that takes the TCP connection and never answers the TLS
// handshake holds the dial no longer than the dial timeout.
func TestTLSHandshakeHangIsBoundedByTheDialTimeout(t *testing.T) {
	ca := testcert.New(t)
	silent := rawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	c, _ := newTestClient(t, []string{silent}, tlsDialer(ca), WithDialTimeout(200*time.Millisecond), WithMaxAttempts(1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sum int
	err := c.Call(ctx, "Arith.Add", Pair{1, 1}, &sum)
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(de, context.DeadlineExceeded) {
		t.Fatalf("Call = %v; want a DialError for the handshake's dial timeout", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the call ran to its own 5 s deadline: %v", err)
	}
}

// A server that refuses the client's certificate (mutual TLS: none, an
// expired one, one from a CA it no longer trusts) refused the connection:
// in TLS 1.3 the client's side of the handshake completes before the
// server checks the certificate, and the refusal, an alert, comes on the
// first read, after the first request was written. The server never read
// that request: a call that is not idempotent goes on to another node, as
// for any other failed handshake (WithDialer's doc), rather than fail with
// ErrOutcomeUnknown, and the node's breaker does not count it.
func TestTLSClientCertificateRefusedIsAFailedDial(t *testing.T) {
	ca := testcert.New(t)
	var good, strict Arith
	goodAddr, _ := serveArithTLS(t, &good, ca)
	// The server requires a client certificate, which the client has not.
	strictAddr, strictL := serveArithTLS(t, &strict, ca, func(c *tls.Config) {
		c.ClientAuth = tls.RequestClientCert
		// The refusal comes a little after the client's Finished, as it
		// does over any link slower than loopback's.
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			time.Sleep(50 * time.Millisecond)
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			return nil
		}
	})
	c, _ := newTestClient(t, []string{strictAddr, goodAddr}, tlsDialer(ca),
		WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 6 {
		var sum int
		if err := c.Call(ctx, "Arith.Add", Pair{i, 1}, &sum); err != nil || sum != i+1 {
			t.Fatalf("call %d (not idempotent) = %d, %v; want it served by the node that takes the client", i, sum, err)
		}
	}
	if strictL.accepted.Load() == 0 {
		t.Fatal("no call dialed the node that requires a client certificate: the test proved nothing")
	}
	if n := strict.calls.Load(); n != 0 {
		t.Fatalf("the node that refused the client ran %d calls", n)
	}

	only, _ := newTestClient(t, []string{strictAddr}, tlsDialer(ca), WithMaxAttempts(1), WithConnectBackoff(50*time.Millisecond, 1.6, time.Second, 0.2))
	octx, ocancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ocancel()
	var sum int
	err := only.Call(octx, "Arith.Add", Pair{1, 1}, &sum)
	var de *DialError
	if !errors.As(err, &de) || de.Addr != strictAddr || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("call to the node that refuses the client = %v; want a DialError for %s, outcome known", err, strictAddr)
	}
}
