package etcd

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
)

// TestResumeSoonAfterALongOutage stops etcd for 30 s, long enough for a
// client's gRPC connection to back off its redials to some 17 s apart (1 s
// x 1.6 per failed redial, +-20 %, gRPC's default, up to 120 s), then
// restarts it. The Watcher's and the Registrar's own backoffs (here at most
// 500 ms) must set the pace at which they find it back, not gRPC's next
// redial, some 13 s on: each list or registration they retry asks the
// connection to redial at once (redialNow). They have a client each, so
// that neither redials for the other.
//
// The Watcher (request timeout 500 ms) must publish the set without error
// within 3 s of the restart. The Registrar, whose lease it saw lost, must
// register with a new lease while the key of its old lease, which etcd
// restores with a fresh TTL (5 s), still stands: its registration waits up
// to its request timeout (5 s) for the connection, which after the reset
// redials 1 s and then 1.6 s on, so it comes back within about 3 s.
//
// Before: after 17 s down, the Watcher resumed 9.0 and 10.9 s after the
// restart (3.6 s after a 5 s outage, 18 s after a 40 s one), and a
// Registrar with a 2 s TTL registered again 6.3 s after it, its key absent
// for over 4 s; after 20 s down, both came back 5.5 and 15.4 s after it.
// With the redials alone, the Registrar still came back 8.7-16.8 s after
// the restart in about half the runs: its watch on its own key, begun as
// etcd went down, held hold (clientv3's Watch returns once its stream is
// up) until gRPC redialled; it is set up apart now.
func TestResumeSoonAfterALongOutage(t *testing.T) {
	srv, cli := startEtcd(t)
	put(t, cli, "svc/a", ep("a", "10.0.0.1:80"))
	w := startWatcher(t, cli, "svc",
		WithProgressInterval(200*time.Millisecond),
		WithRequestTimeout(500*time.Millisecond),
		WithBackoff(50*time.Millisecond, 500*time.Millisecond))
	waitSet(t, w, "a=10.0.0.1:80")
	r := newRegistrar(t, srv.Client(t), "reg", discovery.Endpoint{ID: "n1", Addr: "10.0.0.1:80"},
		WithTTL(5*time.Second), WithRegistrarBackoff(50*time.Millisecond, 500*time.Millisecond))
	old, _ := keyLease(t, cli, r.Key())
	if old == 0 {
		t.Fatalf("key %s not registered", r.Key())
	}

	srv.Stop()
	waitState(t, w, "an error while etcd is down", func(s discovery.State) bool { return s.Err != nil })
	time.Sleep(30 * time.Second)
	srv.Restart(t)
	restarted := time.Now()

	// The Registrar's new lease, watched for while the Watcher is waited
	// for, through a new client: the old ones redial at gRPC's pace.
	other := srv.Client(t)
	registered := make(chan time.Duration, 1)
	go func() {
		for time.Since(restarted) < 20*time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := other.Get(ctx, r.Key())
			cancel()
			if err == nil && len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) != old {
				registered <- time.Since(restarted)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		registered <- -1
	}()
	waitState(t, w, "the set again without error", func(s discovery.State) bool { return s.Err == nil })
	watcherBack := time.Since(restarted)
	registrarBack := <-registered
	if registrarBack < 0 {
		t.Fatalf("%s not registered with a new lease 20 s after etcd restarted", r.Key())
	}
	t.Logf("after a 30 s outage: the Watcher resumed %v and the Registrar registered again %v after etcd restarted",
		watcherBack.Round(time.Millisecond), registrarBack.Round(time.Millisecond))
	if watcherBack > 3*time.Second {
		t.Errorf("the Watcher resumed %v after etcd restarted; want within 3 s (its backoff is 500 ms)", watcherBack.Round(time.Millisecond))
	}
	if registrarBack > 5*time.Second {
		t.Errorf("the Registrar registered again %v after etcd restarted; want within the restored lease's TTL (5 s)", registrarBack.Round(time.Millisecond))
	}
}
