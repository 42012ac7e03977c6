package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
)

// ErrTLSVerify is returned, or reported in State.Err, when an etcd server's
// certificate fails verification against the configured CA (ETCDCTL_CACERT,
// or the system roots without it). It is a configuration error: the
// connection is never retried without TLS or without verification.
var ErrTLSVerify = errors.New("etcd: server certificate failed TLS verification (a configuration error: check " + varCACert + ")")

// verifyServers explains a failure that etcd's client reports only as a
// timeout: it runs a TLS handshake with tc against each endpoint and
// returns ErrTLSVerify with the reason for the first whose certificate
// fails verification, and whether every endpoint failed so. Unreachable
// servers and other errors are not its business. ctx bounds it.
func verifyServers(ctx context.Context, tc *tls.Config, endpoints []string) (all bool, err error) {
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
		}
		if ctx.Err() != nil {
			break
		}
	}
	return failed == len(endpoints), err
}
