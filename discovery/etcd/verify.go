package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// ErrTLSVerify is returned, or reported in State.Err, when an etcd server's
// certificate fails verification against the configured CA (ETCDCTL_CACERT,
// or the system roots without it). It is a configuration error: the
// connection is never retried without TLS or without verification.
var ErrTLSVerify = errors.New("etcd: server certificate failed TLS verification (a configuration error: check " + varCACert + ")")

// errNotTLS is reported when TLS is configured and an etcd server answers
// the handshake in plaintext: a server without TLS (a local or embedded
// one), reached with etcdctl's TLS variables set for another.
var errNotTLS = errors.New("etcd: the server does not speak TLS, but TLS is configured")

// verifyServers explains a failure that etcd's client reports only as a
// timeout: it runs a TLS handshake with tc against each endpoint and
// returns ErrTLSVerify with the reason for the first whose certificate
// fails verification, or errNotTLS for one that answers in plaintext
// (why says what turned TLS on), and whether every endpoint failed so.
// Unreachable servers and other errors are not its business. ctx bounds it.
func verifyServers(ctx context.Context, tc *tls.Config, endpoints []string, why string) (all bool, err error) {
	failed := 0
	for _, ep := range endpoints {
		addr := ep
		if scheme, rest, ok := strings.Cut(ep, "://"); ok {
			if s := strings.ToLower(scheme); s != "https" && s != "http" {
				continue // unix sockets
			}
			addr = rest
		}
		// Like gRPC, verify the host the endpoint names.
		d := tls.Dialer{NetDialer: &net.Dialer{}, Config: tc}
		conn, derr := d.DialContext(ctx, "tcp", addr)
		if derr == nil {
			conn.Close()
			continue
		}
		if ve := (*tls.CertificateVerificationError)(nil); errors.As(derr, &ve) {
			failed++
			if err == nil {
				err = fmt.Errorf("%w: %s: %w", ErrTLSVerify, clip(addr), ve.Err)
			}
		} else if ctx.Err() == nil && plaintextHandshakeFailure(derr) && speaksPlaintext(ctx, addr) {
			// The handshake failed (etcd's plaintext port closes the
			// connection on a ClientHello), and the server answers HTTP
			// in plaintext.
			failed++
			if err == nil {
				err = fmt.Errorf("%w (%s): %s answers in plaintext", errNotTLS, why, clip(addr))
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	return failed == len(endpoints), err
}

// plaintextHandshakeFailure reports whether a failed TLS handshake looks
// like a server without TLS: the connection ended (etcd's plaintext port
// closes it on a ClientHello) or the answer was not a TLS record. A TLS
// server that refuses the client sends an alert instead.
func plaintextHandshakeFailure(err error) bool {
	var rhe tls.RecordHeaderError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &rhe)
}

// speaksPlaintext reports whether addr answers a plaintext HTTP/1.1 request
// with an HTTP status line, as etcd's client port without TLS does.
func speaksPlaintext(ctx context.Context, addr string) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(conn, "GET /version HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n"); err != nil {
		return false
	}
	// A Go HTTPS server answers a plaintext request in plaintext too:
	// "HTTP/1.0 400 Bad Request ... Client sent an HTTP request to an HTTPS
	// server."
	reply, _ := io.ReadAll(io.LimitReader(conn, 512))
	return bytes.HasPrefix(reply, []byte("HTTP/1.")) && !bytes.Contains(reply, []byte("HTTPS server"))
}
