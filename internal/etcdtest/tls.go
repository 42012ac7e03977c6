package etcdtest

import (
	"testing"

	"github.com/dialtone-go/dialtone/internal/testcert"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// PKI is a throwaway certificate authority and the certificates it signed
// (testcert's), as PEM files under t.TempDir(). The server certificate is
// valid for 127.0.0.1, ::1 and localhost, for serving and for client
// authentication (etcd presents it when it dials itself); the client
// certificate is for client authentication only, with a common name that
// is not an etcd user, so it never logs anyone in by itself.
type PKI struct {
	CACert     string // the CA certificate
	ServerCert string // server certificate and key, for serving and for client auth
	ServerKey  string
	ClientCert string // client certificate and key
	ClientKey  string
}

// NewPKI makes a testcert.CA and writes its files. Two calls give two
// unrelated CAs. The test fails on any error.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	f := testcert.New(t).Files(t)
	return &PKI{CACert: f.CA, ServerCert: f.ServerCert, ServerKey: f.ServerKey, ClientCert: f.ClientCert, ClientKey: f.ClientKey}
}

// WithClientTLS serves the client URL over TLS (https://) with p's server
// certificate, and requires every client to present a certificate signed by
// p's CA. Server.Client and Server.ClientConfig then connect with p's client
// certificate. StartCluster refuses it.
func WithClientTLS(p *PKI) Option {
	return func(c *embed.Config) {
		c.ClientTLSInfo = transport.TLSInfo{
			CertFile:       p.ServerCert,
			KeyFile:        p.ServerKey,
			TrustedCAFile:  p.CACert,
			ClientCertAuth: true,
			// What etcd itself presents when it dials its client URL, and
			// what Server.ClientConfig presents.
			ClientCertFile: p.ClientCert,
			ClientKeyFile:  p.ClientKey,
		}
	}
}

// clientTLS returns the client TLS settings opts give the server, or an
// empty TLSInfo for plain http://.
func clientTLS(opts []Option) transport.TLSInfo {
	c := embed.NewConfig()
	for _, o := range opts {
		o(c)
	}
	return c.ClientTLSInfo
}
