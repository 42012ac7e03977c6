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
// names, and not numbers a C resolver reads as an IPv4 address ("0x7f.1",
// "0xa9fea9fe": hex, octal, or fewer than four parts). The error wraps
// ErrInvalidAddr and names what is wrong.
//
// Other spellings of a valid address (see CanonicalAddr) are valid.
//
// It is safe to call from any goroutine.
func ValidateAddr(addr string) error {
	_, err := CanonicalAddr(addr)
	return err
}

// CanonicalAddr checks addr as ValidateAddr does and returns its canonical
// spelling, the one Sanitize publishes, so that two spellings of one
// address compare equal:
//
//   - an IP address in the form net/netip prints: IPv4 dotted decimal
//     without brackets ("[10.0.0.1]:80" becomes "10.0.0.1:80"), IPv6
//     lower-case and compressed, in brackets ("[2001:DB8:0:0::1]:80"
//     becomes "[2001:db8::1]:80");
//   - a host name in lower case, without brackets ("[Orders.Example]:80"
//     becomes "orders.example:80"). A trailing dot is kept: "orders." is an
//     absolute name and "orders" one a resolver may complete with its
//     search domains (Kubernetes' ndots:5 does so for any name with fewer
//     than five dots), so they are different addresses;
//   - the port in decimal without leading zeros ("10.0.0.1:0080" becomes
//     "10.0.0.1:80").
//
// An address already canonical is returned as it is, without allocating.
// The error, like ValidateAddr's, wraps ErrInvalidAddr and names what is
// wrong.
//
// It is safe to call from any goroutine.
func CanonicalAddr(addr string) (string, error) {
	// The address comes from a registry: quote at most its start.
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w %q: %s", ErrInvalidAddr, truncate(addr), why)
	}
	if addr == "" {
		return bad("empty")
	}
	if len(addr) > MaxFieldLen {
		return bad(fmt.Sprintf("too long (%d bytes, at most %d)", len(addr), MaxFieldLen))
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
	p, why := parsePort(port)
	if why != "" {
		return bad(why)
	}
	if ip, ok := parseIP(host); ok {
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
		if ip.Is4() && addr[0] != '[' && port[0] != '0' {
			// netip accepts one spelling of an IPv4 address (no leading
			// zeros), and Atoi one of a port without a leading zero.
			return addr, nil
		}
		// At most "[" + 39 bytes of IPv6 + "]:65535".
		var buf [48]byte
		b := buf[:0]
		if ip.Is6() {
			b = append(b, '[')
		}
		b = ip.AppendTo(b)
		if ip.Is6() {
			b = append(b, ']')
		}
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(p), 10)
		if string(b) == addr {
			return addr, nil
		}
		return string(b), nil
	}
	if numericIPv4(host) {
		return bad("host is a numeric IPv4 spelling (hex, octal or short form), not a DNS name: C resolvers read it as an address; use dotted decimal")
	}
	if why := hostnameProblem(host); why != "" {
		return bad("host is neither an IP address nor a valid DNS name: " + why)
	}
	if len(host)+1+len(port) == len(addr) && port[0] != '0' && !hasUpper(host) {
		return addr, nil // no brackets, no leading zero, lower case
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(p)), nil
}

