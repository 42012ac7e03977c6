package consul

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/hashicorp/consul/api"
)

// catalogRegister registers instance id of web at port on an external node
// (not the agent's: the agent's anti-entropy would put its own services
// back in the catalog after a restore).
func catalogRegister(t *testing.T, c *api.Client, id string, port int) {
	t.Helper()
	_, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext", Address: "127.0.0.1",
		Service: &api.AgentService{ID: id, Service: "web", Address: "127.0.0.1", Port: port}}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

func catalogDeregister(t *testing.T, c *api.Client, id string) {
	t.Helper()
	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "ext", ServiceID: id}, nil); err != nil {
		t.Fatal(err)
	}
}

// FAULTS.md row 11 against a real agent: a snapshot restore sends the
// registry's index backwards. TestIndexRules proves the rules against a
// fake, and the agent restart test against a fresh, empty catalog; this one
// restores a snapshot, through the streaming backend and the RPC one.
//
// What the agent does (Consul 1.22): a blocking query parked at the newer
// index is not answered by the restore. The streaming view answers only
// when the wait ends (with the restored set, at the lower index); the RPC
// path answers once at once with the set from before the restore, at the
// same index, and then parks again. Either way the watcher learns of the
// restore when its wait ends, so the set is stale for up to WithWaitTime
// (60 s by default) unless a ResolveNow comes first. The test uses a 2 s
// wait. After it: exactly the restored set ("missed updates = 0"), and
// changes made after the restore arrive at once, from the lower index.
func TestAgentSnapshotRestoreIndexGoesBackwards(t *testing.T) {
	for _, streaming := range []bool{true, false} {
		t.Run(map[bool]string{true: "streaming", false: "rpc"}[streaming], func(t *testing.T) { snapshotRestore(t, streaming) })
	}
}

func snapshotRestore(t *testing.T, streaming bool) {
	a := consultest.StartWithHCL(t, fmt.Sprintf("use_streaming_backend = %v", streaming))
	c := agentClient(t, a)
	catalogRegister(t, c, "a", 7001)
	catalogRegister(t, c, "b", 7002)
	rc, _, err := c.Snapshot().Save(nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The index climbs well past the snapshot's, and the set moves on.
	for range 30 {
		catalogRegister(t, c, "churn", 7999)
		catalogDeregister(t, c, "churn")
	}
	catalogDeregister(t, c, "b")
	catalogRegister(t, c, "c", 7003)

	const wait = 2 * time.Second
	w, err := New("web", WithAddress(a.Addr()), WithWaitTime(wait), WithErrorBackoff(50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 10*time.Second, "a and c", func(s discovery.State) bool {
		return s.Err == nil && addrsOf(s) == "127.0.0.1:7001,127.0.0.1:7003"
	})
	time.Sleep(300 * time.Millisecond) // parked on a blocking query at the high index

	if err := c.Snapshot().Restore(nil, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	nextWhere(t, w, wait+3*time.Second, "the restored set", func(s discovery.State) bool {
		if s.Err == nil && addrsOf(s) != "127.0.0.1:7001,127.0.0.1:7003" && addrsOf(s) != "127.0.0.1:7001,127.0.0.1:7002" {
			t.Errorf("published %q after the restore; want the set from before it or the restored one", addrsOf(s))
		}
		return s.Err == nil && addrsOf(s) == "127.0.0.1:7001,127.0.0.1:7002"
	})
	t.Logf("restored set published %v after the restore; %d index resets", time.Since(restored).Round(time.Millisecond), w.Stats().IndexResets)
	// Still following, from the lower index: a change after the restore
	// arrives before the wait would end.
	catalogRegister(t, c, "d", 7004)
	changed := time.Now()
	nextWhere(t, w, 10*time.Second, "a change after the restore", func(s discovery.State) bool {
		return s.Err == nil && addrsOf(s) == "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7004"
	})
	if d := time.Since(changed); d > wait/2 {
		t.Errorf("a change after the restore took %v to arrive: the watcher blocked at an index from before the restore", d)
	}
}
