package discovery

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestValidateAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		why  string // "" means valid
	}{
		{"127.0.0.1:80", ""},
		{"10.1.2.3:65535", ""},
		{"[::1]:9000", ""},
		{"[2001:db8::1]:443", ""},
		{"orders.service.consul:8080", ""},
		{"localhost:1", ""},
		{"my_host:8080", ""},
		{"", "empty"},
		{"127.0.0.1", "not host:port"},
		{"127.0.0.1:0", "out of range"},
		{"127.0.0.1:65536", "out of range"},
		{"127.0.0.1:-1", "not a number"},
		{"127.0.0.1:+80", "not a number"},
		{"127.0.0.1:http", "not a number"},
		{":80", "empty host"},
		{"0.0.0.0:80", "unspecified"},
		{"[::]:80", "unspecified"},
		{"224.0.0.1:80", "multicast"},
		{"[ff02::1]:80", "multicast"},
		{"169.254.10.1:80", "link-local"},
		{"[fe80::1]:80", "link-local"},
		{"[fe80::1%eth0]:80", "zone"},
		{"255.255.255.255:80", "broadcast"},
		{"[::ffff:10.0.0.1]:80", "IPv4-mapped"},
		{"bad host:80", "whitespace"},
		{"host\n:80", "whitespace"},
		{"-bad.example:80", "DNS name"},
		{"a..b:80", "DNS name"},
		{"1.2.3:80", "DNS name"},
		{"ex!ample.com:80", "DNS name"},
		{strings.Repeat("a", 2000) + ":80", "too long"},
	} {
		err := ValidateAddr(tc.addr)
		if tc.why == "" {
			if err != nil {
				t.Errorf("ValidateAddr(%q) = %v, want nil", tc.addr, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrInvalidAddr) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("ValidateAddr(%q) = %v, want an ErrInvalidAddr naming %q", tc.addr, err, tc.why)
		}
	}
}

func TestCanonicalAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.1:80", "10.0.0.1:80"},
		{"[10.0.0.1]:80", "10.0.0.1:80"},
		{"10.0.0.1:0080", "10.0.0.1:80"},
		{"[10.0.0.1]:000065535", "10.0.0.1:65535"},
		{"[2001:db8::1]:443", "[2001:db8::1]:443"},
		{"[2001:DB8:0:0::1]:443", "[2001:db8::1]:443"},
		{"[2001:0db8:0000:0000:0000:0000:0000:0001]:0443", "[2001:db8::1]:443"},
		{"[::1]:9000", "[::1]:9000"},
		{"[0:0:0:0:0:0:0:1]:9000", "[::1]:9000"},
		{"[::10.0.0.1]:80", "[::a00:1]:80"},
		{"orders.service.consul:8080", "orders.service.consul:8080"},
		{"orders.service.consul.:8080", "orders.service.consul.:8080"}, // absolute: not the same name
		{"Orders.Service.Consul.:8080", "orders.service.consul.:8080"},
		{"Orders.Service.Consul:8080", "orders.service.consul:8080"},
		{"[my_host]:08080", "my_host:8080"},
		{"localhost:1", "localhost:1"},
	} {
		got, err := CanonicalAddr(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("CanonicalAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if again, err := CanonicalAddr(got); err != nil || again != got {
			t.Errorf("CanonicalAddr(%q) = %q, %v; a canonical address must be its own canonical form", got, again, err)
		}
		if ValidateAddr(tc.in) != nil {
			t.Errorf("ValidateAddr(%q) = %v; CanonicalAddr accepted it", tc.in, ValidateAddr(tc.in))
		}
	}
	for _, in := range []string{"1.2.3.4:0", "[::ffff:10.0.0.1]:80", "host..:80", "01.2.3.4:80", "[fe80::1%eth0]:80"} {
		if got, err := CanonicalAddr(in); err == nil || !errors.Is(err, ErrInvalidAddr) {
			t.Errorf("CanonicalAddr(%q) = %q, %v; want ErrInvalidAddr", in, got, err)
		}
	}
	for _, in := range []string{"10.0.0.1:80", "[2001:db8::1]:443", "orders.service.consul:8080"} {
		if n := testing.AllocsPerRun(100, func() { CanonicalAddr(in) }); n != 0 {
			t.Errorf("CanonicalAddr(%q) allocates %v times; a canonical address costs nothing", in, n)
		}
	}
}

