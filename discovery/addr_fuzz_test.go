package discovery

import (
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

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
