package etcd

import (
	"strings"
	"testing"
)

// TestConfigFromEnvRejectsMalformedEndpoints: an endpoint etcd's client can
// never reach (no port, a port out of range, an unknown scheme, an empty
// name) is an error naming ETCD_ENDPOINTS, or the argument, and the endpoint,
// at once. Accepted, it made every list fail with only "context deadline
// exceeded", every 5 s, naming neither.
func TestConfigFromEnvRejectsMalformedEndpoints(t *testing.T) {
	for _, ep := range []string{
		"127.0.0.1",
		"127.0.0.1:99999",
		"127.0.0.1:0",
		"http://127.0.0.1",
		"ftp://127.0.0.1:2379",
		"etcd.example:port",
		"10.0.0.1:2379,127.0.0.1",
	} {
		env := map[string]string{varEndpoints: ep}
		_, err := configFromEnv(func(k string) string { return env[k] }, nil)
		if err == nil || !strings.Contains(err.Error(), varEndpoints) {
			t.Errorf("ETCD_ENDPOINTS=%q: %v; want an error naming %s", ep, err, varEndpoints)
		}
		if ep != "10.0.0.1:2379,127.0.0.1" {
			_, err = configFromEnv(func(string) string { return "" }, []string{ep})
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(ep)) {
				t.Errorf("ConfigFromEnv(%q): %v; want an error naming the endpoint", ep, err)
			}
		}
	}
	for _, ep := range []string{
		"127.0.0.1:2379", "etcd.example:2379", "[::1]:2379", "http://127.0.0.1:2379", "HTTPS://etcd.example:2379",
		"https://etcd.example:2379/", "unix:///run/etcd.sock", "unix://etcd.sock:0",
	} {
		env := map[string]string{varEndpoints: ep}
		if _, err := configFromEnv(func(k string) string { return env[k] }, nil); err != nil {
			t.Errorf("ETCD_ENDPOINTS=%q: %v; want it accepted", ep, err)
		}
	}
}