func TestSanitizeDropsBadKeepsGood(t *testing.T) {
	in := []Endpoint{
		{ID: "c", Addr: "10.0.0.3:80", Weight: 0},
		{ID: "a", Addr: "10.0.0.1:80", Weight: 3},
		{ID: "bad-port", Addr: "10.0.0.9:0"},
		{ID: "b", Addr: "10.0.0.1:80"}, // duplicate address of "a"
		{ID: "a", Addr: "10.0.0.7:80"}, // duplicate ID
		{Addr: "10.0.0.4:80"},          // empty ID becomes the address
		{ID: "tags", Addr: "10.0.0.5:80", Tags: make([]string, MaxTags+1)},
		{ID: "meta", Addr: "10.0.0.6:80", Meta: map[string]string{"k": strings.Repeat("v", MaxFieldLen+1)}},
	}
	valid, rejected := Sanitize(in)
	var ids []string
	for _, e := range valid {
		ids = append(ids, e.ID+"="+e.Addr)
	}
	if got, want := strings.Join(ids, " "), "10.0.0.4:80=10.0.0.4:80 a=10.0.0.1:80 c=10.0.0.3:80"; got != want {
		t.Fatalf("valid = %s, want %s", got, want)
	}
	for _, e := range valid {
		if e.Weight < 1 {
			t.Errorf("endpoint %s weight %d, want >= 1", e.ID, e.Weight)
		}
	}
	if valid[1].Weight != 3 {
		t.Errorf("weight of a = %d, want 3 (kept)", valid[1].Weight)
	}
	reasons := map[string]string{}
	for _, r := range rejected {
		reasons[r.Endpoint.ID+"@"+r.Endpoint.Addr] = r.Err.Error()
	}
	for key, want := range map[string]string{
		"bad-port@10.0.0.9:0": "out of range",
		"b@10.0.0.1:80":       "already used by \"a\"",
		"a@10.0.0.7:80":       "duplicate endpoint ID",
		"tags@10.0.0.5:80":    "tags",
		"meta@10.0.0.6:80":    "meta value",
	} {
		if !strings.Contains(reasons[key], want) {
			t.Errorf("rejection of %s = %q, want it to name %q", key, reasons[key], want)
		}
	}
	if len(rejected) != 5 {
		t.Errorf("%d rejected, want 5: %v", len(rejected), reasons)
	}
	if in[0].Weight != 0 || in[0].ID != "c" {
		t.Errorf("Sanitize modified its input: %+v", in[0])
	}
}

// A hostile registry's huge address must not end up whole in the rejection
// error, which goes into logs and State.Err: the error quotes its start only.
func TestHugeAddressErrorIsShort(t *testing.T) {
	for _, addr := range []string{
		strings.Repeat("a", 1<<20) + ":80",        // too long
		strings.Repeat("a", MaxFieldLen-3) + ":0", // under the length cap, bad port
		"10.0.0.1:" + strings.Repeat("9", MaxFieldLen-9),
	} {
		_, rejected := Sanitize([]Endpoint{{ID: "huge", Addr: addr}})
		if len(rejected) != 1 || !errors.Is(rejected[0].Err, ErrInvalidAddr) {
			t.Fatalf("Sanitize of a %d-byte address: rejected %d, want 1 ErrInvalidAddr", len(addr), len(rejected))
		}
		if msg := rejected[0].Err.Error(); len(msg) > 300 || !strings.Contains(msg, addr[:32]) {
			t.Errorf("rejection of a %d-byte address is %d bytes (starts %.120q); want at most 300, quoting the address's start", len(addr), len(msg), msg)
		}
	}
}

