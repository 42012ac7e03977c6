// Package testcert makes a certificate authority of a test's own, with a
// server certificate for 127.0.0.1, ::1 and localhost and a client
// certificate it signed, for tests against real servers behind TLS (net/rpc
// backends, a Consul agent, etcd).
// Keys are ECDSA P-256; certificates are valid from an hour ago to an hour
// from now.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority and the certificates it signed.
type CA struct {
	// Pool trusts the CA, and nothing else.
	Pool *x509.CertPool
	// Server is a certificate for 127.0.0.1, ::1 and localhost, for
	// serving and for client authentication (a server that dials itself,
	// as etcd does, presents it).
	Server tls.Certificate
	// Client is a certificate for client authentication (mutual TLS).
	Client tls.Certificate

	caPEM []byte
}

// New makes a CA and its two certificates; an error fails t.
func New(t testing.TB) *CA {
	t.Helper()
	now := time.Now()
	caKey := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dialtone test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, name string, usage ...x509.ExtKeyUsage) tls.Certificate {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &CA{
		Pool:   pool,
		Server: leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth),
		Client: leaf(3, "dialtone test client", x509.ExtKeyUsageClientAuth),
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Files are the CA's certificates and keys as PEM files.
type Files struct {
	CA                    string // the CA's certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// Files writes the CA's certificate, and each certificate with its key,
// to PEM files in a directory that t removes when it ends.
func (ca *CA) Files(t testing.TB) Files {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pair := func(prefix string, c tls.Certificate) (string, string) {
		der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return write(prefix+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})),
			write(prefix+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	f := Files{CA: write("ca.pem", ca.caPEM)}
	f.ServerCert, f.ServerKey = pair("server", ca.Server)
	f.ClientCert, f.ClientKey = pair("client", ca.Client)
	return f
}
