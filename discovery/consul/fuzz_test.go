package consul

import (
	"encoding/json"
	"testing"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/hashicorp/consul/api"
)

// FuzzApply feeds arbitrary /v1/health/service answers, as the agent's JSON,
// to the code that turns them into endpoints (FAULTS row 20: garbage never
// panics). A body that is not JSON is the api client's error before this
// code runs; what decodes, however odd (missing services, nulls, negative
// ports, duplicate IDs, hostile addresses), must publish only valid,
// unique endpoints, or an error that leaves a set it had published.
func FuzzApply(f *testing.F) {
	f.Add([]byte(`[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"web-1","Service":"web","Address":"10.0.0.1","Port":8080,"Weights":{"Passing":1,"Warning":1}},"Checks":[{"Status":"passing"}]}]`))
	f.Add([]byte(`[{"Node":null,"Service":{"ID":"web","Service":"web","Port":70000}},null,{"Service":null}]`))
	f.Add([]byte(`[{"Node":{"Node":"n","Address":"0.0.0.0"},"Service":{"ID":"a","Address":"","Port":1,"Meta":{"zone":"z"}},"Checks":[{"Status":"warning"}]},{"Service":{"ID":"a","Address":"::1","Port":2}}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var entries []*api.ServiceEntry
		if json.Unmarshal(body, &entries) != nil {
			return
		}
		o := defaultOptions()
		o.allowWarning = len(body)%2 == 0
		w := &Watcher{service: "web", opts: o}
		good := []discovery.Endpoint{{ID: "kept", Addr: "10.9.9.9:80", Weight: 1}}
		w.pub.Update(good, w.pub.Current().Synced)
		keep, err := w.apply(entries, &api.QueryMeta{})
		s := w.pub.Current()
		if err != nil {
			if keep == nil && (len(s.Endpoints) != 1 || s.Endpoints[0].ID != "kept") {
				t.Fatalf("an answer apply refused (%v) changed the published set to %v", err, s.Endpoints)
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range s.Endpoints {
			if err := discovery.ValidateAddr(e.Addr); err != nil {
				t.Fatalf("published an invalid address %q: %v", e.Addr, err)
			}
			if seen[e.ID] || seen["addr "+e.Addr] {
				t.Fatalf("published %q (%s) twice", e.ID, e.Addr)
			}
			seen[e.ID], seen["addr "+e.Addr] = true, true
			if e.Weight < 1 {
				t.Fatalf("published %q with weight %d", e.ID, e.Weight)
			}
		}
	})
}
