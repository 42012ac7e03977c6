package rpcclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"time"
)

// dialConn opens a connection to addr for endpoint.dial, under ctx (the
// dial timeout and the Client's life): through WithDialer's dial or the
// default net.Dialer, then, for a *tls.Conn, its handshake, and, with
// WithHTTPPath, net/rpc's CONNECT handshake. On an error the connection is
// closed.
func (o *options) dialConn(ctx context.Context, addr string) (net.Conn, error) {
	var nc net.Conn
	var err error
	if o.dial != nil {
		nc, err = o.dial(ctx, "tcp", addr)
		if err == nil && nc == nil {
			err = errors.New("the dialer given to WithDialer returned neither a connection nor an error")
		}
	} else {
		d := net.Dialer{KeepAlive: o.keepAlive}
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, err
	}
	if tc, ok := nc.(*tls.Conn); ok { // a no-op once tls.Dialer did it
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
	}
	if o.httpPath != "" {
		if err := httpConnect(ctx, nc, o.httpPath); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return nc, nil
}

// httpConnected is the status net/rpc's HTTP handler answers CONNECT with.
const httpConnected = "200 Connected to Go RPC"

// maxConnectAnswer caps the bytes read for the answer to CONNECT: net/rpc
// sends 36, and a peer that sends headers without end must not keep the
// dial reading until its timeout.
const maxConnectAnswer = 16 << 10

// httpConnect makes net/rpc's HTTP handshake on nc, as rpc.DialHTTPPath
// does: CONNECT path, then the answer, which must be net/rpc's. ctx bounds
// it: its deadline, and its end, which cuts a read or write short.
func httpConnect(ctx context.Context, nc net.Conn, path string) error {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	err := func() error {
		if _, err := io.WriteString(nc, "CONNECT "+path+" HTTP/1.0\n\n"); err != nil {
			return fmt.Errorf("HTTP CONNECT %s: %w", path, err)
		}
		br := bufio.NewReader(io.LimitReader(nc, maxConnectAnswer))
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				// The peer closed, or sent more than any answer:
				// say which the reader cannot.
				err = fmt.Errorf("%w (the peer closed the connection, or its answer passed %d bytes; a server that does not serve net/rpc over HTTP closes it)", err, maxConnectAnswer)
			}
			return fmt.Errorf("HTTP CONNECT %s: reading the answer: %w", path, err)
		}
		// The body is not read: net/rpc's answer has none, and the
		// connection is net/rpc's from here.
		if resp.Status != httpConnected {
			return fmt.Errorf("HTTP CONNECT %s: the server answered %q, not net/rpc's %q", path, resp.Status, httpConnected)
		}
		if n := br.Buffered(); n > 0 {
			return fmt.Errorf("HTTP CONNECT %s: the server sent %d bytes after its answer, before any request", path, n)
		}
		return nil
	}()
	if !stop() { // ctx ended: the deadline may be in the past
		if err == nil {
			err = fmt.Errorf("HTTP CONNECT %s: %w", path, context.Cause(ctx))
		}
		return err
	}
	if err != nil {
		return err
	}
	return nc.SetDeadline(time.Time{})
}

// tlsRefusal returns, for err, the reader's first error on a connection
// on which nothing was read, a failed dial when err is a TLS alert from
// the server that refuses the handshake, and nil otherwise. In TLS 1.3
// the client's side of the handshake completes before the server checks
// the client's certificate (mutual TLS): a server that refuses it (none,
// an expired one, one from a CA it does not trust) says so with an alert
// that the first read gets, after the first requests were written. The
// server never read them: its handshake failed, and it decrypts no
// application data without one. So the requests were not sent, as for a
// handshake that fails within the dial (see WithDialer).
func tlsRefusal(addr string, err error) error {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" || oe.Err == nil {
		return nil
	}
	// tls's alert type is unexported; its code is a uint8.
	v := reflect.ValueOf(oe.Err)
	if v.Type().PkgPath() != "crypto/tls" || v.Kind() != reflect.Uint8 {
		return nil
	}
	switch v.Uint() {
	case 40, // handshake_failure
		42, 43, 44, 45, 46, // bad, unsupported, revoked, expired, unknown certificate
		48, 49, // unknown_ca, access_denied
		51,  // decrypt_error (a CertificateVerify that does not verify)
		116: // certificate_required
		return &DialError{Addr: addr, Err: fmt.Errorf("TLS handshake: the server refused it after the client's side completed: %w", err)}
	}
	return nil
}
