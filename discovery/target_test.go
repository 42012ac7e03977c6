package discovery

import (
	"errors"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	tg, err := ParseTarget("consul://127.0.0.1:8500/orders?tag=a&tag=b&dc=dc1&healthy=warning")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Scheme != "consul" || !slices.Equal(tg.Hosts, []string{"127.0.0.1:8500"}) || tg.Path != "orders" ||
		!slices.Equal(tg.Query["tag"], []string{"a", "b"}) || tg.Query.Get("dc") != "dc1" {
		t.Fatalf("parsed %+v", tg)
	}
	tg, err = ParseTarget("etcd://10.0.0.1:2379,[::1]:2379/services/orders")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tg.Hosts, []string{"10.0.0.1:2379", "[::1]:2379"}) || tg.Path != "services/orders" {
		t.Fatalf("parsed %+v", tg)
	}
	tg, err = ParseTarget("static:///a.example:1,b.example:2")
	if err != nil || tg.Hosts != nil || tg.Path != "a.example:1,b.example:2" {
		t.Fatalf("parsed %+v, %v", tg, err)
	}
	tg, err = ParseTarget("etcd://localhost:2379,consul.service:8500,my_host.:1/p")
	if err != nil || !slices.Equal(tg.Hosts, []string{"localhost:2379", "consul.service:8500", "my_host.:1"}) {
		t.Fatalf("parsed %+v, %v", tg, err)
	}
	tg, err = ParseTarget("consul:///my%2Fsvc")
	if err != nil || tg.Path != "my/svc" || len(tg.Hosts) != 0 {
		t.Fatalf("parsed %+v, %v", tg, err)
	}
}

func TestParseTargetErrorsNameThePart(t *testing.T) {
	for _, tc := range []struct{ in, part string }{
		{"orders", "scheme"},
		{"://x/y", "scheme"},
		{"1consul://x:1/y", "scheme"},
		{"consul://127.0.0.1:8500", "path"},
		{"consul://127.0.0.1:0/orders", "authority"},
		{"consul://127.0.0.1:99999/orders", "authority"},
		{"consul://127.0.0.1/orders", "authority"},
		{"etcd://a:1,,b:2/p", "authority"},
		{"consul://user:pw@127.0.0.1:8500/orders", "authority"},
		{"consul://h:1/orders?x=%zz", "query"},
		{"consul://h:1/orders#frag", "fragment"},
		{"consul://h:1/a%zzb", "path"},
		{"consul://h:1/a b", "whitespace"},
		{"consul://h!o$t:8500/svc", "authority"},
		{"consul://ho%st:8500/svc", "authority"},
		{"etcd://10.0.0.1:2379,-bad:2379/p", "authority"},
		{"etcd://a..b:2379/p", "authority"},
	} {
		_, err := ParseTarget(tc.in)
		if err == nil || !errors.Is(err, ErrBadTarget) || !strings.Contains(err.Error(), tc.part) {
			t.Errorf("ParseTarget(%q) = %v, want ErrBadTarget naming %q", tc.in, err, tc.part)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		"consul://127.0.0.1:8500/orders?tag=a&tag=b", "etcd://a:1,b:2/p/q", "static:///a:1,b:2",
		"consul:///x", "x://", "://", "etcd://[::1]:2379/p", "consul://h:1/a%2Fb?x=%zz",
		"consul://h!o$t:8500/svc", "consul://ho%st:8500/svc", "etcd://1.2.3:1/p", "etcd://a.-b:1/p",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			if !errors.Is(err, ErrBadTarget) {
				t.Fatalf("error %v does not wrap ErrBadTarget", err)
			}
			return
		}
		if tg.Scheme == "" || tg.Raw != s || tg.Query == nil {
			t.Fatalf("accepted %q as %+v", s, tg)
		}
		for _, h := range tg.Hosts {
			if why := badRegistryAddr(h); why != "" {
				t.Fatalf("accepted bad registry address %q in %q: %s", h, s, why)
			}
		}
		// A static target either builds or fails with a clear error; it never panics.
		if tg.Scheme == "static" {
			if w, err := buildStatic(t.Context(), tg); err == nil {
				w.Close()
			}
		}
	})
}

// dnsName matches a DNS name as ParseTarget must accept it for a registry:
// dot-separated labels of letters, digits, '_' and inner '-', 63 bytes at
// most each, and an optional trailing dot.
var dnsName = regexp.MustCompile(`^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$`)

