package etcd

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// TestSnapshotKeysStaySorted checks the snapshot's sorted key list through
// a random run of puts (good and bad values) and deletes, and that publish
// then hands on every good entry in ID order.
func TestSnapshotKeysStaySorted(t *testing.T) {
	w := &Watcher{dir: "/svc/", opts: defaultOptions()}
	w.opts.logger = slog.New(slog.DiscardHandler)
	snap := &snapshot{good: map[string]discovery.Endpoint{}, bad: map[string]error{}}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		key := fmt.Sprintf("/svc/n-%03d", r.IntN(300))
		switch r.IntN(4) {
		case 0:
			snap.remove(key)
		case 1:
			w.put(snap, key, []byte(`{"Addr":"not an address"}`))
		default:
			w.put(snap, key, []byte(fmt.Sprintf(`{"Addr":"10.0.0.%d:80"}`, r.IntN(250)+1)))
		}
		if i%100 != 0 {
			continue
		}
		var want []string
		for k := range snap.good {
			want = append(want, k)
		}
		for k := range snap.bad {
			want = append(want, k)
		}
		slices.Sort(want)
		if !slices.Equal(snap.keys, want) {
			t.Fatalf("step %d: keys %d, want %d (sorted union of good and bad)", i, len(snap.keys), len(want))
		}
	}
	w.publish(snap, time.Now())
}