// Two spellings of one address must never become two endpoints: Sanitize
// publishes the canonical form and rejects the second spelling as a
// duplicate address.
func TestSanitizeDedupsSpellingsOfOneAddress(t *testing.T) {
	for _, tc := range []struct {
		canonical string
		others    []string
	}{
		{"1.2.3.4:80", []string{"[1.2.3.4]:80", "1.2.3.4:0080", "[1.2.3.4]:080"}},
		{"[2001:db8::1]:80", []string{"[2001:DB8:0:0::1]:80", "[2001:0db8:0000::0001]:080"}},
		{"host:80", []string{"HOST:80", "Host:0080", "[host]:80"}},
		{"host.:80", []string{"HOST.:80", "[Host.]:0080"}},
		{"orders.service.consul:8080", []string{"Orders.Service.Consul:8080"}},
	} {
		for _, other := range tc.others {
			// Alone, a spelling is published in the canonical form.
			valid, rejected := Sanitize([]Endpoint{{ID: "x", Addr: other}})
			if len(rejected) != 0 || len(valid) != 1 || valid[0].Addr != tc.canonical {
				t.Errorf("Sanitize(%q): valid %+v, rejected %v; want it published as %q", other, valid, rejected, tc.canonical)
			}
			// Next to the canonical spelling, it is a duplicate, whichever
			// comes first and whichever ID sorts first.
			for _, in := range [][]Endpoint{
				{{ID: "a", Addr: tc.canonical}, {ID: "b", Addr: other}},
				{{ID: "a", Addr: other}, {ID: "b", Addr: tc.canonical}},
				{{Addr: other}, {Addr: tc.canonical}}, // IDs default to the address
			} {
				valid, rejected := Sanitize(in)
				if len(valid) != 1 || valid[0].Addr != tc.canonical {
					t.Errorf("Sanitize(%+v) = %+v; want one endpoint at %q", in, valid, tc.canonical)
					continue
				}
				if len(rejected) != 1 || !strings.Contains(rejected[0].Err.Error(), "already used") && !strings.Contains(rejected[0].Err.Error(), "duplicate endpoint ID") {
					t.Errorf("Sanitize(%+v): rejected %v; want the second spelling rejected as a duplicate", in, rejected)
				}
			}
		}
	}
	if _, err := StaticAddrs("[2001:db8::1]:80", "[2001:DB8::0:1]:80"); err == nil {
		t.Error("StaticAddrs accepted two spellings of one address")
	}
}

// A host name made of numbers in C's syntax (hex "0x..", octal, decimal;
// one to four parts) is an IPv4 address to the C resolver (inet_aton, which
// getaddrinfo tries first): the cgo resolver Go uses on macOS, with
// GODEBUG=netdns=cgo, or under an nsswitch.conf the pure Go one does not
// handle, dials "0xa9fea9fe:80" at 169.254.169.254, the cloud metadata
// service. ValidateAddr rejects link-local, unspecified, multicast and
// broadcast IPs, and all-decimal names as malformed IPv4: it must reject
// these spellings of them too, and name what is wrong. Names that only
// look numeric in part stay valid.
func TestValidateAddrRejectsNumericIPv4Spellings(t *testing.T) {
	for _, a := range []string{
		"0xa9fea9fe:80", // 169.254.169.254
		"0xa9.0xfe.0xa9.0xfe:80",
		"0xA9.254.43518:80", // 169.254.169.254 (a.b.c)
		"0x0:80",            // 0.0.0.0
		"0XE0000001:80",     // 224.0.0.1
		"0xffffffff:80",     // 255.255.255.255
		"0x7f.1:80",         // 127.0.0.1
		"0xa9fea9fe.:80",    // an absolute name, for resolvers that trim the dot
		"[0xa9fea9fe]:80",
	} {
		err := ValidateAddr(a)
		if err == nil || !errors.Is(err, ErrInvalidAddr) || !strings.Contains(err.Error(), "numeric") {
			t.Errorf("ValidateAddr(%q) = %v, want an ErrInvalidAddr saying the host is a numeric IPv4 spelling", a, err)
		}
	}
	for _, a := range []string{"0x.example:80", "0xg:80", "x0:80", "0x0.0x1.0x2.0x3.0x4:80", "1e1:80", "0xa9fea9fe.example:80"} {
		if err := ValidateAddr(a); err != nil {
			t.Errorf("ValidateAddr(%q) = %v, want nil", a, err)
		}
	}
}

// A port error says what is wrong with the port: a number too big for an
// int is out of range, not "not a number"; and a registry port that is not
// a number is not "out of range".
func TestPortErrorsNameTheFault(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"10.0.0.1:99999999999999999999", "out of range"},
		{"10.0.0.1:65536", "out of range"},
		{"10.0.0.1:http", "not a number"},
	} {
		if err := ValidateAddr(tc.addr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateAddr(%q) = %v, want an error saying %q", tc.addr, err, tc.want)
		}
	}
	for _, tc := range []struct{ target, want string }{
		{"consul://h:99999999999999999999/svc", "out of range"},
		{"consul://h:http/svc", "not a number"},
		{"consul://h:+80/svc", "not a number"},
	} {
		if _, err := ParseTarget(tc.target); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTarget(%q) = %v, want an error saying %q", tc.target, err, tc.want)
		}
	}
}

