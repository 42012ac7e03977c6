package discovery

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Limits on what a registry may hand us. An endpoint that exceeds one is
// rejected; the others are kept.
const (
	// MaxFieldLen is the longest ID, Addr, Zone, tag, meta key or meta value accepted.
	MaxFieldLen = 1024
	// MaxTags is the most tags an endpoint may carry.
	MaxTags = 64
	// MaxMeta is the most meta entries an endpoint may carry.
	MaxMeta = 64
)

// ErrInvalidAddr is wrapped by every error ValidateAddr returns.
var ErrInvalidAddr = errors.New("discovery: invalid address")

// ValidateAddr checks that addr is a dialable host:port for a service
// endpoint. It rejects a missing or out-of-range port (0 or above 65535), an
// empty host, whitespace, and IP addresses that cannot name a single remote
// service: unspecified (0.0.0.0, ::), multicast, broadcast and link-local
// (169.254.0.0/16, fe80::/10). Host names must be syntactically valid DNS
// names. The error wraps ErrInvalidAddr and names what is wrong.
//
// It is safe to call from any goroutine.
func ValidateAddr(addr string) error {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrInvalidAddr, addr, why) }
	if addr == "" {
		return bad("empty")
	}
	if len(addr) > MaxFieldLen {
		return bad("too long")
	}
	if strings.ContainsFunc(addr, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return bad("contains whitespace or control characters")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad("not host:port")
	}
	if host == "" {
		return bad("empty host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || port[0] == '+' || port[0] == '-' {
		return bad("port is not a number")
	}
	if p < 1 || p > 65535 {
		return bad("port " + port + " out of range 1-65535")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		switch {
		case ip.Zone() != "":
			return bad("IP zone not allowed")
		case ip.IsUnspecified():
			return bad("unspecified IP")
		case ip.IsMulticast():
			return bad("multicast IP")
		case ip.IsLinkLocalUnicast():
			return bad("link-local IP")
		case ip.Is4() && ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return bad("broadcast IP")
		case ip.Is4In6():
			return bad("IPv4-mapped IPv6 address; use the IPv4 form")
		}
		return nil
	}
	if !validHostname(host) {
		return bad("host is neither an IP address nor a valid DNS name")
	}
	return nil
}

// validHostname reports whether h is a syntactically valid DNS name:
// dot-separated labels of letters, digits, '-' and '_', 1-63 bytes each, not
// starting or ending with '-', 253 bytes at most, and not all-numeric (which
// would be a malformed IPv4 address).
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	allDigits := true
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				allDigits = false
			default:
				return false
			}
		}
	}
	return !allDigits
}

// Rejected is an endpoint a registry returned that was not published, with
// the reason.
type Rejected struct {
	Endpoint Endpoint
	Err      error
}

// Sanitize validates a registry answer. It returns the endpoints that may be
// published, sorted by ID, and the rejected ones with a reason each:
// an invalid address (see ValidateAddr), an oversized field, a duplicate ID,
// or a duplicate address (the endpoint with the smaller ID is kept). A weight
// below 1 becomes 1 and an empty ID becomes the address. The input slice is
// not modified; the returned endpoints share Tags and Meta with it.
//
// Watcher implementations call it before Publisher.Update, from their own
// goroutine. It is safe to call from any goroutine.
func Sanitize(in []Endpoint) (valid []Endpoint, rejected []Rejected) {
	// Sort the IDs of the endpoints that pass the field checks, with their
	// input positions (a registry usually answers in order already), and
	// copy each endpoint once, into its sorted place: a large answer is
	// neither copied twice nor moved around by the sort.
	type key struct {
		id string
		i  int32 // position in in; also keeps input order among equal IDs
	}
	keys := make([]key, 0, len(in))
	for i := range in {
		e := defaulted(in[i])
		if err := checkFields(e); err != nil {
			rejected = append(rejected, Rejected{e, err})
			continue
		}
		keys = append(keys, key{e.ID, int32(i)})
	}
	byID := func(a, b key) int {
		if c := strings.Compare(a.id, b.id); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	}
	if !slices.IsSortedFunc(keys, byID) {
		slices.SortFunc(keys, byID)
	}
	valid = make([]Endpoint, 0, len(keys))
	seenAddr := make(map[string]string, len(keys))
	for k, kv := range keys {
		e := defaulted(in[kv.i])
		if k > 0 && keys[k-1].id == kv.id { // the first one wins
			rejected = append(rejected, Rejected{e, fmt.Errorf("discovery: duplicate endpoint ID %q", e.ID)})
			continue
		}
		if first, dup := seenAddr[e.Addr]; dup {
			rejected = append(rejected, Rejected{e, fmt.Errorf("discovery: endpoint %q: address %s already used by %q", e.ID, e.Addr, first)})
			continue
		}
		seenAddr[e.Addr] = e.ID
		valid = append(valid, e)
	}
	return valid, rejected
}

// defaulted returns e with Sanitize's defaults: the address as ID when it
// has none, and weight 1 when below.
func defaulted(e Endpoint) Endpoint {
	if e.ID == "" {
		e.ID = e.Addr
	}
	if e.Weight < 1 {
		e.Weight = 1
	}
	return e
}

func checkFields(e Endpoint) error {
	if err := ValidateAddr(e.Addr); err != nil {
		return fmt.Errorf("endpoint %q: %w", truncate(e.ID), err)
	}
	tooLong := func(what, s string) error {
		if len(s) > MaxFieldLen {
			return fmt.Errorf("discovery: endpoint %q: %s longer than %d bytes", truncate(e.ID), what, MaxFieldLen)
		}
		return nil
	}
	if err := tooLong("ID", e.ID); err != nil {
		return err
	}
	if err := tooLong("zone", e.Zone); err != nil {
		return err
	}
	if len(e.Tags) > MaxTags {
		return fmt.Errorf("discovery: endpoint %q: %d tags, more than %d", truncate(e.ID), len(e.Tags), MaxTags)
	}
	for _, t := range e.Tags {
		if err := tooLong("tag", t); err != nil {
			return err
		}
	}
	if len(e.Meta) > MaxMeta {
		return fmt.Errorf("discovery: endpoint %q: %d meta entries, more than %d", truncate(e.ID), len(e.Meta), MaxMeta)
	}
	for k, v := range e.Meta {
		if err := tooLong("meta key", k); err != nil {
			return err
		}
		if err := tooLong("meta value", v); err != nil {
			return err
		}
	}
	return nil
}

// truncate shortens s for error messages so a hostile registry cannot make
// our errors huge.
func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
