package discovery

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// ErrBadTarget is wrapped by every error ParseTarget returns.
var ErrBadTarget = errors.New("discovery: malformed target")

// Target is a parsed target string: scheme://[host:port,host:port]/path?query.
type Target struct {
	// Scheme selects the Builder: "consul", "etcd", "static".
	Scheme string
	// Hosts are the registry addresses from the authority, in order; empty
	// when the target names none (the builder then applies its defaults).
	Hosts []string
	// Path is everything after the first '/' following the authority,
	// unescaped: the Consul service name, the etcd key prefix, or the static
	// address list.
	Path string
	// Query holds the options after '?'.
	Query url.Values
	// Raw is the original string.
	Raw string
}

// String returns the target as given, with any credentials in it (user
// information, or a query value named like a token or password) replaced
// by "REDACTED", so that it can go in errors and logs.
func (t Target) String() string { return redactTarget(t.Raw) }

// redactTarget blanks what looks like a secret in a target string: the user
// information of the authority, and query values whose key names a token,
// password, secret, key or credential. Parsing refuses both, but the error
// that says so must not repeat them.
func redactTarget(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	if i := userinfoEnd(rest); i >= 0 {
		rest = "REDACTED" + rest[i:]
	}
	rest, query, hasQuery := strings.Cut(rest, "?")
	authority, path, hasSlash := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = "REDACTED" + authority[i:]
	}
	out := scheme + "://" + authority
	if hasSlash {
		out += "/" + path
	}
	if !hasQuery {
		return out
	}
	// Split on ';' as well as '&': url.ParseQuery refuses a ';' separator,
	// and the error that says so quotes the target, so a value after one
	// must be redacted too. The separators are kept as they were.
	var b strings.Builder
	b.Grow(len(out) + 1 + len(query))
	b.WriteString(out)
	b.WriteByte('?')
	for {
		kv, sep, rest := query, "", ""
		if i := strings.IndexAny(query, "&;"); i >= 0 {
			kv, sep, rest = query[:i], query[i:i+1], query[i+1:]
		}
		k, _, hasValue := strings.Cut(kv, "=")
		// Match the key as the query parser will read it: %74oken is token.
		dk, err := url.QueryUnescape(k)
		if err != nil {
			dk = k
		}
		if hasValue && (sensitiveKey(k) || sensitiveKey(dk)) {
			kv = k + "=REDACTED"
		}
		b.WriteString(kv)
		if sep == "" {
			return b.String()
		}
		b.WriteString(sep)
		query = rest
	}
}

// userinfoEnd returns the index in rest, a target after its "://", of the
// "@" that ends the user information of its authority, or -1 if it has
// none. The authority ends at the first "/" or "?", but a password may hold
// either (a base64 one holds "/"), and then the "@" comes after that end:
// when what precedes the end is not a list of host:port, a later "@"
// followed by one (up to the next "/" or "?") ends user information. A
// valid authority is taken as it is, so that an "@" in a path or a query
// value is left alone.
func userinfoEnd(rest string) int {
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	if i := strings.LastIndexByte(rest[:end], '@'); i >= 0 {
		return i
	}
	if validRegistryList(rest[:end]) {
		return -1
	}
	for j := end; j < len(rest); j++ {
		k := strings.IndexByte(rest[j:], '@')
		if k < 0 {
			return -1
		}
		j += k
		seg := rest[j+1:]
		if e := strings.IndexAny(seg, "/?"); e >= 0 {
			seg = seg[:e]
		}
		if seg != "" && validRegistryList(seg) {
			return j
		}
	}
	return -1
}

// validRegistryList reports whether s is empty or a comma-separated list of
// valid registry addresses.
func validRegistryList(s string) bool {
	if s == "" {
		return true
	}
	for h := range strings.SplitSeq(s, ",") {
		if validateRegistryAddr(h) != nil {
			return false
		}
	}
	return true
}

func sensitiveKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"token", "pass", "secret", "key", "cred", "auth"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// ParseTarget parses scheme://[authority]/path[?query]. The authority is a
// comma-separated list of host:port. The error wraps ErrBadTarget and names the
// part at fault. It is safe to call from any goroutine.
func ParseTarget(s string) (Target, error) {
	t := Target{Raw: s}
	bad := func(part, why string) (Target, error) {
		return Target{}, fmt.Errorf("%w %q: %s: %s", ErrBadTarget, truncate(redactTarget(s)), part, why)
	}
	if len(s) > 8*MaxFieldLen {
		return bad("target", "longer than "+strconv.Itoa(8*MaxFieldLen)+" bytes")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return bad("target", "contains whitespace or control characters")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad("scheme", `missing "://" (want scheme://[host:port]/name)`)
	}
	if !validScheme(scheme) {
		return bad("scheme", fmt.Sprintf("%q is not a valid scheme", truncate(scheme)))
	}
	t.Scheme = strings.ToLower(scheme)
	if userinfoEnd(rest) >= 0 {
		// Before the authority is cut at "/" or "?": a password may hold
		// either, and the error about what precedes it would quote it.
		return bad("authority", "credentials are not allowed in a target; use the token option or environment")
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return bad("fragment", `"#" is not allowed`)
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		q, err := url.ParseQuery(rest[i+1:])
		if err != nil {
			return bad("query", err.Error())
		}
		t.Query = q
		rest = rest[:i]
	} else {
		t.Query = url.Values{}
	}
	authority, path, hasSlash := strings.Cut(rest, "/")
	if !hasSlash {
		return bad("path", `missing "/" after the authority (want scheme://[host:port]/name)`)
	}
	if authority != "" {
		if strings.Contains(authority, "@") {
			return bad("authority", "credentials are not allowed in a target; use the token option or environment")
		}
		for h := range strings.SplitSeq(authority, ",") {
			if err := validateRegistryAddr(h); err != nil {
				return bad("authority", err.Error())
			}
			t.Hosts = append(t.Hosts, h)
		}
	}
	p, err := url.PathUnescape(path)
	if err != nil {
		return bad("path", err.Error())
	}
	t.Path = p
	return t, nil
}

func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// validateRegistryAddr checks one host:port of a registry: the host must be
// an IP address or a syntactically valid DNS name (see ValidateAddr), and
// the port in 1-65535. Unlike an endpoint address, a registry's may be any
// IP, the unspecified one (0.0.0.0, ::, which dials the local host) included.
func validateRegistryAddr(h string) error {
	if h == "" {
		return errors.New("empty address in list")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		return fmt.Errorf("%q is not host:port", truncate(h))
	}
	if host == "" {
		return fmt.Errorf("%q has an empty host", truncate(h))
	}
	if _, ok := parseIP(host); !ok {
		if why := hostnameProblem(host); why != "" {
			return fmt.Errorf("%q: host %q is neither an IP address nor a valid DNS name: %s", truncate(h), truncate(host), why)
		}
	}
	if _, why := parsePort(port); why != "" {
		return fmt.Errorf("%q: %s", truncate(h), why)
	}
	return nil
}
