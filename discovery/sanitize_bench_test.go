package discovery

import (
	"fmt"
	"testing"
)

// BenchmarkSanitize: one registry answer of 1,000 endpoints, in address
// order, which is not ID order ("10.0.0.10:80" sorts before "10.0.0.2:80"),
// as every watcher's Update path runs it.
//
//	go test -run='^$' -bench=Sanitize -benchmem ./discovery/
func BenchmarkSanitize(b *testing.B) {
	in := make([]Endpoint, 1000)
	for i := range in {
		a := fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1)
		in[i] = Endpoint{ID: a, Addr: a, Weight: 1 + i%10}
	}
	b.ReportAllocs()
	for range b.N {
		if valid, _ := Sanitize(in); len(valid) != len(in) {
			b.Fatalf("%d of %d valid", len(valid), len(in))
		}
	}
}
