package etcd

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/dialtone-go/dialtone/discovery"
)

func TestParseValue(t *testing.T) {
	cases := []struct {
		name    string
		key     string
		value   string
		want    discovery.Endpoint
		wantErr string // substring; "" means success
	}{
		{"etcd manager, no metadata", "svc/a", `{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}`,
			discovery.Endpoint{ID: "a", Addr: "10.0.0.1:80", Weight: 1}, ""},
		{"no Op field", "svc/a", `{"Addr":"host.example:443"}`,
			discovery.Endpoint{ID: "a", Addr: "host.example:443", Weight: 1}, ""},
		{"string metadata ignored", "svc/a", `{"Addr":"10.0.0.1:80","Metadata":"x"}`,
			discovery.Endpoint{ID: "a", Addr: "10.0.0.1:80", Weight: 1}, ""},
		{"number metadata ignored", "svc/a", `{"Addr":"10.0.0.1:80","Metadata":42}`,
			discovery.Endpoint{ID: "a", Addr: "10.0.0.1:80", Weight: 1}, ""},
		{"array metadata ignored", "svc/a", `{"Addr":"10.0.0.1:80","Metadata":[1]}`,
			discovery.Endpoint{ID: "a", Addr: "10.0.0.1:80", Weight: 1}, ""},
		{"full metadata", "svc/a/b", `{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"weight":2,"zone":"z","tags":["x","y"],"meta":{"k":"v"},"health":"degraded","other":true}}`,
			discovery.Endpoint{ID: "a/b", Addr: "10.0.0.1:80", Weight: 2, Zone: "z", Tags: []string{"x", "y"}, Meta: map[string]string{"k": "v"}, Health: discovery.Degraded}, ""},
		{"weight 0 is 1", "svc/a", `{"Addr":"10.0.0.1:80","Metadata":{"weight":0}}`,
			discovery.Endpoint{ID: "a", Addr: "10.0.0.1:80", Weight: 1}, ""},
		{"prefix with slash", "svc/a", `{"Addr":"10.0.0.1:80"}`,
			discovery.Endpoint{ID: "a", Addr: "10.0.0.1:80", Weight: 1}, ""},

		{"truncated", "svc/a", `{"Op":0,"Addr":"10.0.0.1:`, discovery.Endpoint{}, `key "svc/a": value is not the JSON`},
		{"html", "svc/a", `<html>502 Bad Gateway</html>`, discovery.Endpoint{}, `starts with "<html>`},
		{"empty", "svc/a", ``, discovery.Endpoint{}, "not the JSON"},
		{"null", "svc/a", `null`, discovery.Endpoint{}, `no "Addr"`},
		{"no addr", "svc/a", `{"Metadata":{}}`, discovery.Endpoint{}, `no "Addr"`},
		{"delete op", "svc/a", `{"Op":1,"Addr":"10.0.0.1:80"}`, discovery.Endpoint{}, "Op is 1"},
		{"op string", "svc/a", `{"Op":"add","Addr":"10.0.0.1:80"}`, discovery.Endpoint{}, "not a number"},
		{"port 0", "svc/a", `{"Addr":"10.0.0.1:0"}`, discovery.Endpoint{}, "out of range"},
		{"port 65536", "svc/a", `{"Addr":"10.0.0.1:65536"}`, discovery.Endpoint{}, "out of range"},
		{"empty host", "svc/a", `{"Addr":":80"}`, discovery.Endpoint{}, "empty host"},
		{"unspecified", "svc/a", `{"Addr":"0.0.0.0:80"}`, discovery.Endpoint{}, "unspecified"},
		{"link-local", "svc/a", `{"Addr":"169.254.1.1:80"}`, discovery.Endpoint{}, "link-local"},
		{"weight string", "svc/a", `{"Addr":"10.0.0.1:80","Metadata":{"weight":"2"}}`, discovery.Endpoint{}, "Metadata"},
		{"weight float", "svc/a", `{"Addr":"10.0.0.1:80","Metadata":{"weight":1.5}}`, discovery.Endpoint{}, "Metadata"},
		{"unknown health", "svc/a", `{"Addr":"10.0.0.1:80","Metadata":{"health":"sick"}}`, discovery.Endpoint{}, "unknown health"},
		{"critical", "svc/a", `{"Addr":"10.0.0.1:80","Metadata":{"health":"critical"}}`, discovery.Endpoint{}, "critical"},
		{"other prefix", "svc2/a", `{"Addr":"10.0.0.1:80"}`, discovery.Endpoint{}, "not under prefix"},
		{"no id", "svc/", `{"Addr":"10.0.0.1:80"}`, discovery.Endpoint{}, "empty ID"},
		{"huge", "svc/a", `{"Addr":"10.0.0.1:80","x":"` + strings.Repeat("a", MaxValueSize) + `"}`, discovery.Endpoint{}, "more than 65536"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prefix := "svc"
			if c.name == "prefix with slash" {
				prefix = "svc/"
			}
			got, err := ParseValue(c.key, prefix, []byte(c.value))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.HasPrefix(err.Error(), "etcd: key ") {
					t.Fatalf("err = %v; want an error starting with 'etcd: key' containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !got.Equal(c.want) {
				t.Fatalf("got %+v; want %+v", got, c.want)
			}
		})
	}
}

func TestParseValueInvalidAddrWraps(t *testing.T) {
	_, err := ParseValue("svc/a", "svc", []byte(`{"Addr":"224.0.0.1:80"}`))
	if !errors.Is(err, discovery.ErrInvalidAddr) {
		t.Fatalf("err = %v; want it to wrap discovery.ErrInvalidAddr", err)
	}
}

