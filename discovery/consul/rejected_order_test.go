package consul

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/hashicorp/consul/api"
)

// Consul's order of the instances is not fixed: with near (WithNear, or
// ?near= in the target) it sorts them by round-trip time, which moves. An
// answer whose every instance is rejected, the same instances for the same
// reasons, must read the same in whatever order they come, or the
// Publisher takes each answer for a new error and wakes the consumer.
func TestAllRejectedInAnyOrderIsOneErrorVersion(t *testing.T) {
	entries := func(idAddr ...string) string {
		var out []*api.ServiceEntry
		for i := 0; i < len(idAddr); i += 2 {
			host, port, _ := net.SplitHostPort(idAddr[i+1])
			p, _ := strconv.Atoi(port)
			out = append(out, &api.ServiceEntry{
				Node:    &api.Node{Node: "n-" + idAddr[i], Address: "10.9.9.9"},
				Service: &api.AgentService{ID: idAddr[i], Service: "web", Address: host, Port: p, Weights: api.AgentWeights{Passing: 1, Warning: 1}},
				Checks:  api.HealthChecks{{Status: api.HealthPassing}},
			})
		}
		b, err := json.Marshal(out)
		if err != nil {
			t.Error(err)
		}
		return string(b)
	}
	f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
		switch {
		case n == 1:
			return 200, "10", entries("a", "10.0.0.1:80", "b", "10.0.0.2:80")
		case n%2 == 0: // a bad deploy: both rejected, in one order...
			return 200, "11", entries("a", "0.0.0.0:80", "b", "10.0.0.2:0")
		default: // ...or the other
			return 200, "11", entries("b", "10.0.0.2:0", "a", "0.0.0.0:80")
		}
	})
	w, err := New("web", append(fast, WithAddress(f.addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := nextWhere(t, w, 5*time.Second, "the all-rejected error", func(s discovery.State) bool { return s.Err != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var later []discovery.State
	for {
		s, err := w.Next(ctx)
		if err != nil {
			break
		}
		later = append(later, s)
	}
	if n := w.Stats().Errors; n < 5 {
		t.Fatalf("only %d rejected answers", n)
	}
	if len(later) > 0 {
		t.Fatalf("%d more Versions for %d answers that reject the same instances in another order; the error changed from\n%v\nto\n%v",
			len(later), w.Stats().Errors, first.Err, later[0].Err)
	}
}
