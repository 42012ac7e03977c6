package etcd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
)

// Tests against a real 3-member cluster (FAULTS rows 15 and 16). Clients
// reach members through etcdtest's proxies, so a stopped member drops its
// connections like a dead process, and an isolated one goes silent to its
// peers while its clients still reach it.

// stamped is a State and when the consumer received it.
type stamped struct {
	at time.Time
	s  discovery.State
}

// recorder consumes a Watcher's states in its own goroutine and keeps them
// all, with their arrival times, so a test can ask what was published
// during a fault and when.
type recorder struct {
	mu      sync.Mutex
	states  []stamped
	changed chan struct{} // closed and replaced on every new state
}

// record starts a recorder on w. It stops at cleanup, before w is closed.
func record(t testing.TB, w discovery.Watcher) *recorder {
	r := &recorder{changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			s, err := w.Next(ctx)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.states = append(r.states, stamped{time.Now(), s})
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// since returns the states received at or after t0.
func (r *recorder) since(t0 time.Time) []stamped {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []stamped
	for _, st := range r.states {
		if !st.at.Before(t0) {
			out = append(out, st)
		}
	}
	return out
}

// wait returns the first state received at or after t0 that ok accepts,
// waiting for it at most waitTimeout.
func (r *recorder) wait(t testing.TB, what string, t0 time.Time, ok func(discovery.State) bool) stamped {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		var last discovery.State
		for _, st := range r.states {
			last = st.s
			if !st.at.Before(t0) && ok(st.s) {
				r.mu.Unlock()
				return st
			}
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			d := describe(last)
			if len(d) > 500 {
				d = d[:500] + "..."
			}
			t.Fatalf("waiting for %s: not within %v; last state: %s", what, waitTimeout, d)
		}
	}
}

// membersBut returns the members of c other than skip.
func membersBut(c *etcdtest.Cluster, skip ...*etcdtest.Member) []*etcdtest.Member {
	var out []*etcdtest.Member
	for _, m := range c.Members() {
		keep := true
		for _, s := range skip {
			keep = keep && m != s
		}
		if keep {
			out = append(out, m)
		}
	}
	return out
}

// pinnedClient returns a client of every member of c whose streams opened
// so far go to m: it starts with m alone, and open gets the other members
// once the caller's streams are up. Then a fault on m hits those streams,
// and the client has somewhere else to go.
func pinnedClient(t testing.TB, c *etcdtest.Cluster, m *etcdtest.Member) (cli *clientv3.Client, open func()) {
	cli = c.Client(t, m)
	return cli, func() { cli.SetEndpoints(c.Endpoints()...) }
}

// churn writes registrations under prefix through cli until stop is closed
// or n steps are done: each step adds an endpoint named name+step, every
// third also deletes one and every fifth moves one, so a single missed event
// leaves a wrong set. Addresses are 10.net.x.y and 10.net+1.x.y (moved), so
// callers with distinct nets never collide. A write that fails (while a new
// leader is elected) is retried. It returns the steps done and the writes
// that failed.
func churn(cli *clientv3.Client, prefix, name string, net, n int, progress *atomic.Int64, stop <-chan struct{}) (steps, failed int) {
	write := func(op clientv3.Op) {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			_, err := cli.Do(ctx, op)
			cancel()
			if err == nil {
				return
			}
			failed++
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	key := func(i int) string { return fmt.Sprintf("%s/%s%d", prefix, name, i) }
	value := func(i, moved int) string {
		v, _ := FormatValue(ep(fmt.Sprintf("%s%d", name, i), fmt.Sprintf("10.%d.%d.%d:80", net+moved, i/250, i%250)))
		return string(v)
	}
	tick := time.NewTicker(15 * time.Millisecond)
	defer tick.Stop()
	for steps = 0; steps < n; steps++ {
		select {
		case <-stop:
			return steps, failed
		case <-tick.C:
		}
		write(clientv3.OpPut(key(steps), value(steps, 0)))
		if steps%3 == 2 {
			write(clientv3.OpDelete(key(steps - 2)))
		}
		if steps%5 == 4 {
			write(clientv3.OpPut(key(steps-1), value(steps-1, 1)))
		}
		progress.Store(int64(steps + 1))
	}
	return steps, failed
}

// writeTimeout bounds one write attempt of churn and putRetry: while no
// leader is elected, writes hang, and a short attempt measures the end of
// the election more closely.
const writeTimeout = 300 * time.Millisecond

// putRetry writes e under key until a write succeeds, as a registration
// made during an election would, and returns when it was committed.
func putRetry(t testing.TB, cli *clientv3.Client, key string, e discovery.Endpoint) time.Time {
	t.Helper()
	v, err := FormatValue(e)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		_, err := cli.Put(ctx, key, string(v))
		cancel()
		if err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("put %s: %v", key, err)
		}
		time.Sleep(50 * time.Millisecond) // a pause between attempts, bounded by the deadline
	}
}