func TestFormatValue(t *testing.T) {
	e := discovery.Endpoint{ID: "n1", Addr: "10.0.0.1:80", Weight: 2, Zone: "a", Tags: []string{"x"}, Meta: map[string]string{"k": "v"}}
	b, err := FormatValue(e)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"weight":2,"zone":"a","tags":["x"],"meta":{"k":"v"}}}`
	if string(b) != want {
		t.Fatalf("FormatValue = %s\nwant          %s", b, want)
	}
	// Same shape as etcd's naming/endpoints/internal.Update.
	var up struct {
		Op       uint8
		Addr     string
		Metadata any
	}
	if err := json.Unmarshal(b, &up); err != nil || up.Addr != e.Addr || up.Op != 0 {
		t.Fatalf("etcd's struct reads %+v, %v", up, err)
	}
	back, err := ParseValue("svc/n1", "svc", b)
	if err != nil || !back.Equal(e) {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, e)
	}

	plain, _ := FormatValue(discovery.Endpoint{Addr: "10.0.0.1:80"})
	if string(plain) != `{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"weight":1}}` {
		t.Errorf("minimal value = %s", plain)
	}
	if d, _ := FormatValue(discovery.Endpoint{Addr: "10.0.0.1:80", Health: discovery.Degraded}); !strings.Contains(string(d), `"health":"degraded"`) {
		t.Errorf("degraded value = %s", d)
	}
	if _, err := FormatValue(discovery.Endpoint{Addr: "10.0.0.1:0"}); !errors.Is(err, discovery.ErrInvalidAddr) {
		t.Errorf("invalid address: err = %v", err)
	}
	if _, err := FormatValue(discovery.Endpoint{Addr: "10.0.0.1:80", Health: 7}); err == nil {
		t.Errorf("unknown health accepted")
	}
}

// FuzzParseValue: ParseValue never panics; whatever it accepts has a valid
// address and a weight >= 1, and survives FormatValue and ParseValue again.
func FuzzParseValue(f *testing.F) {
	for _, s := range []string{
		`{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}`,
		`{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"weight":2,"zone":"z","tags":["x"],"meta":{"k":"v"},"health":"degraded"}}`,
		`{"Addr":"[::1]:80","Metadata":"x"}`,
		`{"Op":1,"Addr":"10.0.0.1:80"}`,
		`{"Op":0,"Addr":"10.0.0.1:`,
		`<html>502</html>`,
		`{"Addr":"h:1","Metadata":{"weight":-5,"meta":{"a":"\u0000"}}}`,
		``, `null`, `[]`, `{}`,
	} {
		f.Add("svc/a", s)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		e, err := ParseValue(key, "svc", []byte(value))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "etcd: key ") {
				t.Fatalf("error %q does not start with 'etcd: key'", err)
			}
			return
		}
		if err := discovery.ValidateAddr(e.Addr); err != nil {
			t.Fatalf("accepted invalid address: %v", err)
		}
		if e.Weight < 1 || e.ID == "" || "svc/"+e.ID != key {
			t.Fatalf("accepted %+v for key %q", e, key)
		}
		b, err := FormatValue(e)
		if err != nil {
			if strings.Contains(err.Error(), "more than") {
				return // JSON escaping can grow a value past MaxValueSize
			}
			t.Fatalf("FormatValue(%+v): %v", e, err)
		}
		back, err := ParseValue(key, "svc", b)
		if err != nil || !back.Equal(e) {
			t.Fatalf("round trip of %+v: %+v, %v", e, back, err)
		}
	})
}

// A value under MaxValueSize may list 20,000 tags (`"",` is 3 bytes; each
// decodes to a 16-byte string header, in a slice that doubles as it
// grows), which Sanitize rejects only after they are decoded, and which the
// watcher's snapshot keeps until the key changes: 1.6 MiB allocated and 320
// KiB kept per 60 KiB key (FAULTS row 22). More tags or meta entries than an
// endpoint may carry (discovery.MaxTags, MaxMeta) are refused before they
// are decoded, with the same reason.
func TestParseValueRefusesTooManyTagsBeforeDecoding(t *testing.T) {
	for _, tc := range []struct{ what, value string }{
		{"tags", `{"Addr":"10.0.0.1:80","Metadata":{"tags":[` + strings.Repeat(`"",`, 60<<10/3) + `""]}}`},
		{"meta", `{"Addr":"10.0.0.1:80","Metadata":{"meta":{` + strings.Repeat(`"":"",`, 60<<10/6) + `"a":""}}}`},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := ParseValue("svc/a", "svc", []byte(tc.value))
		runtime.ReadMemStats(&after)
		grew := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d-byte value: %d KiB allocated, %v", tc.what, len(tc.value), grew>>10, err)
		if err == nil || !strings.Contains(err.Error(), tc.what) || !strings.Contains(err.Error(), "more than 64") {
			t.Errorf("%s: err %v; want an error saying there are more %s than 64", tc.what, err, tc.what)
		}
		if grew > 4*uint64(len(tc.value)) {
			t.Errorf("%s: %d KiB allocated for a %d KiB value; want at most 4 times the value", tc.what, grew>>10, len(tc.value)>>10)
		}
	}
	ok := `{"Addr":"10.0.0.1:80","Metadata":{"tags":[` + strings.Repeat(`"t",`, 63) + `"t"],"meta":{"a":"1","b":"2"}}}`
	if e, err := ParseValue("svc/a", "svc", []byte(ok)); err != nil || len(e.Tags) != 64 || len(e.Meta) != 2 {
		t.Errorf("64 tags and 2 meta entries: %+v, %v", e, err)
	}
}
