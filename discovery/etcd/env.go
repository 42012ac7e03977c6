package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The environment variables the etcd:// target builder and ConfigFromEnv
// read. Except for ETCD_ENDPOINTS, they are etcdctl's own, so the settings
// an operator made for etcdctl apply unchanged.
const (
	varEndpoints          = "ETCD_ENDPOINTS"
	varCACert             = "ETCDCTL_CACERT"
	varCert               = "ETCDCTL_CERT"
	varKey                = "ETCDCTL_KEY"
	varInsecureSkipVerify = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY"
	varInsecureTransport  = "ETCDCTL_INSECURE_TRANSPORT"
	varUser               = "ETCDCTL_USER"
	varPassword           = "ETCDCTL_PASSWORD"
)

// errInsecureSkipVerify is returned when ETCDCTL_INSECURE_SKIP_TLS_VERIFY
// asks to skip verification, which is never done.
var errInsecureSkipVerify = errors.New("etcd: " + varInsecureSkipVerify + " is refused: the etcd server's certificate is always verified; set " + varCACert + " to the CA that signed it")

// ConfigFromEnv returns the client configuration the etcd:// target builder
// uses, so that a program can adjust it (a logger, timeouts, dial options),
// make its own client with clientv3.New, and pass it to New. It reads the
// environment at the time of the call; see the package documentation,
// "Security", for the variables.
//
// endpoints are host:port or http(s):// URLs; none means ETCD_ENDPOINTS,
// then DefaultEndpoint. A malformed endpoint (no port, a port out of range,
// a scheme other than http, https, unix or unixs) is an error naming it and
// where it came from. The error names the variable at fault and never
// contains the password. Safe from any goroutine.
func ConfigFromEnv(endpoints ...string) (clientv3.Config, error) {
	return configFromEnv(os.Getenv, endpoints)
}

// configFromEnv is ConfigFromEnv reading the environment through getenv.
func configFromEnv(getenv func(string) string, endpoints []string) (clientv3.Config, error) {
	from := "endpoint"
	if len(endpoints) == 0 {
		endpoints = envEndpoints(getenv(varEndpoints))
		from = varEndpoints
	}
	if len(endpoints) == 0 {
		endpoints = []string{DefaultEndpoint}
	}
	for _, ep := range endpoints {
		if strings.Contains(ep, "@") { // not echoed: it may hold a password
			return clientv3.Config{}, fmt.Errorf("etcd: an endpoint holds credentials (\"@\"); set %s and %s instead", varUser, varPassword)
		}
		if err := checkEndpoint(ep); err != nil {
			return clientv3.Config{}, fmt.Errorf("etcd: %s %q: %w", from, clip(ep), err)
		}
	}
	cfg := clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		MaxCallRecvMsgSize:   maxRecvMsgSize,
		Logger:               zap.NewNop(),
	}
	tc, err := tlsFromEnv(getenv, endpoints)
	if err != nil {
		return clientv3.Config{}, err
	}
	cfg.TLS = tc
	if cfg.Username, cfg.Password, err = userFromEnv(getenv); err != nil {
		return clientv3.Config{}, err
	}
	return cfg, nil
}

// tlsFromEnv returns the TLS configuration the environment and endpoints
// ask for, or nil for plain connections. TLS is on when any of
// ETCDCTL_CACERT, ETCDCTL_CERT and ETCDCTL_KEY is set, when an endpoint is
// https://, or when ETCDCTL_INSECURE_TRANSPORT is false (etcdctl's rule).
// Without ETCDCTL_CACERT, the system roots verify the server.
func tlsFromEnv(getenv func(string) string, endpoints []string) (*tls.Config, error) {
	if skip, err := envBool(getenv, varInsecureSkipVerify); err != nil {
		return nil, err
	} else if skip {
		return nil, errInsecureSkipVerify
	}
	insecure, err := envBool(getenv, varInsecureTransport)
	if err != nil {
		return nil, err
	}
	caFile, certFile, keyFile := getenv(varCACert), getenv(varCert), getenv(varKey)
	want := caFile != "" || certFile != "" || keyFile != "" || (getenv(varInsecureTransport) != "" && !insecure)
	var plain string // an endpoint that asks for no TLS
	for _, ep := range endpoints {
		switch endpointScheme(ep) {
		case "https", "unixs":
			want = true
		case "http":
			if plain == "" {
				plain = ep
			}
		}
	}
	if !want {
		return nil, nil
	}
	// etcd's client would talk plaintext to an http:// endpoint whatever
	// the TLS settings, and to all of them if it comes first.
	if plain != "" {
		return nil, fmt.Errorf("etcd: endpoint %q asks for plaintext but TLS is configured (%s): write it as https:// or host:port", clip(plain), tlsReason(getenv, endpoints))
	}

	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: %s: %w", varCACert, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd: %s: no PEM certificate in %q", varCACert, caFile)
		}
	}
	switch {
	case certFile != "" && keyFile == "":
		return nil, fmt.Errorf("etcd: %s is set but %s is not: a client certificate needs both", varCert, varKey)
	case keyFile != "" && certFile == "":
		return nil, fmt.Errorf("etcd: %s is set but %s is not: a client certificate needs both", varKey, varCert)
	case certFile != "":
		certPEM, err := os.ReadFile(certFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: %s: %w", varCert, err)
		}
		keyPEM, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: %s: %w", varKey, err)
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			return nil, fmt.Errorf("etcd: %s %q and %s %q: %w", varCert, certFile, varKey, keyFile, err)
		}
	}
	// etcd's TLSInfo, as etcdctl uses it: it reads the client certificate
	// again for every new connection, so rotated files are picked up.
	info := transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile, Logger: zap.NewNop()}
	tc, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd: TLS from %s, %s, %s: %w", varCACert, varCert, varKey, err)
	}
	tc.InsecureSkipVerify = false
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	return tc, nil
}