// Bounds of the member-loss test. FAULTS row 15 asks for a resume within
// 2 s; a change committed after the loss must reach the watchers within
// that. From the loss itself, the bound is generous: it includes electing a
// new leader when the leader is lost, slow under -race on two cores.
const (
	resumeAfterCommit = 2 * time.Second
	resumeAfterLoss   = 10 * time.Second
	churnAfter        = 60 // churn steps after the loss, about 1 s
)

// TestWatcherMemberLoss is FAULTS row 15. Two watchers have their watch
// streams on chosen members (a follower; the leader) and can reach all
// three; a Registrar keeps its lease alive through the leader. Under a
// steady stream of registrations written through the surviving members, the
// follower is killed, brought back, then the leader is killed. After each
// loss, both watchers must resume on another member (a change made after the
// loss arrives), miss nothing (their sets end equal to the store), and the
// Registrar's key must keep its lease, for longer than the TTL after the
// leader loss.
func TestWatcherMemberLoss(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	leader := c.WaitLeader(t)
	follower := membersBut(c, leader)[0]
	admin := c.Client(t)
	put(t, admin, "svc/seed", ep("seed", "10.0.0.1:80"))

	// The Registrar's keepalive stream goes to the leader.
	const ttl = 5 * time.Second
	regCli, regOpen := pinnedClient(t, c, leader)
	regLogs := &logBuffer{}
	reg := newRegistrar(t, regCli, "svc", ep("reg", "10.0.0.2:80"), WithTTL(ttl), WithRegistrarLogger(newLogger(regLogs)))
	lease, _ := keyLease(t, admin, reg.Key())
	if lease == 0 {
		t.Fatalf("%s has no lease", reg.Key())
	}
	// A client has one keepalive stream, shared by its leases: once a
	// keepalive of ours is answered, it is up, on the leader.
	kctx, kcancel := context.WithCancel(testCtx(t))
	kch, err := regCli.KeepAlive(kctx, lease)
	if err != nil {
		t.Fatalf("KeepAlive: %v", err)
	}
	select {
	case <-kch:
	case <-kctx.Done():
		t.Fatal("no keepalive answered")
	}
	kcancel()
	regOpen()

	type watched struct {
		name string
		w    *Watcher
		rec  *recorder
	}
	var ws []watched
	var opens []func()
	for _, m := range []*etcdtest.Member{follower, leader} {
		cli, open := pinnedClient(t, c, m)
		w := startWatcher(t, cli, "svc", WithLogger(tLogger(t)))
		ws = append(ws, watched{"watch on " + m.Name(), w, record(t, w)})
		opens = append(opens, open)
	}
	// A change seen by both proves their watches run, on their member.
	put(t, admin, "svc/up", ep("up", "10.0.0.3:80"))
	for _, x := range ws {
		x.rec.wait(t, x.name+": watch up", time.Time{}, func(s discovery.State) bool { return strings.Contains(set(s), "up=") })
	}
	for _, open := range opens {
		open()
	}

	var leaderLost time.Time
	for i, victim := range []*etcdtest.Member{follower, leader} {
		what := fmt.Sprintf("loss of %s (%s)", victim.Name(), map[bool]string{true: "leader", false: "follower"}[victim == leader])
		survivors := c.Client(t, membersBut(c, victim)...)
		name := fmt.Sprintf("p%dc", i)
		stop := make(chan struct{})
		type result struct{ steps, failed int }
		done := make(chan result, 1)
		var progress atomic.Int64
		go func() {
			steps, failed := churn(survivors, "svc", name, 2+2*i, 1000, &progress, stop)
			done <- result{steps, failed}
		}()
		stopChurn := func() result { close(stop); return <-done }
		lists := make([]uint64, len(ws))
		for j, x := range ws {
			x.rec.wait(t, x.name+": churn under way", time.Time{}, func(s discovery.State) bool { return strings.Contains(set(s), name+"1=") })
			lists[j] = x.w.lists.Load()
		}

		t0 := time.Now()
		victim.Stop()
		stopTook := time.Since(t0)
		if victim == leader {
			leaderLost = t0
		}
		mark := fmt.Sprintf("mark%d", i)
		atLoss := progress.Load()
		committed := putRetry(t, survivors, "svc/"+mark, ep(mark, fmt.Sprintf("10.0.9.%d:80", i)))
		for _, x := range ws {
			st := x.rec.wait(t, x.name+": "+mark+" after the "+what, t0, func(s discovery.State) bool { return strings.Contains(set(s), mark+"=") })
			fromLoss, fromCommit := st.at.Sub(t0), st.at.Sub(committed)
			t.Logf("%s, %s: resumed %v after the loss (stop took %v; first commit after it at %v), %v after that commit",
				what, x.name, fromLoss.Round(time.Millisecond), stopTook.Round(time.Millisecond),
				committed.Sub(t0).Round(time.Millisecond), fromCommit.Round(time.Millisecond))
			if fromCommit > resumeAfterCommit || fromLoss > resumeAfterLoss {
				t.Errorf("%s, %s: resumed %v after the loss, %v after the first commit; want <= %v and <= %v",
					what, x.name, fromLoss, fromCommit, resumeAfterLoss, resumeAfterCommit)
			}
		}
		// Keep churning for a while after the watchers resumed.
		for tick := time.NewTicker(15 * time.Millisecond); progress.Load() < atLoss+churnAfter; {
			select {
			case <-tick.C:
			case <-testCtx(t).Done():
				t.Fatalf("churn stuck at step %d", progress.Load())
			}
		}
		res := stopChurn()
		want := truth(t, survivors, "svc")
		for j, x := range ws {
			x.rec.wait(t, x.name+": the store's set", t0, func(s discovery.State) bool { return s.Err == nil && set(s) == want })
			t.Logf("%s, %s: set equals the store (%d endpoints) after %d churn steps (%d writes retried); %d relists",
				what, x.name, strings.Count(want, "="), res.steps, res.failed, x.w.lists.Load()-lists[j])
		}
		if got, _ := keyLease(t, survivors, reg.Key()); got != lease {
			t.Errorf("after the %s, %s has lease %x; want the original %x", what, reg.Key(), got, lease)
		}
		if victim == follower {
			victim.Restart(t)
		}
	}

	// The lease outlives its TTL after the leader loss only if its
	// keepalives resumed through another member.
	survivors := c.Client(t, membersBut(c, leader)...)
	select {
	case <-time.After(time.Until(leaderLost.Add(ttl + 2*time.Second))):
	case <-testCtx(t).Done():
	}
	got, _ := keyLease(t, survivors, reg.Key())
	ttlResp, err := survivors.TimeToLive(testCtx(t), lease)
	if err != nil {
		t.Fatalf("TimeToLive: %v", err)
	}
	t.Logf("%v after the leader loss: %s has lease %x (original %x), remaining TTL %d s", time.Since(leaderLost).Round(time.Millisecond), reg.Key(), got, lease, ttlResp.TTL)
	if got != lease || ttlResp.TTL <= 0 {
		t.Errorf("lease %x did not survive: key has lease %x, remaining TTL %d", lease, got, ttlResp.TTL)
	}
	if strings.Contains(regLogs.String(), "lease lost") {
		t.Errorf("the Registrar lost its lease:\n%s", regLogs.String())
	}
}