// badRegistryAddr is FuzzParseTarget's oracle for one registry address,
// written apart from validateRegistryAddr (which the fuzz target must
// check, not repeat): it says what is wrong with h, or "" if nothing is.
func badRegistryAddr(h string) string {
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		return "not host:port"
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || strings.Trim(port, "0123456789") != "" {
		return "port not in 1-65535"
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	switch {
	case !dnsName.MatchString(host):
		return "host is neither an IP address nor a DNS name"
	case len(strings.TrimSuffix(host, ".")) > 253:
		return "host name longer than 253 bytes"
	case strings.Trim(host, "0123456789.") == "":
		return "host is all digits and dots but not an IP address"
	}
	return ""
}

// TestTargetErrorsHideCredentials: a target carrying credentials is refused,
// and neither the error (of ParseTarget or of Watch) nor Target.String
// repeats them.
func TestTargetErrorsHideCredentials(t *testing.T) {
	for _, s := range []string{
		"etcd://root:hunter2@127.0.0.1:2379/svc",
		"consul://hunter2@127.0.0.1:8500/svc",
		"consul://127.0.0.1:8500/svc?token=hunter2&tag=a",
		"consul://127.0.0.1:8500/svc?Password=hunter2",
		"consul://127.0.0.1:8500/svc?token=hunter2#frag",
		"consul://127.0.0.1:8500/svc?%74oken=hunter2", // the parser decodes keys
		"consul://127.0.0.1:8500/svc?tok%65n=hunter2&tag=a",
		"consull://127.0.0.1:8500/svc?token=hunter2",      // an unknown scheme
		"consul://127.0.0.1:8500/svc?tag=a;token=hunter2", // ';' is refused, and the error quotes the target
		"consul://127.0.0.1:8500/svc?token=hunter2;tag=a",
		"consul://127.0.0.1:8500/svc?auth=hunter2",         // sensitiveKey's "auth"
		"consul://127.0.0.1:8500/svc?X-Auth=hunter2&tag=a", // matched anywhere in the key, any case
	} {
		if w, err := Watch(t.Context(), s); err == nil {
			w.Close()
			t.Errorf("Watch(%q) succeeded", s)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Watch(%q) error repeats the secret: %v", s, err)
		}
		tg, err := ParseTarget(s)
		if err != nil {
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("ParseTarget(%q) error repeats the secret: %v", s, err)
			}
			continue
		}
		if got := tg.String(); strings.Contains(got, "hunter2") || !strings.Contains(got, "REDACTED") {
			t.Errorf("Target(%q).String() = %q, want the secret redacted", s, got)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"consul://127.0.0.1:8500/svc?tag=a&dc=b", "consul://127.0.0.1:8500/svc?tag=a&dc=b"}, // nothing to hide
		{"consul://127.0.0.1:8500/svc?tag=a;dc=b&", "consul://127.0.0.1:8500/svc?tag=a;dc=b&"},
		{"consul://127.0.0.1:8500/svc?", "consul://127.0.0.1:8500/svc?"},
		{"consul://h:1/svc?tag=a;token=x&dc=b;key=y", "consul://h:1/svc?tag=a;token=REDACTED&dc=b;key=REDACTED"},
	} {
		if got := redactTarget(tc.in); got != tc.want {
			t.Errorf("redactTarget(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestTargetErrorsHideCredentialsWithSlashOrQuestionMark: a password with
// a "/" or a "?" in it (base64 passwords have "/") ends the authority
// early, so the "@" that ParseTarget refuses is not in what it takes for
// the authority. The target is still refused, and neither the error nor
// redactTarget may repeat the password.
func TestTargetErrorsHideCredentialsWithSlashOrQuestionMark(t *testing.T) {
	for _, s := range []string{
		"etcd://root:hunter2/x@127.0.0.1:2379/services/echo",
		"etcd://root:hun/ter2@127.0.0.1:2379/services/echo",
		"etcd://root:hunter2?x@127.0.0.1:2379/services/echo",
		"consul://hun/ter2@127.0.0.1:8500/echo",
		"consul://hun?ter2@127.0.0.1:8500/echo?tag=a",
	} {
		_, err := ParseTarget(s)
		if err == nil {
			t.Errorf("ParseTarget(%q) succeeded", s)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "hun/ter2") || strings.Contains(err.Error(), "hun?ter2") ||
			strings.Contains(err.Error(), "hun") {
			t.Errorf("ParseTarget(%q) error repeats the password: %v", s, err)
		}
		if !strings.Contains(err.Error(), "credentials") {
			t.Errorf("ParseTarget(%q) = %v; want it to say credentials are not allowed", s, err)
		}
		if got := redactTarget(s); strings.Contains(got, "hun") {
			t.Errorf("redactTarget(%q) = %q, repeats the password", s, got)
		}
	}
	// An "@" in a path or query of a valid target is not a credential.
	for _, s := range []string{"etcd:///services/a@b", "etcd://127.0.0.1:2379/services/a@b:1/x", "consul:///echo?filter=a@b"} {
		if _, err := ParseTarget(s); err != nil {
			t.Errorf("ParseTarget(%q) = %v, want it accepted", s, err)
		}
		if got := redactTarget(s); got != s {
			t.Errorf("redactTarget(%q) = %q, want it unchanged", s, got)
		}
	}
}