// tlsReason says what turned TLS on, for an error message.
func tlsReason(getenv func(string) string, endpoints []string) string {
	for _, v := range []string{varCACert, varCert, varKey} {
		if getenv(v) != "" {
			return v + " is set"
		}
	}
	for _, ep := range endpoints {
		if scheme := endpointScheme(ep); scheme == "https" || scheme == "unixs" {
			return fmt.Sprintf("endpoint %q", clip(ep))
		}
	}
	return varInsecureTransport + "=false"
}

// userFromEnv returns the credentials in ETCDCTL_USER and ETCDCTL_PASSWORD,
// read as etcdctl reads --user and --password: with a password, the user
// variable is the whole user name; without, it is "user:password". Errors
// never contain the password.
func userFromEnv(getenv func(string) string) (user, password string, err error) {
	u, p := getenv(varUser), getenv(varPassword)
	switch {
	case u == "" && p == "":
		return "", "", nil
	case u == "":
		return "", "", fmt.Errorf("etcd: %s is set without %s", varPassword, varUser)
	case p != "":
		return u, p, nil
	}
	name, pass, ok := strings.Cut(u, ":")
	switch {
	case !ok:
		return "", "", fmt.Errorf("etcd: %s names user %q but no password: set %s, or %s=user:password", varUser, clip(u), varPassword, varUser)
	case name == "":
		return "", "", fmt.Errorf("etcd: %s has an empty user name (want user:password)", varUser)
	case pass == "":
		// etcd's client would silently connect without logging in.
		return "", "", fmt.Errorf("etcd: %s gives user %q an empty password", varUser, clip(name))
	}
	return name, pass, nil
}

// envBool reads a boolean variable as etcdctl does (strconv.ParseBool); unset
// is false.
func envBool(getenv func(string) string, name string) (bool, error) {
	v := getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("etcd: %s=%q is not a boolean", name, clip(v))
	}
	return b, nil
}

// checkEndpoint checks what etcd's client can dial: host:port, or an
// http:// or https:// URL with a host and a port in 1-65535 (unix and
// unixs socket endpoints, unix:PATH or unix://PATH, are left to the
// client). Without the check, a missing port or a typo made every request
// time out, with an error that named neither the endpoint nor where it
// came from.
func checkEndpoint(ep string) error {
	if strings.HasPrefix(ep, "unix:") || strings.HasPrefix(ep, "unixs:") {
		// unix:PATH as well as unix://PATH: etcd's client takes both
		// (endpoint.Interpret), and a path has no port.
		return nil
	}
	hostport := ep
	if scheme, rest, ok := strings.Cut(ep, "://"); ok {
		switch strings.ToLower(scheme) {
		case "http", "https":
			hostport, _, _ = strings.Cut(rest, "/")
		case "unix", "unixs":
			return nil
		default:
			return fmt.Errorf("scheme %q: want host:port, http://host:port or https://host:port", clip(scheme))
		}
	}
	if strings.ContainsFunc(hostport, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("contains whitespace or control characters")
	}
	_, port, err := net.SplitHostPort(hostport) // an empty host is the local system, as for net.Dial
	if err != nil {
		return errors.New("not host:port (is the port missing?)")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || port[0] == '+' {
		return fmt.Errorf("port %q out of range 1-65535", clip(port))
	}
	return nil
}

// envEndpoints splits ETCD_ENDPOINTS ("host:port,host:port", as etcdctl
// takes it; http:// and https:// prefixes are allowed) into a list,
// skipping blanks.
func envEndpoints(v string) []string {
	var out []string
	for h := range strings.SplitSeq(v, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// endpointScheme returns an endpoint's scheme in lower case: the part
// before "://", or "unix" or "unixs" for the unix:PATH and unixs:PATH
// forms etcd's client also takes; "" for host:port.
func endpointScheme(ep string) string {
	switch {
	case strings.HasPrefix(ep, "unixs:"):
		return "unixs"
	case strings.HasPrefix(ep, "unix:"):
		return "unix"
	}
	if scheme, _, ok := strings.Cut(ep, "://"); ok {
		return strings.ToLower(scheme)
	}
	return ""
}
