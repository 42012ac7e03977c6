package consul

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
)

// TestClusterLeaderLoss is FAULTS row 10 against 3 real Consul servers
// (not -dev). The watcher follows a service through one follower's HTTP API,
// where the instances are registered.
//
// First the leader is killed (SIGKILL) and the other two elect a new one.
// Meanwhile the follower answers blocking queries from its own copy, marked
// X-Consul-KnownLeader: false (reported as ErrNoLeader), or holds them until
// the election is over; a newly elected leader may also answer once from
// behind (a lower index, an older set). The watcher must keep the set
// throughout, and a registration made after the election must arrive.
//
// Then the third server is killed too, leaving the watched one alone: no
// quorum, so no leader, and it answers "No cluster leader". The
// watcher must report that in State.Err with the last known good set (and
// Synced not moving past the moment the server had no leader), and resume once a killed server is restarted and a
// leader elected. In both phases State.Endpoints never changes until the new
// registration arrives.
func TestClusterLeaderLoss(t *testing.T) {
	c := consultest.StartCluster(t, 3)
	leader := c.WaitLeader(t)
	var follower *consultest.Agent
	for _, a := range c.Agents() {
		if a != leader {
			follower = a
			break
		}
	}
	cl := agentClient(t, follower)
	// Registered on the follower's agent, whose node survives both losses.
	for i, addr := range []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"} {
		register(t, cl, string(rune('a'+i)), addr, nil, nil)
	}
	good := "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
	w, err := New("web", WithAddress(follower.Addr()), WithWaitTime(2*time.Second),
		WithErrorBackoff(100*time.Millisecond, time.Second), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	nextWhere(t, w, 20*time.Second, "the three", func(s discovery.State) bool { return s.Err == nil && addrsOf(s) == good })

	// resume registers id at addr through the follower once a leader is
	// back, and waits for the watcher to publish it without error. Every
	// State before that must still carry the set good.
	resume := func(phase string, t0 time.Time, id, addr string) (errs []error) {
		t.Helper()
		l := c.WaitLeader(t)
		elected := time.Since(t0)
		register(t, cl, id, addr, nil, nil)
		s := nextWhere(t, w, 30*time.Second, phase+": the new registration", func(s discovery.State) bool {
			if strings.Contains(addrsOf(s), addr) {
				return s.Err == nil
			}
			if addrsOf(s) != good {
				t.Errorf("%s: published %q (err %v); want the last known good set %q", phase, addrsOf(s), s.Err, good)
			}
			if s.Err != nil {
				errs = append(errs, s.Err)
			}
			return false
		})
		t.Logf("%s: leader %s elected %v after the loss; watcher resumed %v after the loss", phase, l.Name(),
			elected.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		if want := good + "," + addr; addrsOf(s) != want {
			t.Errorf("%s: resumed with %q; want %q", phase, addrsOf(s), want)
		}
		good = addrsOf(s)
		return errs
	}

	// Phase 1: the leader dies, a new one is elected.
	t0 := time.Now()
	leader.Stop()
	errs := resume("leader killed", t0, "d", "127.0.0.1:7004")
	t.Logf("leader killed: %d errors reported while the cluster elected a new leader: %v", len(errs), errs)

	// Phase 2: the other survivor dies too; the watched server, alone,
	// cannot elect a leader (or stay one).
	var second *consultest.Agent
	for _, a := range c.Agents() {
		if a != leader && a != follower {
			second = a
		}
	}
	// The watched server may go on answering for a moment after the kill,
	// until it notices it has lost its leader (one blocking wait under
	// load: an answer at t0+2.0 s, then the error at t0+4.0 s). Answers
	// until then are fresh data and may move Synced; none after it may.
	// noLeader polls the server for the moment it knows it has no leader
	// (bounded: 30 s).
	noLeader := make(chan time.Time, 1)
	polling, stopPolling := context.WithTimeout(context.Background(), 30*time.Second)
	var poll sync.WaitGroup
	t.Cleanup(func() { stopPolling(); poll.Wait() }) // also when the test fails first
	t0 = time.Now()
	second.Stop()
	poll.Go(func() {
		defer close(noLeader)
		for ; polling.Err() == nil; time.Sleep(10 * time.Millisecond) {
			if l, err := cl.Status().Leader(); err == nil && l == "" || err != nil && strings.Contains(err.Error(), "No cluster leader") {
				noLeader <- time.Now()
				return
			}
		}
	})
	s := nextWhere(t, w, 30*time.Second, "quorum lost: the error", func(s discovery.State) bool {
		if addrsOf(s) != good {
			t.Errorf("quorum lost: published %q; want the last known good set %q", addrsOf(s), good)
		}
		return s.Err != nil
	})
	t.Logf("quorum lost: error reported %v after the loss, with %d endpoints: %v",
		time.Since(t0).Round(time.Millisecond), len(s.Endpoints), s.Err)
	lost, ok := <-noLeader
	if !ok {
		t.Fatal("quorum lost: the watched server never said it had no leader")
	}
	t.Logf("quorum lost: the server knew it had no leader %v after the loss; the error's Synced is %v after the loss",
		lost.Sub(t0).Round(time.Millisecond), s.Synced.Sub(t0).Round(time.Millisecond))
	if s.Synced.After(lost) {
		t.Errorf("quorum lost: Synced %v is after %v, when the registry already had no leader", s.Synced, lost)
	}
	second.Restart() // back with its data: two of three, a leader again
	resume("quorum lost", t0, "e", "127.0.0.1:7005")
}

// tWriter sends log lines to t.Log. Only for components closed before the
// test returns.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger { return slog.New(slog.NewTextHandler(tWriter{t}, nil)) }