// FuzzCanonicalAddr: CanonicalAddr never panics; its errors wrap
// ErrInvalidAddr; what it accepts is host:port with a port in 1-65535, an
// IP that names one remote host or a DNS name, and the canonical spelling
// is a fixed point that two spellings of one address share.
func FuzzCanonicalAddr(f *testing.F) {
	for _, s := range []string{
		"10.0.0.1:80", "[::1]:80", "[2001:DB8::1]:0080", "Host.Example.:443", "[host]:1", "0x7f.1:80",
		"[fe80::1%eth0]:80", "[::ffff:1.2.3.4]:80", "1.2.3:80", "h:99999999999999999999", "a_b:1", "[::]:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := CanonicalAddr(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAddr) || c != "" {
				t.Fatalf("CanonicalAddr(%q) = %q, %v", s, c, err)
			}
			return
		}
		if again, err := CanonicalAddr(c); err != nil || again != c {
			t.Fatalf("CanonicalAddr(%q) = %q, whose canonical form is %q, %v", s, c, again, err)
		}
		host, port, err := net.SplitHostPort(c)
		if err != nil {
			t.Fatalf("accepted %q as %q: %v", s, c, err)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || port[0] == '0' {
			t.Fatalf("accepted %q as %q: port %q", s, c, port)
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			if ip.Zone() != "" || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ip.Is4In6() ||
				ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || ip.String() != host {
				t.Fatalf("accepted %q as %q: IP %v", s, c, ip)
			}
			return
		}
		if !dnsName.MatchString(host) || host != strings.ToLower(host) || cNumeric.MatchString(host) ||
			strings.Trim(host, "0123456789.") == "" {
			t.Fatalf("accepted %q as %q: host %q", s, c, host)
		}
	})
}

// cNumeric matches what inet_aton reads as an IPv4 address: one to four
// numbers in C's syntax, with FuzzCanonicalAddr's optional trailing dot.
var cNumeric = regexp.MustCompile(`^(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+)){0,3}\.?$`)

// Sanitize reports the rejected sorted by ID, then reason, whatever the
// input's order, so that a watcher quoting the first of them reads the same
// for an answer the registry gives in another order.
func TestSanitizeRejectedOrderIsTheInputsAnyOrder(t *testing.T) {
	in := []Endpoint{
		{ID: "c", Addr: "0.0.0.0:80"},
		{ID: "a", Addr: "10.0.0.1:0"},
		{ID: "b", Addr: "10.0.0.2:80"},
		{ID: "d", Addr: "10.0.0.3:80"},
		{ID: "a", Addr: "224.0.0.1:80"}, // one ID rejected twice: by reason
		{ID: "e", Addr: "[::]:80"},
	}
	_, want := Sanitize(in)
	if ids := []string{want[0].Endpoint.ID, want[1].Endpoint.ID}; ids[0] != "a" || ids[1] != "a" {
		t.Fatalf("rejected begin with %v, want the two a's", ids)
	}
	rng := rand.New(rand.NewPCG(3, 5))
	for range 50 {
		p := slices.Clone(in)
		rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
		_, got := Sanitize(p)
		if len(got) != len(want) {
			t.Fatalf("%d rejected for %v, want %d", len(got), p, len(want))
		}
		for i := range got {
			if got[i].Endpoint.ID != want[i].Endpoint.ID || got[i].Err.Error() != want[i].Err.Error() {
				t.Fatalf("input %v: rejected[%d] = %s (%v), want %s (%v)", p, i, got[i].Endpoint.ID, got[i].Err, want[i].Endpoint.ID, want[i].Err)
			}
		}
	}
}

// TestSanitizeDuplicateDefaultedIDNamesTheID: two endpoints without an ID
// whose addresses are two spellings of one get the canonical address as ID,
// and collide on it. The reason must name that ID, not the given spelling,
// which no endpoint has as ID.
func TestSanitizeDuplicateDefaultedIDNamesTheID(t *testing.T) {
	_, rejected := Sanitize([]Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "[10.0.0.1]:80"}})
	if len(rejected) != 1 {
		t.Fatalf("rejected %v, want one", rejected)
	}
	if msg := rejected[0].Err.Error(); !strings.Contains(msg, `"10.0.0.1:80"`) || !strings.Contains(msg, "[10.0.0.1]:80") {
		t.Errorf("reason %q: want it to name the ID that collides, \"10.0.0.1:80\", and the address given, [10.0.0.1]:80", msg)
	}
}
