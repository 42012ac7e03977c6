package etcd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dialtone-go/dialtone/discovery"
)

// MaxValueSize is the largest etcd value ParseValue accepts. A registration
// is a host:port and a little metadata; anything bigger is hostile or a
// mistake, and is dropped without being decoded.
const MaxValueSize = 64 << 10

// errCritical marks a value whose metadata says the endpoint is critical:
// valid, but never published. The watcher drops it quietly.
var errCritical = errors.New("health is critical")

// opAdd and opDelete are the values of the "Op" field that etcd's naming
// package writes (naming/endpoints/internal.Operation). Stored values always
// carry opAdd; opDelete exists only in the wire format of watch deltas.
const (
	opAdd    = 0
	opDelete = 1
)

// wireValue is the JSON that etcd's naming package stores under each key
// (naming/endpoints/internal.Update). Field names and order match it, so
// json.Marshal produces the same bytes etcd's endpoints.Manager writes.
type wireValue struct {
	Op       int
	Addr     string
	Metadata any
}

// wireMeta is what dialtone keeps inside Metadata. Unknown keys are ignored,
// so metadata written for other consumers (a gRPC attribute map, say) does
// not stop the endpoint from being discovered.
type wireMeta struct {
	Weight int               `json:"weight,omitempty"`
	Zone   string            `json:"zone,omitempty"`
	Tags   []string          `json:"tags,omitempty"`
	Meta   map[string]string `json:"meta,omitempty"`
	Health string            `json:"health,omitempty"` // "", "healthy", "degraded" or "critical"
}

// ParseValue decodes the value stored under key, which must be prefix + "/"
// + ID (a trailing "/" on prefix is ignored). The value is the JSON etcd's
// naming package writes: {"Op":0,"Addr":"host:port","Metadata":...}. When
// Metadata is a JSON object, its keys weight, zone, tags, meta and health
// fill the Endpoint; any other Metadata (null, a string, a number, an array)
// is ignored and the defaults apply (weight 1, healthy).
//
// The error names the key and says what is wrong: an oversized value
// (MaxValueSize), invalid JSON, an Op other than add, a missing or invalid
// address (see discovery.ValidateAddr), a metadata field of the wrong type,
// or an unknown or critical health. The Endpoint is not passed through
// discovery.Sanitize; the Watcher does that for the whole set.
//
// ParseValue is a pure function, safe from any goroutine. It never panics.
func ParseValue(key, prefix string, value []byte) (discovery.Endpoint, error) {
	bad := func(format string, args ...any) (discovery.Endpoint, error) {
		return discovery.Endpoint{}, fmt.Errorf("etcd: key %q: "+format, append([]any{clip(key)}, args...)...)
	}
	dir := keyPrefix(prefix)
	id, ok := strings.CutPrefix(key, dir)
	if !ok {
		return bad("not under prefix %q", clip(dir))
	}
	if id == "" {
		return bad("empty ID after the prefix")
	}
	if len(value) > MaxValueSize {
		return bad("value is %d bytes, more than %d", len(value), MaxValueSize)
	}
	var w struct {
		Op       json.RawMessage
		Addr     *string
		Metadata json.RawMessage
	}
	if err := json.Unmarshal(value, &w); err != nil {
		return bad("value is not the JSON object etcd's naming package writes (%v); starts with %q", err, clip(string(value)))
	}
	if len(w.Op) > 0 && !bytes.Equal(w.Op, []byte("null")) {
		var op int
		if err := json.Unmarshal(w.Op, &op); err != nil {
			return bad("Op %q is not a number", clip(string(w.Op)))
		}
		if op != opAdd {
			return bad("Op is %d, want %d (add)", op, opAdd)
		}
	}
	if w.Addr == nil {
		return bad(`no "Addr" field`)
	}
	if err := discovery.ValidateAddr(*w.Addr); err != nil {
		return discovery.Endpoint{}, fmt.Errorf("etcd: key %q: %w", clip(key), err)
	}
	e := discovery.Endpoint{ID: id, Addr: *w.Addr, Weight: 1, Health: discovery.Healthy}
	meta := bytes.TrimLeft(w.Metadata, " \t\r\n")
	if len(meta) == 0 || meta[0] != '{' {
		return e, nil // absent, null or not an object: defaults apply
	}
	// Tags and meta are decoded only once counted: a value under
	// MaxValueSize may list 20,000 tags, 1.6 MiB decoded, which Sanitize
	// would reject anyway (discovery.MaxTags, MaxMeta).
	var raw struct {
		wireMeta
		Tags json.RawMessage `json:"tags,omitempty"`
		Meta json.RawMessage `json:"meta,omitempty"`
	}
	if err := json.Unmarshal(meta, &raw); err != nil {
		return bad("Metadata: %v", err)
	}
	m := raw.wireMeta
	if n := jsonElements(raw.Tags); n > discovery.MaxTags {
		return bad("Metadata: %d tags, more than %d", n, discovery.MaxTags)
	}
	if n := jsonElements(raw.Meta); n > discovery.MaxMeta {
		return bad("Metadata: %d meta entries, more than %d", n, discovery.MaxMeta)
	}
	for _, f := range []struct {
		raw json.RawMessage
		to  any
	}{{raw.Tags, &m.Tags}, {raw.Meta, &m.Meta}} {
		if len(f.raw) > 0 {
			if err := json.Unmarshal(f.raw, f.to); err != nil {
				return bad("Metadata: %v", err)
			}
		}
	}
	if m.Weight > 0 {
		e.Weight = m.Weight
	}
	e.Zone, e.Tags, e.Meta = m.Zone, m.Tags, m.Meta
	switch m.Health {
	case "", "healthy", "passing":
		e.Health = discovery.Healthy
	case "degraded", "warning":
		e.Health = discovery.Degraded
	case "critical":
		return discovery.Endpoint{}, fmt.Errorf("etcd: key %q: %w", clip(key), errCritical)
	default:
		return bad("Metadata: unknown health %q (want healthy, degraded or critical)", clip(m.Health))
	}
	return e, nil
}

