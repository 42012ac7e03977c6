package discovery

import (
	"strings"
	"testing"
)

// A host name that is refused is refused with an error that says what is
// wrong with it, not only that it is no valid name: a label or a name too
// long, a non-ASCII name (to be given in punycode), a character that is
// not allowed, an empty label.
func TestInvalidHostNameSaysWhy(t *testing.T) {
	label64 := strings.Repeat("a", 64)
	name255 := strings.Repeat(strings.Repeat("b", 63)+".", 4)[:255]
	for _, c := range []struct{ addr, want string }{
		{label64 + ".example:80", "64 bytes, more than 63"},
		{name255 + ":80", "255 bytes, more than 253"},
		{"bücher.example:80", "punycode"},
		{"BÜCHER.example:80", "punycode"},
		{"a*b.example:80", "'*' not allowed"},
		{"a..b:80", "empty label"},
		{"-a.example:80", `"-a" starts or ends with '-'`},
	} {
		err := ValidateAddr(c.addr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ValidateAddr(%.40q) = %v, want an error saying %q", c.addr, err, c.want)
		}
		_, err = ParseTarget("consul://" + c.addr + "/web")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseTarget(consul://%.40q/web) = %v, want an error saying %q", c.addr, err, c.want)
		}
	}
	// The longest valid name (253 bytes, 254 with the trailing dot) and
	// the longest label, punycode and underscores are accepted.
	for _, a := range []string{name255[:253] + ":80", name255[:253] + ".:80", strings.Repeat("c", 63) + ".example:80",
		"xn--bcher-kva.example:80", "_srv._tcp.my_svc.example:80"} {
		if err := ValidateAddr(a); err != nil {
			t.Errorf("ValidateAddr(%.40q): %v", a, err)
		}
	}
}
