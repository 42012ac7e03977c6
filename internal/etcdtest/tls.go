package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// PKI is a throwaway certificate authority and the certificates it signed,
// written as PEM files under t.TempDir(). The server certificate is valid
// for 127.0.0.1, ::1 and localhost; the client certificate is for client
// authentication only, with the common name "etcdtest-client" (not an etcd
// user, so it never logs anyone in by itself).
type PKI struct {
	CACert     string // the CA certificate
	ServerCert string // server certificate and key, for serving and for client auth
	ServerKey  string
	ClientCert string // client certificate and key
	ClientKey  string
}

// NewPKI generates a CA, a server and a client certificate with ECDSA P-256
// keys, valid for one hour, and writes them to a new directory under
// t.TempDir(). Two calls give two unrelated CAs. The test fails on any
// error.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatalf("etcdtest: write %s: %v", name, err)
		}
		return path
	}
	now := time.Now()
	serial := int64(1)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatalf("etcdtest: key: %v", err)
		}
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = now.Add(-time.Minute)
		tmpl.NotAfter = now.Add(time.Hour)
		if parent == nil { // self-signed
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatalf("etcdtest: certificate %s: %v", tmpl.Subject.CommonName, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("etcdtest: parse certificate: %v", err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatalf("etcdtest: marshal key: %v", err)
		}
		return cert, key, der, keyDER
	}

	ca, caKey, caDER, _ := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	_, _, srvDER, srvKey := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "etcdtest-server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	_, _, cliDER, cliKey := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "etcdtest-client"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)

	return &PKI{
		CACert:     write("ca.pem", "CERTIFICATE", caDER),
		ServerCert: write("server.pem", "CERTIFICATE", srvDER),
		ServerKey:  write("server-key.pem", "PRIVATE KEY", srvKey),
		ClientCert: write("client.pem", "CERTIFICATE", cliDER),
		ClientKey:  write("client-key.pem", "PRIVATE KEY", cliKey),
	}
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
