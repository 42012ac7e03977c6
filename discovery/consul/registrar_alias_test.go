package consul

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/consultest"
)

// NewRegistrar keeps what it registers: a caller that reuses its
// Registration (its Meta map, its Tags slice) for the next instance must
// not race with, or change, the registrations again that the Registrar's
// goroutine sends (the etcd Registrar formats its value once). Under -race
// the old code fails here with a data race on the Meta map.
func TestRegistrarKeepsItsOwnCopyOfMetaAndTags(t *testing.T) {
	a := consultest.Start(t)
	var registers atomic.Int32
	front := agentFront(t, a.Addr(), func(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/check/update/") {
			// The agent forgot the check: every keep-alive registers again.
			http.Error(w, "Unknown check", http.StatusNotFound)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/v1/agent/service/register") {
			registers.Add(1)
		}
		rp.ServeHTTP(w, r)
	})
	reg := Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001", Tags: []string{"v1"},
		Meta: map[string]string{"zone": "a"}, Check: Check{TTL: 300 * time.Millisecond}}
	r, err := NewRegistrar(context.Background(), reg, WithAddress(front))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The caller goes on to build another instance from the same value.
	deadline := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		reg.Meta["zone"] = fmt.Sprint("b", i)
		reg.Tags[0] = "v2"
		time.Sleep(time.Millisecond)
	}
	if n := registers.Load(); n < 3 {
		t.Fatalf("%d registrations; want the keep-alives to have registered again", n)
	}
	svcs, err := agentClient(t, a).Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	s := svcs["web-1"]
	if s == nil || s.Meta["zone"] != "a" || len(s.Tags) != 1 || s.Tags[0] != "v1" {
		t.Fatalf("the agent has %+v; want the instance as registered (zone a, tag v1)", s)
	}
}
