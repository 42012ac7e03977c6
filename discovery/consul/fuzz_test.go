package consul

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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

// FAULTS row 22 (heap growth <= body cap + 1 MiB) for an answer whose
// amplification is not in the number of entries, which the entry counter
// bounds, but inside one: a health check decodes to an api.HealthCheck of
// hundreds of bytes from the 3 bytes of "{},", and a tag to a 16-byte
// string header from the 3 bytes of `"",`. One entry listing millions of
// them passes the entry cap and decodes them all.
func TestNestedTinyElementsBoundedLikeEntries(t *testing.T) {
	const bodyCap = 16 << 20
	for _, tc := range []struct{ name, huge string }{
		{"checks", `[{"Service":{"Port":1},"Checks":[` + strings.Repeat(`{},`, 8<<20/3) + `{}]}]`},
		{"tags", `[{"Service":{"Port":1,"Tags":[` + strings.Repeat(`"",`, 8<<20/3) + `""]}}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := entriesJSON(t, "10.0.0.1:80")
			f := newFakeAgent(t, func(r *http.Request, n int) (int, string, string) {
				if n == 1 {
					return 200, "10", good
				}
				return 200, "11", tc.huge
			})
			s, grew := allocatedForNext(t, f, bodyCap, 10*time.Second, "the next answer", func(s discovery.State) bool { return s.Version > 1 || s.Err != nil })
			t.Logf("%d MiB allocated reading an 8 MiB answer of one entry with millions of %s (err %v, endpoints %q)", grew>>20, tc.name, s.Err, addrsOf(s))
			if grew > bodyCap+1<<20 {
				t.Errorf("%d MiB allocated reading one answer; want at most the body cap + 1 MiB (%d MiB)", grew>>20, (bodyCap+1<<20)>>20)
			}
			if s.Err != nil && !errors.Is(s.Err, ErrResponseTooLarge) {
				t.Errorf("err %v; want ErrResponseTooLarge if any", s.Err)
			}
		})
	}
}

// FuzzEntryCounter: the health answer's scanner never panics, whatever the
// body (it runs before the JSON is known to be valid), and passes the
// bytes through unchanged.
func FuzzEntryCounter(f *testing.F) {
	for _, s := range []string{`[{"Checks":[{},{}],"Service":{"Tags":["a","b"]}}]`, `]][[`, `[[[[[`, `["\"[",{"a":[1,2]}]`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		c := &entryCounter{rc: io.NopCloser(strings.NewReader(body)), max: 3, budget: 1000}
		got, err := io.ReadAll(c)
		if err == nil && string(got) != body {
			t.Fatalf("passed %q as %q", body, got)
		}
		if err != nil && !errors.Is(err, ErrResponseTooLarge) {
			t.Fatalf("error %v", err)
		}
	})
}
