package consul

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// CONSUL_HTTP_SSL set to something that is not a boolean ("yes", "on") is
// refused with an error naming the variable, by New, by the consul:// target
// and by NewRegistrar, before any request: Consul's client only logs a
// warning for it and talks plaintext, sending the token in clear to an agent
// the operator asked to reach over TLS. This is the same silent downgrade
// checkSSLVerifyEnv refuses for CONSUL_HTTP_SSL_VERIFY.
func TestSSLNotBooleanInEnvironmentIsRefused(t *testing.T) {
	f := newFakeAgent(t, func(*http.Request, int) (int, string, string) { return 200, "1", "[]" })
	for _, v := range []string{"yes", "on", "https"} {
		t.Setenv("CONSUL_HTTP_SSL", v)
		check := func(what string, err error) {
			t.Helper()
			if err == nil || !strings.Contains(err.Error(), "CONSUL_HTTP_SSL") {
				t.Errorf("%s with CONSUL_HTTP_SSL=%s = %v, want an error naming the variable", what, v, err)
			}
		}
		// The linger gives a watcher made by mistake the time to send
		// its first (plaintext) read.
		tryConstructors(t, f.addr(), 100*time.Millisecond, check, WithToken("s3cr3t"))
	}
	if n := f.n.Load(); n != 0 {
		t.Errorf("%d plaintext requests reached the agent while CONSUL_HTTP_SSL asked for TLS", n)
	}
	for _, v := range []string{"true", "false", "1", "0"} {
		t.Setenv("CONSUL_HTTP_SSL", v)
		w, err := New("web", WithAddress(f.addr()))
		if err != nil {
			t.Fatalf("New with CONSUL_HTTP_SSL=%s = %v", v, err)
		}
		w.Close()
	}
}

// An agent address that holds credentials (user:password@host:port, in
// CONSUL_HTTP_ADDR or WithAddress) is refused without echoing them, as the
// consul:// target and the etcd endpoints are: Consul's client would take
// "user:password@host:port" whole as a host name, fail every request, and
// put the password in each error, which the watcher publishes in State.Err
// and logs.
func TestAddressWithCredentialsNeverLeaks(t *testing.T) {
	const pw = "p4ssw0rd-value"
	f := newFakeAgent(t, func(*http.Request, int) (int, string, string) { return 200, "1", "[]" })
	addr := "http://alice:" + pw + "@" + f.addr()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	leaked := func(what string, err error) {
		t.Helper()
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("%s: the password leaked into the error: %v", what, err)
		}
	}
	w, err := New("web", append(fast, WithAddress(addr), WithLogger(log))...)
	leaked("New", err)
	if err == nil {
		s := nextWhere(t, w, 5*time.Second, "an answer or an error", func(discovery.State) bool { return true })
		w.Close()
		leaked("State.Err", s.Err)
		t.Errorf("New with credentials in WithAddress = nil error; State.Err %v", s.Err)
	}
	t.Setenv("CONSUL_HTTP_ADDR", addr)
	dw, err := discovery.Watch(t.Context(), "consul:///web")
	leaked("Watch", err)
	if err == nil {
		s, _ := dw.Next(t.Context())
		dw.Close()
		leaked("State.Err", s.Err)
		t.Errorf("consul:///web with credentials in CONSUL_HTTP_ADDR = nil error; State.Err %v", s.Err)
	} else if !strings.Contains(err.Error(), "CONSUL_HTTP_ADDR") {
		t.Errorf("error %v does not name CONSUL_HTTP_ADDR", err)
	}
	r, err := NewRegistrar(t.Context(), Registration{Name: "web", Addr: "127.0.0.1:9001", Check: Check{TTL: 10 * time.Second}})
	leaked("NewRegistrar", err)
	if err == nil {
		r.Close()
		t.Error("NewRegistrar with credentials in CONSUL_HTTP_ADDR = nil error")
	}
	if strings.Contains(logs.String(), pw) {
		t.Errorf("the password leaked into the logs:\n%s", logs.String())
	}
}
