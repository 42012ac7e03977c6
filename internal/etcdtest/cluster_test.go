package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// localGet reads key from the member cli talks to, without asking the
// leader (a serializable read), and returns its value or "" if absent.
func localGet(ctx context.Context, t *testing.T, cli *clientv3.Client, key string) string {
	t.Helper()
	resp, err := cli.Get(ctx, key, clientv3.WithSerializable())
	if err != nil {
		t.Fatalf("serializable get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// waitFor polls cond every 20 ms until it holds; the test fails after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > readyTimeout {
			t.Fatalf("%s: not within %v", what, readyTimeout)
		}
		time.Sleep(20 * time.Millisecond) // polling server state, bounded above
	}
	return time.Since(start)
}

// A 3-member cluster elects a leader, survives the loss of its leader, takes
// the member back with its data, and a cut-off member loses its leader and
// misses writes until it rejoins.
func TestClusterStopRestartIsolate(t *testing.T) {
	c := StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms := c.Members()
	if len(ms) != 3 || len(c.Endpoints()) != 3 {
		t.Fatalf("%d members, %d endpoints; want 3", len(ms), len(c.Endpoints()))
	}
	all := c.Client(t)
	if _, err := all.Put(ctx, "k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}

	// Leader loss: the others elect a new leader and take writes.
	old := c.WaitLeader(t)
	oldCli := c.Client(t, old)
	old.Stop()
	start := time.Now()
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	if _, err := oldCli.Get(short, "k"); err == nil {
		t.Errorf("get from the stopped member %s succeeded", old.Name())
	}
	cancelShort()
	var others []*Member
	for _, m := range ms {
		if m != old {
			others = append(others, m)
		}
	}
	lead := c.WaitLeader(t)
	t.Logf("new leader %s %v after stopping leader %s", lead.Name(), time.Since(start).Round(time.Millisecond), old.Name())
	if lead == old {
		t.Fatalf("the stopped member is still leader")
	}
	rest := c.Client(t, others...)
	if _, err := rest.Put(ctx, "k", "v2"); err != nil {
		t.Fatalf("put with one member down: %v", err)
	}

	// Restart: same URL, same data, and it catches up.
	old.Restart(t)
	waitFor(t, "restarted member catches up", func() bool { return localGet(ctx, t, oldCli, "k") == "v2" })

	// Partition: a follower cut off from the others loses its leader and
	// misses the writes made meanwhile, while its clients still reach it.
	lead = c.WaitLeader(t)
	var cut *Member
	for _, m := range ms {
		if m != lead {
			cut = m
			break
		}
	}
	cutCli := c.Client(t, cut)
	cut.Isolate()
	lost := waitFor(t, "cut-off member loses its leader", func() bool { return !cut.HasLeader() })
	t.Logf("cut-off member %s lost its leader after %v", cut.Name(), lost.Round(time.Millisecond))
	var rest2 []*Member
	for _, m := range ms {
		if m != cut {
			rest2 = append(rest2, m)
		}
	}
	if _, err := c.Client(t, rest2...).Put(ctx, "k", "v3"); err != nil {
		t.Fatalf("put with a member cut off: %v", err)
	}
	if got := localGet(ctx, t, cutCli, "k"); got != "v2" {
		t.Fatalf("cut-off member has k=%q; want the old v2", got)
	}
	cut.Rejoin()
	waitFor(t, "rejoined member catches up", func() bool { return localGet(ctx, t, cutCli, "k") == "v3" })
	if l := c.WaitLeader(t); l == nil {
		t.Fatal("no leader after rejoin")
	}
}