// FormatValue encodes e as the value to store under PREFIX/ID: the JSON
// etcd's naming package writes, with weight, zone, tags, meta and health
// inside Metadata, e.g.
//
//	{"Op":0,"Addr":"10.0.0.1:9000","Metadata":{"weight":2,"zone":"a"}}
//
// Zero fields are omitted; health is written only when it is degraded. It
// fails when e.Addr is invalid (discovery.ValidateAddr), when the health is
// unknown, or when the result would exceed MaxValueSize. Safe from any
// goroutine.
func FormatValue(e discovery.Endpoint) ([]byte, error) {
	if err := discovery.ValidateAddr(e.Addr); err != nil {
		return nil, fmt.Errorf("etcd: endpoint %q: %w", clip(e.ID), err)
	}
	m := wireMeta{Weight: max(e.Weight, 1), Zone: e.Zone, Tags: e.Tags, Meta: e.Meta}
	switch e.Health {
	case discovery.Healthy:
	case discovery.Degraded:
		m.Health = "degraded"
	default:
		return nil, fmt.Errorf("etcd: endpoint %q: cannot store health %v", clip(e.ID), e.Health)
	}
	b, err := json.Marshal(wireValue{Op: opAdd, Addr: e.Addr, Metadata: m})
	if err != nil {
		return nil, fmt.Errorf("etcd: endpoint %q: %w", clip(e.ID), err)
	}
	if len(b) > MaxValueSize {
		return nil, fmt.Errorf("etcd: endpoint %q: value is %d bytes, more than %d", clip(e.ID), len(b), MaxValueSize)
	}
	return b, nil
}

// jsonElements returns the number of elements of the JSON array, or
// members of the JSON object, raw (valid JSON, which json.Unmarshal
// checked); 0 for anything else.
func jsonElements(raw json.RawMessage) int {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || (raw[0] != '[' && raw[0] != '{') {
		return 0
	}
	if len(bytes.TrimSpace(raw[1:len(raw)-1])) == 0 {
		return 0
	}
	n, depth, inStr, esc := 1, 0, false, false
	for _, b := range raw {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case b == '\\':
				esc = true
			case b == '"':
				inStr = false
			}
		case b == '"':
			inStr = true
		case b == '[' || b == '{':
			depth++
		case b == ']' || b == '}':
			depth--
		case b == ',' && depth == 1:
			n++
		}
	}
	return n
}

// keyPrefix returns the directory under which a service's keys live:
// prefix with exactly one trailing "/".
func keyPrefix(prefix string) string {
	return strings.TrimRight(prefix, "/") + "/"
}

// clip shortens s for error messages, so a hostile registry cannot make our
// errors and logs huge.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