// parsePort parses a port in decimal, digits only, in 1-65535, or says
// what is wrong with it.
func parsePort(port string) (int, string) {
	if port == "" || strings.Trim(port, "0123456789") != "" {
		return 0, "port is not a number"
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 { // err: too big for an int
		return 0, "port " + truncate(port) + " out of range 1-65535"
	}
	return p, ""
}

// parseIP parses h as an IP address. Only an IPv6 address has a colon, and
// an IPv4 address nothing but digits and dots: a host name is told apart
// without the parse, whose error would allocate.
func parseIP(h string) (netip.Addr, bool) {
	if strings.IndexByte(h, ':') < 0 {
		for i := 0; i < len(h); i++ {
			if c := h[i]; c != '.' && (c < '0' || c > '9') {
				return netip.Addr{}, false
			}
		}
	}
	ip, err := netip.ParseAddr(h)
	return ip, err == nil
}

// hasUpper reports whether s holds an ASCII upper-case letter.
func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// numericIPv4 reports whether h, less one trailing dot, is one to four
// dot-separated numbers in C's syntax (decimal, octal, or hex after "0x"):
// a name that inet_aton, which the C resolver's getaddrinfo tries before
// DNS, reads as an IPv4 address, so that "0xa9fea9fe" dials
// 169.254.169.254 wherever Go resolves with cgo (macOS, netdns=cgo).
// netip reads none of these: the checks on IPs would not see them.
func numericIPv4(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || strings.Count(h, ".") > 3 {
		return false
	}
	for part := range strings.SplitSeq(h, ".") {
		digits := "0123456789"
		if len(part) >= 2 && part[0] == '0' && (part[1] == 'x' || part[1] == 'X') {
			part, digits = part[2:], "0123456789abcdefABCDEF"
		} else if part == "" {
			return false
		}
		if strings.Trim(part, digits) != "" {
			return false
		}
	}
	return true
}

// hostnameProblem says what makes h not a syntactically valid DNS name, or
// returns "" when it is one: dot-separated labels of ASCII letters, digits,
// '-' and '_', 1-63 bytes each, not starting or ending with '-', 253 bytes
// at most without a trailing dot, and not all-numeric (which would be a
// malformed IPv4 address). A valid name costs no allocation.
func hostnameProblem(h string) string {
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return "empty name"
	}
	if len(h) > 253 {
		return fmt.Sprintf("name is %d bytes, more than 253", len(h))
	}
	allDigits := true
	for label := range strings.SplitSeq(h, ".") {
		switch {
		case label == "":
			return "empty label (a leading dot or two dots in a row)"
		case len(label) > 63:
			return fmt.Sprintf("label %q is %d bytes, more than 63", truncate(label), len(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Sprintf("label %q starts or ends with '-'", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				allDigits = false
			case c >= 0x80:
				return "non-ASCII characters: give an internationalized name in its ASCII (punycode, \"xn--\") form"
			default:
				return fmt.Sprintf("character %q not allowed (letters, digits, '-' and '_' only)", c)
			}
		}
	}
	if allDigits {
		return "all labels are numbers, which is no IPv4 address"
	}
	return ""
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
// or a duplicate address (the endpoint with the smaller ID is kept).
// Addresses are compared, and published, in their canonical spelling (see
// CanonicalAddr): "[10.0.0.1]:80", "10.0.0.1:0080" and "10.0.0.1:80" are one
// address, published as "10.0.0.1:80", and so are "[2001:DB8:0:0::1]:80"
// and "[2001:db8::1]:80", or "Host.:80" and "host.:80". A weight below 1
// becomes 1 and an empty ID becomes the canonical address. The input slice
// is not modified; the returned endpoints share Tags and Meta with it. A
// rejected endpoint is reported as it was given, with its ID defaulted. The
// rejected come sorted by ID, then reason, whatever the input's order: a
// watcher quoting the first of them in an error reports an answer the
// registry gives in another order (Consul's near, an etcd snapshot's map)
// the same, and the Publisher sees the same error, not a new Version.
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
	// The canonical addresses that differ from the input's, by position:
	// usually none, so the common case allocates nothing for them.
	var respelled map[int32]string
	for i := range in {
		addr, err := checkFields(&in[i])
		if err != nil {
			rejected = append(rejected, Rejected{defaulted(in[i], in[i].Addr), err})
			continue
		}
		if addr != in[i].Addr {
			if respelled == nil {
				respelled = make(map[int32]string)
			}
			respelled[int32(i)] = addr
		}
		id := in[i].ID
		if id == "" {
			id = addr
		}
		keys = append(keys, key{id, int32(i)})
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
		given := in[kv.i].Addr
		addr, ok := respelled[kv.i]
		if !ok {
			addr = given
		}
		if k > 0 && keys[k-1].id == kv.id { // the first one wins
			e := defaulted(in[kv.i], given)
			err := fmt.Errorf("discovery: duplicate endpoint ID %q", kv.id)
			if in[kv.i].ID == "" {
				// The ID is the canonical address, which e, reported as
				// given, does not show.
				err = fmt.Errorf("discovery: duplicate endpoint ID %q (no ID given, so its address %s)", kv.id, given)
			}
			rejected = append(rejected, Rejected{e, err})
			continue
		}
		if first, dup := seenAddr[addr]; dup {
			e := defaulted(in[kv.i], given)
			spelled := addr
			if given != addr {
				spelled = given + " (" + addr + ")"
			}
			rejected = append(rejected, Rejected{e, fmt.Errorf("discovery: endpoint %q: address %s already used by %q", e.ID, spelled, first)})
			continue
		}
		seenAddr[addr] = kv.id
		valid = append(valid, defaulted(in[kv.i], addr))
	}
	if len(rejected) > 1 {
		slices.SortStableFunc(rejected, func(a, b Rejected) int {
			if c := strings.Compare(a.Endpoint.ID, b.Endpoint.ID); c != 0 {
				return c
			}
			return strings.Compare(a.Err.Error(), b.Err.Error())
		})
	}
	return valid, rejected
}

// defaulted returns e at addr with Sanitize's defaults: the address as ID
// when it has none, and weight 1 when below.
func defaulted(e Endpoint, addr string) Endpoint {
	e.Addr = addr
	if e.ID == "" {
		e.ID = addr
	}
	if e.Weight < 1 {
		e.Weight = 1
	}
	return e
}

// endpointAddrError is checkFields' error for an endpoint whose address
// does not validate: it reads like the other reasons, "discovery: endpoint
// "ID": invalid address ...", without CanonicalAddr's own "discovery: "
// in the middle, and it wraps CanonicalAddr's error, so errors.Is finds
// ErrInvalidAddr.
type endpointAddrError struct {
	id  string
	err error
}

func (e *endpointAddrError) Error() string {
	return fmt.Sprintf("discovery: endpoint %q: %s", e.id, strings.TrimPrefix(e.err.Error(), "discovery: "))
}

func (e *endpointAddrError) Unwrap() error { return e.err }

// checkFields checks e's address and field sizes, and returns its canonical
// address.
func checkFields(e *Endpoint) (string, error) {
	id := e.ID
	if id == "" {
		id = e.Addr
	}
	addr, err := CanonicalAddr(e.Addr)
	if err != nil {
		return "", &endpointAddrError{id: truncate(id), err: err}
	}
	tooLong := func(what, s string) error {
		if len(s) > MaxFieldLen {
			return fmt.Errorf("discovery: endpoint %q: %s longer than %d bytes", truncate(id), what, MaxFieldLen)
		}
		return nil
	}
	if err := tooLong("ID", e.ID); err != nil {
		return "", err
	}
	if err := tooLong("zone", e.Zone); err != nil {
		return "", err
	}
	if len(e.Tags) > MaxTags {
		return "", fmt.Errorf("discovery: endpoint %q: %d tags, more than %d", truncate(id), len(e.Tags), MaxTags)
	}
	for _, t := range e.Tags {
		if err := tooLong("tag", t); err != nil {
			return "", err
		}
	}
	if len(e.Meta) > MaxMeta {
		return "", fmt.Errorf("discovery: endpoint %q: %d meta entries, more than %d", truncate(id), len(e.Meta), MaxMeta)
	}
	for k, v := range e.Meta {
		if err := tooLong("meta key", k); err != nil {
			return "", err
		}
		if err := tooLong("meta value", v); err != nil {
			return "", err
		}
	}
	return addr, nil
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