// detectBound is FAULTS row 16's figure: a watch on a member cut off from
// the leader is noticed within 5 s.
//
// etcd cancels a watch that requires a leader when its member has had none
// for three election timeouts in a row (checked once per election timeout),
// and a cut-off follower loses its leader one to two election timeouts after
// the cut: detection takes 4 to 6 election timeouts. With etcd's default of
// 1 s that is 4-6 s (this test measures about 3.9 s that way), at the very
// edge of the bound, so the cluster here runs with 500 ms (heartbeat 100
// ms, still far above loopback round trips) and the bound has room for a
// slow box.
const (
	detectBound       = 5 * time.Second
	partitionElection = 500 * time.Millisecond
)

// TestWatcherMemberPartitioned is FAULTS row 16. A follower is cut off from
// the leader and the third member (its peer traffic held back, silently; its
// clients still reach it). Two watchers have their watch on it: "solo",
// whose client knows only that member, and "multi", whose client knows all
// three once the cut is made (its watch is on the member cut off). etcd
// cancels a watch that requires a leader once its member has
// none (ErrNoLeader). Then solo must report an error and keep its last good
// set, and multi must list and watch again through another member and see a
// change made during the partition. Both must notice within 5 s and keep the
// last good set until they do; solo recovers when the member rejoins.
func TestWatcherMemberPartitioned(t *testing.T) {
	c := etcdtest.StartCluster(t, 3, etcdtest.WithElection(100*time.Millisecond, partitionElection))
	cut := membersBut(c, c.WaitLeader(t))[0]
	admin := c.Client(t, membersBut(c, cut)...)
	put(t, admin, "svc/a", ep("a", "10.0.0.1:80"))
	put(t, admin, "svc/b", ep("b", "10.0.0.2:80"))

	opts := []Option{WithLogger(tLogger(t)), WithRequestTimeout(time.Second), WithBackoff(50*time.Millisecond, 500*time.Millisecond)}
	solo := startWatcher(t, c.Client(t, cut), "svc", opts...)
	listed := make(chan time.Time, 100)
	multiCli, open := pinnedClient(t, c, cut)
	multi := startWatcher(t, multiCli, "svc", append(opts, func(o *options) {
		o.onList = func(int64) {
			select {
			case listed <- time.Now():
			default:
			}
		}
	})...)
	recSolo, recMulti := record(t, solo), record(t, multi)
	put(t, admin, "svc/up", ep("up", "10.0.0.3:80"))
	const (
		good  = "a=10.0.0.1:80,b=10.0.0.2:80,up=10.0.0.3:80"
		later = "a=10.0.0.1:80,b=10.0.0.2:80,d=10.0.0.4:80,up=10.0.0.3:80" // with d, added during the partition
	)
	for _, r := range []*recorder{recSolo, recMulti} {
		r.wait(t, "watch up", time.Time{}, func(s discovery.State) bool { return set(s) == good })
	}

	t0 := time.Now()
	cut.Isolate()
	// multi's client learns the other members only now, so that its watch
	// is on the member cut off: a watch it started again before the cut
	// (a stall its progress check saw on a busy box, say) could otherwise
	// have gone to another member, where nothing is cut and nothing needs
	// listing again (CI saw "no list after the cut" so, once).
	open()
	st := recSolo.wait(t, "solo: error", t0, func(s discovery.State) bool { return s.Err != nil })
	detectSolo := st.at.Sub(t0)
	t.Logf("solo: error reported %v after the cut: %v", detectSolo.Round(time.Millisecond), st.s.Err)
	if set(st.s) != good {
		t.Errorf("solo: the error came with %s; want the last good set %s", describe(st.s), good)
	}

	var detectMulti time.Duration
	for detectMulti == 0 {
		select {
		case at := <-listed:
			if !at.Before(t0) {
				detectMulti = at.Sub(t0)
			}
		case <-testCtx(t).Done():
			t.Fatal("multi: no list after the cut")
		}
	}
	t.Logf("multi: listed again %v after the cut", detectMulti.Round(time.Millisecond))
	committed := putRetry(t, admin, "svc/d", ep("d", "10.0.0.4:80"))
	st = recMulti.wait(t, "multi: change made during the partition", t0, func(s discovery.State) bool {
		return s.Err == nil && set(s) == later
	})
	t.Logf("multi: change made during the partition seen %v after its commit", st.at.Sub(committed).Round(time.Millisecond))
	if cut.HasLeader() {
		t.Errorf("%s has a leader again: the partition did not hold", cut.Name())
	}
	for _, x := range []struct {
		name  string
		r     *recorder
		until time.Time
	}{{"solo", recSolo, time.Now()}, {"multi", recMulti, st.at}} {
		for _, p := range x.r.since(t0) {
			if p.at.Before(x.until) && set(p.s) != good {
				t.Errorf("%s: during the partition, published %s; want the last good set %s", x.name, describe(p.s), good)
			}
		}
	}
	for name, d := range map[string]time.Duration{"solo": detectSolo, "multi": detectMulti} {
		if d > detectBound {
			t.Errorf("%s: partition noticed after %v; want <= %v", name, d, detectBound)
		}
	}

	cut.Rejoin()
	t1 := time.Now()
	st = recSolo.wait(t, "solo: recovery", t1, func(s discovery.State) bool { return s.Err == nil && set(s) == later })
	t.Logf("solo: recovered %v after the member rejoined", st.at.Sub(t1).Round(time.Millisecond))
}
