package discovery

import (
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
	valid = make([]Endpoint, 0, len(in))
	for _, e := range in {
		if e.ID == "" {
			e.ID = e.Addr
		}
		if e.Weight < 1 {
			e.Weight = 1
		}
		if err := checkFields(e); err != nil {
			rejected = append(rejected, Rejected{e, err})
			continue
		}
		valid = append(valid, e)
	}
	// Sort by ID, keeping input order among equal IDs (the first one wins
	// below). A registry usually answers in order already; otherwise sort
	// indexes, which is cheaper than moving whole endpoints.
	byID := func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) }
	if !slices.IsSortedFunc(valid, byID) {
		idx := make([]int32, len(valid))
		for i := range idx {
			idx[i] = int32(i)
		}
		slices.SortFunc(idx, func(a, b int32) int {
			if c := byID(valid[a], valid[b]); c != 0 {
				return c
			}
			return int(a - b)
		})
		sorted := make([]Endpoint, len(valid))
		for i, j := range idx {
			sorted[i] = valid[j]
		}
		valid = sorted
	}
	seenAddr := make(map[string]string, len(valid))
	out := valid[:0]
	for i, e := range valid {
		if i > 0 && valid[i-1].ID == e.ID {
			rejected = append(rejected, Rejected{e, fmt.Errorf("discovery: duplicate endpoint ID %q", e.ID)})
			continue
		}
		if first, dup := seenAddr[e.Addr]; dup {
			rejected = append(rejected, Rejected{e, fmt.Errorf("discovery: endpoint %q: address %s already used by %q", e.ID, e.Addr, first)})
			continue
		}
		seenAddr[e.Addr] = e.ID
		out = append(out, e)
	}
	return out, rejected
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
