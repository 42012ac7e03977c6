package etcd

import (
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// A prefix whose every key is invalid for the same reasons, listed again and
// again (ResolveNow on every failed dial does that), is one error: the
// Publisher publishes a repeated error without a new Version, so that "a
// watcher that keeps failing does not wake its consumer on every attempt".
// The error must then read the same from list to list.
func TestAllInvalidRepeatedListIsNotANewVersion(t *testing.T) {
	_, cli := startEtcd(t)
	zone := strings.Repeat("z", discovery.MaxFieldLen+1) // parses, but Sanitize rejects it
	for i := range 5 {
		put(t, cli, key("svc", i), discovery.Endpoint{ID: id(i), Addr: addr(i), Weight: 1, Zone: zone})
	}
	w := startWatcher(t, cli, "svc", WithResolveInterval(time.Millisecond))
	s := waitState(t, w, "the all-invalid error", func(s discovery.State) bool { return s.Err != nil })
	for range 10 {
		lists := w.lists.Load()
		w.ResolveNow()
		waitFor(t, "a forced list", func() bool { return w.lists.Load() > lists })
	}
	// Let the last list's publication land: an event after it.
	put(t, cli, "svc/zz-probe", discovery.Endpoint{ID: "zz-probe", Addr: "10.9.9.9:80", Weight: 1, Zone: zone})
	waitFor(t, "the probe's publication", func() bool {
		return strings.Contains(w.pub.Current().Err.Error(), "all 6 entries")
	})
	got := w.pub.Current()
	if got.Version > s.Version+1 {
		t.Fatalf("Version went from %d to %d over 10 lists of an unchanged all-invalid prefix and one new invalid key; want at most one new Version (first error: %v; last: %v)",
			s.Version, got.Version, s.Err, got.Err)
	}
}
