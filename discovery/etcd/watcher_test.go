package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/returns"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestWatcherListThenWatch(t *testing.T) {
	_, cli := startEtcd(t)
	put(t, cli, "svc/a", ep("a", "10.0.0.1:80"))
	put(t, cli, "svc/b", ep("b", "10.0.0.2:80"))
	put(t, cli, "svc2/x", ep("x", "10.0.0.9:80")) // sibling prefix: never seen
	put(t, cli, "svcx", ep("y", "10.0.0.8:80"))   // shares the string prefix only

	w := startWatcher(t, cli, "svc")
	s := waitSet(t, w, "a=10.0.0.1:80", "b=10.0.0.2:80")
	if s.Synced.IsZero() || s.Version == 0 {
		t.Errorf("first state: Synced %v, Version %d; want both set", s.Synced, s.Version)
	}

	put(t, cli, "svc/c", discovery.Endpoint{Addr: "10.0.0.3:80", Weight: 3, Zone: "z1", Tags: []string{"t"}, Meta: map[string]string{"k": "v"}})
	s = waitSet(t, w, "a=10.0.0.1:80", "b=10.0.0.2:80", "c=10.0.0.3:80")
	c := s.Endpoints[2]
	if c.Weight != 3 || c.Zone != "z1" || len(c.Tags) != 1 || c.Meta["k"] != "v" {
		t.Errorf("c = %+v; want weight 3, zone z1, tags [t], meta k=v", c)
	}

	del(t, cli, "svc/a")
	put(t, cli, "svc2/z", ep("z", "10.0.0.7:80"))
	put(t, cli, "svc/b", ep("b", "10.0.0.22:80")) // moved
	s = waitSet(t, w, "b=10.0.0.22:80", "c=10.0.0.3:80")
	for _, e := range s.Endpoints {
		if e.ID == "x" || e.ID == "y" || e.ID == "z" {
			t.Errorf("endpoint %q from another prefix leaked into svc", e.ID)
		}
	}

	// Deleting everything is an authoritative empty set, not an error.
	del(t, cli, "svc/b")
	del(t, cli, "svc/c")
	s = waitState(t, w, "empty set", func(s discovery.State) bool { return len(s.Endpoints) == 0 })
	if s.Err != nil {
		t.Errorf("empty prefix reported an error: %v", s.Err)
	}
}

func TestWatcherEmptyPrefix(t *testing.T) {
	_, cli := startEtcd(t)
	w := startWatcher(t, cli, "nothing/here/")
	s := waitState(t, w, "first state", func(discovery.State) bool { return true })
	if s.Err != nil || len(s.Endpoints) != 0 || s.Endpoints == nil {
		t.Fatalf("first state %s; want an empty, non-nil set without error", describe(s))
	}
}

// TestWatcherCompaction holds the watcher between its list (at revision R)
// and its watch, makes many changes and compacts past R. The watch from R+1
// fails with ErrCompacted; the watcher must list again and end with exactly
// what etcd holds.
func TestWatcherCompaction(t *testing.T) {
	_, cli := startEtcd(t)
	for i := range 5 {
		put(t, cli, key("svc", i), ep(id(i), addr(i)))
	}

	listed := make(chan int64, 10)
	release := make(chan struct{})
	first := true
	w := startWatcher(t, cli, "svc", func(o *options) {
		o.onList = func(rev int64) {
			select { // never block the watcher goroutine on the test
			case listed <- rev:
			default:
			}
			if first {
				first = false
				select { // held until the test has compacted
				case <-release:
				case <-time.After(waitTimeout):
				}
			}
		}
	})
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	}) // runs before the watcher's Close

	ctx := testCtx(t)
	var rev int64
	select {
	case rev = <-listed:
	case <-ctx.Done():
		t.Fatal("no list")
	}
	// The watcher is blocked: 40 changes it cannot see, then compaction.
	var last int64
	for i := range 20 {
		put(t, cli, key("svc", 5+i), ep(id(5+i), addr(5+i)))
		last = del(t, cli, key("svc", i))
	}
	if _, err := cli.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if last <= rev+1 {
		t.Fatalf("compacted at %d, not past the watch revision %d", last, rev+1)
	}
	released = true
	close(release)

	want := truth(t, cli, "svc")
	if strings.Count(want, "=") != 5 {
		t.Fatalf("truth is %q; want 5 endpoints", want)
	}
	// "Publish atomically": the relist replaces the set from before the
	// compaction (the first State) in one publication. Next returns the
	// newest State only, so an intermediate one (an empty set, a partial
	// one) shows as a gap in the Versions, which move on every change.
	before := waitState(t, w, "the first set", func(discovery.State) bool { return true })
	after := waitSet(t, w, strings.Split(want, ",")...)
	if after.Version != before.Version+1 {
		t.Errorf("the relisted set is Version %d, the set before the compaction %d: %d publications in between",
			after.Version, before.Version, after.Version-before.Version-1)
	}
	select {
	case r := <-listed:
		if r < last {
			t.Errorf("relisted at revision %d, before the compaction at %d", r, last)
		}
	default:
		t.Errorf("the watcher did not list again after compaction")
	}

	// Not frozen: a later change still arrives through the new watch.
	put(t, cli, "svc/late", ep("late", "10.0.1.1:80"))
	waitState(t, w, "late endpoint", func(s discovery.State) bool { return strings.Contains(set(s), "late=10.0.1.1:80") })
}

// TestWatcherEtcdRestart stops etcd under a watcher: the watcher keeps the
// last known good set and reports the error, then resumes after the restart
// and sees changes made after it.
func TestWatcherEtcdRestart(t *testing.T) {
	srv, cli := startEtcd(t)
	put(t, cli, "svc/a", ep("a", "10.0.0.1:80"))
	w := startWatcher(t, cli, "svc",
		WithProgressInterval(200*time.Millisecond),
		WithRequestTimeout(500*time.Millisecond),
		WithBackoff(50*time.Millisecond, 200*time.Millisecond))
	waitSet(t, w, "a=10.0.0.1:80")

	srv.Stop()
	s := waitState(t, w, "an error while etcd is down", func(s discovery.State) bool { return s.Err != nil })
	if set(s) != "a=10.0.0.1:80" {
		t.Errorf("while etcd is down: %s; want the last known good set a=10.0.0.1:80", describe(s))
	}
	if s.Synced.IsZero() {
		t.Errorf("Synced is zero; want the time of the last good answer")
	}
	// An unreachable etcd is named: "context deadline exceeded" alone
	// says nothing of which servers were tried.
	down := s
	if !strings.Contains(s.Err.Error(), "etcd: list") {
		down = waitState(t, w, "the list's error", func(s discovery.State) bool {
			return s.Err != nil && strings.Contains(s.Err.Error(), "etcd: list")
		})
	}
	if ep := cli.Endpoints()[0]; !strings.Contains(down.Err.Error(), ep) {
		t.Errorf("State.Err = %v; want it to name the endpoint %s", down.Err, ep)
	}

	srv.Restart(t)
	put(t, cli, "svc/b", ep("b", "10.0.0.2:80"))
	waitSet(t, w, "a=10.0.0.1:80", "b=10.0.0.2:80")
}

// TestWatcherStall blackholes the connection to etcd (no RST, no FIN): the
// watch goes silent. The progress watchdog must notice, list again (which
// fails, so the error is reported with the last known good set), and
// recover when the path heals.
func TestWatcherStall(t *testing.T) {
	srv, direct := startEtcd(t)
	p := newProxy(t, srv.Hosts()[0])
	cli := p.client(t)
	put(t, direct, "svc/a", ep("a", "10.0.0.1:80"))
	w := startWatcher(t, cli, "svc",
		WithLogger(tLogger(t)), WithProgressInterval(300*time.Millisecond),
		WithRequestTimeout(500*time.Millisecond),
		WithBackoff(50*time.Millisecond, 200*time.Millisecond))
	waitSet(t, w, "a=10.0.0.1:80")

	// Twice: first while the watch is established (an event went through
	// it), so the unanswered progress request is what notices; then right
	// after recovering, typically while the new watch is being created.
	for i, name := range []string{"b", "c"} {
		if i == 0 {
			put(t, direct, "svc/b0", ep("b0", "10.0.0.20:80"))
			waitState(t, w, "event through the watch", func(s discovery.State) bool { return strings.Contains(set(s), "b0=") })
		}
		p.blackhole(true)
		start := time.Now()
		s := waitState(t, w, "stall detected", func(s discovery.State) bool { return s.Err != nil })
		t.Logf("stall reported after %v: %v", time.Since(start).Round(time.Millisecond), s.Err)
		if s.Endpoints[0].ID != "a" {
			t.Errorf("during the stall: %s; want the last known good set", describe(s))
		}
		p.blackhole(false)
		put(t, direct, "svc/"+name, ep(name, "10.0.0.3"+strconv.Itoa(i)+":80"))
		waitState(t, w, "recovery", func(s discovery.State) bool { return s.Err == nil && strings.Contains(set(s), name+"=") })
	}
}

func TestWatcherGarbage(t *testing.T) {
	_, cli := startEtcd(t)
	put(t, cli, "svc/ok", ep("ok", "10.0.0.1:80"))
	putRaw(t, cli, "svc/str-meta", `{"Op":0,"Addr":"10.0.0.2:80","Metadata":"grpc attrs"}`)
	garbage := map[string]string{
		"svc/truncated": `{"Op":0,"Addr":"10.0.0.3:`,
		"svc/html":      "<html><body>502 Bad Gateway</body></html>",
		"svc/port0":     `{"Addr":"10.0.0.4:0"}`,
		"svc/spaces":    `{"Addr":" 10.0.0.5:80"}`,
		"svc/mcast":     `{"Addr":"224.0.0.1:80"}`,
		"svc/weight":    `{"Addr":"10.0.0.6:80","Metadata":{"weight":"heavy"}}`,
		"svc/huge":      `{"Addr":"10.0.0.7:80","Metadata":{"zone":"` + strings.Repeat("z", MaxValueSize) + `"}}`,
		"svc/dup":       `{"Addr":"10.0.0.1:80"}`, // same address as ok: Sanitize keeps the smaller ID, dup, and drops ok
	}
	for k, v := range garbage {
		putRaw(t, cli, k, v)
	}
	logs := &logBuffer{}
	w := startWatcher(t, cli, "svc", WithLogger(newLogger(logs)))
	// "dup" sorts before "ok", so Sanitize keeps dup and drops ok.
	waitSet(t, w, "dup=10.0.0.1:80", "str-meta=10.0.0.2:80")
	if got := w.Dropped(); got != uint64(len(garbage)) {
		t.Errorf("Dropped() = %d; want %d", got, len(garbage))
	}
	out := logs.String()
	for k := range garbage {
		name := k
		if k == "svc/dup" {
			name = "ok" // the dropped one is named by its ID
		}
		if !strings.Contains(out, name) {
			t.Errorf("no log line names %q:\n%s", name, out)
		}
	}

	// A prefix that turns entirely to garbage keeps the last known good set
	// and reports the error.
	_, cli2 := startEtcd(t)
	put(t, cli2, "one/a", ep("a", "10.0.0.1:80"))
	w2 := startWatcher(t, cli2, "one")
	waitSet(t, w2, "a=10.0.0.1:80")
	putRaw(t, cli2, "one/a", "<html>oops")
	s := waitState(t, w2, "all-garbage error", func(s discovery.State) bool { return s.Err != nil })
	if set(s) != "a=10.0.0.1:80" || !strings.Contains(s.Err.Error(), `one/a`) {
		t.Errorf("after garbage: %s; want a kept and an error naming one/a", describe(s))
	}
	put(t, cli2, "one/a", ep("a", "10.0.0.2:80"))
	waitSet(t, w2, "a=10.0.0.2:80")
}

func TestWatcherMaxEntries(t *testing.T) {
	_, cli := startEtcd(t)
	for i := range 3 {
		put(t, cli, key("svc", i), ep(id(i), addr(i)))
	}
	w := startWatcher(t, cli, "svc", WithMaxEntries(3), WithBackoff(20*time.Millisecond, 50*time.Millisecond))
	waitSet(t, w, "e0=10.1.0.0:80", "e1=10.1.0.1:80", "e2=10.1.0.2:80")
	put(t, cli, key("svc", 3), ep(id(3), addr(3)))
	s := waitState(t, w, "too many", func(s discovery.State) bool { return s.Err != nil })
	if !strings.Contains(s.Err.Error(), "more than the limit of 3") || len(s.Endpoints) != 3 {
		t.Errorf("over the cap: %s; want the limit error and the last 3 endpoints", describe(s))
	}
	del(t, cli, key("svc", 0))
	waitSet(t, w, "e1=10.1.0.1:80", "e2=10.1.0.2:80", "e3=10.1.0.3:80")
}

func TestResolveNowFresh(t *testing.T) {
	_, cli := startEtcd(t)
	listed := make(chan int64, 100)
	w := startWatcher(t, cli, "svc", func(o *options) {
		o.onList = func(rev int64) {
			select {
			case listed <- rev:
			default:
			}
		}
	})
	waitSet(t, w)
	<-listed

	rev := put(t, cli, "svc/a", ep("a", "10.0.0.1:80"))
	start := time.Now()
	w.ResolveNow()
	ctx := testCtx(t)
	select {
	case r := <-listed:
		if r < rev {
			t.Errorf("forced list at revision %d, before the change at %d", r, rev)
		}
		t.Logf("forced list %v after ResolveNow", time.Since(start).Round(time.Millisecond))
	case <-ctx.Done():
		t.Fatal("ResolveNow did not list")
	}
	waitSet(t, w, "a=10.0.0.1:80")
}

// A ResolveNow inside the resolve interval of the last forced list is not
// dropped: it is served at the interval's end.
func TestResolveNowInsideTheIntervalIsServedAtItsEnd(t *testing.T) {
	_, cli := startEtcd(t)
	const interval = 400 * time.Millisecond
	listed := make(chan time.Time, 100)
	w := startWatcher(t, cli, "svc", WithResolveInterval(interval), func(o *options) {
		o.onList = func(int64) {
			select {
			case listed <- time.Now():
			default:
			}
		}
	})
	waitSet(t, w)
	<-listed
	w.ResolveNow()
	var first time.Time
	select {
	case first = <-listed:
	case <-time.After(5 * time.Second):
		t.Fatal("ResolveNow did not list")
	}
	w.ResolveNow() // inside the interval
	select {
	case second := <-listed:
		// Measured from the end of the first list, which started the
		// interval a little earlier: half of it is a bound a slow list
		// on a loaded machine cannot break.
		if gap := second.Sub(first); gap < interval/2 {
			t.Errorf("a ResolveNow inside the interval listed %v after the last forced list; want about %v", gap, interval)
		}
	case <-time.After(interval + 4*time.Second): // dropped, it is never served
		t.Fatalf("a ResolveNow inside the interval was not served within %v", interval+4*time.Second)
	}
}

func TestResolveNowCoalesced(t *testing.T) {
	_, cli := startEtcd(t)
	const interval = 200 * time.Millisecond
	w := startWatcher(t, cli, "svc", WithResolveInterval(interval))
	waitSet(t, w)

	before := w.lists.Load()
	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for range 500 {
		w.ResolveNow()
		<-tick.C
	}
	elapsed := time.Since(start)
	// Let the last scheduled read happen, then count.
	put(t, cli, "svc/a", ep("a", "10.0.0.1:80"))
	waitSet(t, w, "a=10.0.0.1:80")
	reads := w.lists.Load() - before
	limit := uint64(elapsed/interval) + 2
	t.Logf("500 ResolveNow calls over %v: %d reads (limit %d)", elapsed.Round(time.Millisecond), reads, limit)
	if reads == 0 || reads > limit {
		t.Errorf("%d reads for 500 ResolveNow calls over %v; want 1..%d", reads, elapsed, limit)
	}
}

func TestCloseWithWatchInFlight(t *testing.T) {
	srv, cli := startEtcd(t)
	w, err := New(cli, "svc")
	if err != nil {
		t.Fatal(err)
	}
	waitSet(t, w)
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a watch in flight", d)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Next after Close: %v; want ErrClosed", err)
	}

	// A list blocked on an unreachable etcd does not hold Close either.
	w2, err := New(cli, "svc", WithRequestTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	waitSet(t, w2)
	srv.Stop()
	w2.ResolveNow()
	start = time.Now()
	if err := w2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with etcd down", d)
	}
}

// ResolveNow never blocks while etcd stalls (a proxy that holds back all
// traffic: the forced lists it asks for hang to the request timeout), even
// from several goroutines at once; Close, called from two goroutines while
// they call it, returns once the watcher goroutine has exited, both calls
// with the same result; Next then returns discovery.ErrClosed, and
// ResolveNow after Close still returns.
func TestResolveNowNeverBlocksOnAStalledEtcdAndCloseRacesIt(t *testing.T) {
	srv, direct := startEtcd(t)
	p := newProxy(t, srv.Hosts()[0])
	cli := p.client(t)
	put(t, direct, "svc/a", ep("a", "10.0.0.1:80"))
	w, err := New(cli, "svc", WithLogger(tLogger(t)), WithRequestTimeout(time.Minute),
		WithResolveInterval(time.Millisecond), WithProgressInterval(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, "a=10.0.0.1:80")
	bounded := func(what string, fn func()) { t.Helper(); returns.Within(t, 2*time.Second, what, fn) }
	p.blackhole(true)
	stopCallers := returns.Loop(4, w.ResolveNow)
	bounded("ResolveNow", w.ResolveNow)
	time.Sleep(100 * time.Millisecond) // a forced list is under way, and hangs
	var errs [2]error
	bounded("two concurrent Closes", func() {
		var wg sync.WaitGroup
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = w.Close() }()
		}
		wg.Wait()
	})
	stopCallers()
	if errs[0] != errs[1] {
		t.Errorf("concurrent Closes returned %v and %v; want the same result", errs[0], errs[1])
	}
	bounded("ResolveNow after Close", w.ResolveNow)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Next after Close = %v; want discovery.ErrClosed", err)
	}
	p.blackhole(false)
}

func TestNewRejects(t *testing.T) {
	_, cli := startEtcd(t)
	if _, err := New(nil, "svc"); err == nil {
		t.Error("New(nil client) succeeded")
	}
	for _, p := range []string{"", "/", "//"} {
		if _, err := New(cli, p); err == nil || !strings.HasPrefix(err.Error(), "etcd: ") {
			t.Errorf("New(prefix %q) = %v; want an etcd: error", p, err)
		}
	}
}

func key(prefix string, i int) string { return prefix + "/" + id(i) }
func id(i int) string                 { return "e" + strconv.Itoa(i) }
func addr(i int) string               { return fmt.Sprintf("10.1.%d.%d:80", i/250, i%250) }

// An idle registry is not a stall: etcd sends no progress notification to a
// watch that starts past the store's revision, and the watcher must not
// tear down and relist every few intervals because of it.
func TestIdleRegistryIsNotAStall(t *testing.T) {
	_, cli := startEtcd(t)
	put(t, cli, key("idle", 1), ep(id(1), addr(1)))
	w, err := New(cli, "idle", WithProgressInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	waitState(t, w, "the set", func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	before := w.lists.Load()
	time.Sleep(time.Second) // ten progress intervals with no writes at all
	if n := w.lists.Load() - before; n != 0 {
		t.Fatalf("%d relists in 1 s of an idle registry, want 0", n)
	}
	// Writes under another prefix end the idle spell: a progress request
	// that went out unanswered while the store was idle, then a write
	// before the watcher looked, must not count as a stall either (the
	// old code listed again, every time).
	for i := range 3 {
		put(t, cli, key("elsewhere", i), ep(id(9), addr(9)))
		time.Sleep(300 * time.Millisecond)
	}
	if n := w.lists.Load() - before; n != 0 {
		t.Fatalf("%d relists after writes under another prefix; want none", n)
	}
	// And a real change still arrives.
	put(t, cli, key("idle", 2), ep(id(2), addr(2)))
	waitState(t, w, "the change", func(s discovery.State) bool { return len(s.Endpoints) == 2 })
}

// Keys whose addresses are spellings of one address (brackets around an
// IPv4 address, a port with leading zeros) are one endpoint, at the
// canonical address.
func TestWatcherSpellingsOfOneAddressAreOneEndpoint(t *testing.T) {
	_, cli := startEtcd(t)
	putRaw(t, cli, "svc/a", `{"Op":0,"Addr":"[10.0.0.1]:80"}`)
	putRaw(t, cli, "svc/b", `{"Op":0,"Addr":"10.0.0.1:0080"}`)
	putRaw(t, cli, "svc/c", `{"Op":0,"Addr":"10.0.0.1:80"}`)
	putRaw(t, cli, "svc/d", `{"Op":0,"Addr":"[2001:DB8::0:1]:443"}`)
	w := startWatcher(t, cli, "svc")
	waitSet(t, w, "a=10.0.0.1:80", "d=[2001:db8::1]:443")
	if n := w.Dropped(); n != 2 {
		t.Fatalf("Dropped = %d, want 2 (b and c repeat a's address)", n)
	}
}

// When the etcd behind the watcher is replaced by one at a lower revision
// (a snapshot restore, a wiped member restarted), the client resumes the
// watch from a revision the new store will not reach for a long time, and
// nothing arrives. The watcher notices the revision went back and lists
// again, instead of publishing the old set as fresh for as long as that
// takes (review finding: 12 s of the old set, Synced kept fresh).
func TestRevisionGoingBackListsAgain(t *testing.T) {
	srvA, cliA := startEtcd(t)
	srvB, cliB := startEtcd(t)
	for range 50 { // A's revision runs well ahead of B's
		put(t, cliA, "other/k", ep("k", "10.9.9.9:80"))
	}
	put(t, cliA, "svc/a", ep("a", "10.0.0.1:80"))
	put(t, cliB, "svc/x", ep("x", "10.0.0.9:80"))
	px := newProxy(t, srvA.Hosts()[0])
	w := startWatcher(t, px.client(t), "svc", WithProgressInterval(200*time.Millisecond))
	waitSet(t, w, "a=10.0.0.1:80")
	lists := w.lists.Load()
	px.switchTo(srvB.Hosts()[0])
	put(t, cliB, "svc/y", ep("y", "10.0.0.10:80"))
	waitSet(t, w, "x=10.0.0.9:80", "y=10.0.0.10:80")
	if w.lists.Load() == lists {
		t.Fatal("the new store's set arrived without a new list")
	}
}

// An unparsable value is counted and logged once, not again on every list
// (review finding: 10 ResolveNow lists made Dropped 11 and logged 11 lines
// for one key). A new bad value under the key counts again.
func TestInvalidEntryCountedOnceAcrossLists(t *testing.T) {
	_, cli := startEtcd(t)
	put(t, cli, "svc/ok", ep("ok", "10.0.0.1:80"))
	putRaw(t, cli, "svc/bad", "<html>502</html>")
	logs := &logBuffer{}
	w := startWatcher(t, cli, "svc", WithLogger(newLogger(logs)), WithResolveInterval(time.Millisecond))
	waitSet(t, w, "ok=10.0.0.1:80")
	for range 5 {
		lists := w.lists.Load()
		w.ResolveNow()
		waitFor(t, "a forced list", func() bool { return w.lists.Load() > lists })
	}
	put(t, cli, "svc/ok2", ep("ok2", "10.0.0.2:80")) // an event after the lists, published after them
	waitSet(t, w, "ok=10.0.0.1:80", "ok2=10.0.0.2:80")
	if n := w.Dropped(); n != 1 {
		t.Fatalf("Dropped() = %d after 6 lists of one bad key; want 1", n)
	}
	if n := strings.Count(logs.String(), "dropping invalid entry"); n != 1 {
		t.Fatalf("%d log lines for one bad key; want 1", n)
	}
	putRaw(t, cli, "svc/bad", `{"Addr":"10.0.0.3:0"}`)
	waitFor(t, "the new bad value counted", func() bool { return w.Dropped() == 2 })
}

// A prefix whose every remaining key is invalid keeps the last good value
// of each key still listed, but not of a key deleted or turned critical: the
// registry said for certain that that node is gone (review finding: a
// deleted endpoint stayed published for as long as an invalid key
// remained).
func TestAllInvalidKeepsOnlyKeysStillListed(t *testing.T) {
	_, cli := startEtcd(t)
	put(t, cli, "svc/a", ep("a", "10.0.0.1:80"))
	put(t, cli, "svc/b", ep("b", "10.0.0.2:80"))
	put(t, cli, "svc/c", ep("c", "10.0.0.3:80"))
	putRaw(t, cli, "svc/x", "<html>502</html>")
	w := startWatcher(t, cli, "svc")
	waitSet(t, w, "a=10.0.0.1:80", "b=10.0.0.2:80", "c=10.0.0.3:80")

	del(t, cli, "svc/c")
	putRaw(t, cli, "svc/b", `{"Addr":"10.0.0.2:80","Metadata":{"health":"critical"}}`)
	waitSet(t, w, "a=10.0.0.1:80")
	// The last valid key turns invalid: its last good value stays.
	putRaw(t, cli, "svc/a", "<html>oops")
	s := waitState(t, w, "an error keeping a", func(s discovery.State) bool {
		return s.Err != nil && set(s) == "a=10.0.0.1:80"
	})
	if !strings.Contains(s.Err.Error(), "invalid") {
		t.Errorf("error %v; want one saying the entries are invalid", s.Err)
	}
	// Deleting it, or marking it critical, leaves nothing, even though
	// an invalid key remains.
	put(t, cli, "svc/b", ep("b", "10.0.0.2:80"))
	waitSet(t, w, "b=10.0.0.2:80")
	putRaw(t, cli, "svc/b", `{"Addr":"10.0.0.2:80","Metadata":{"health":"critical"}}`)
	waitState(t, w, "an error with b critical", func(s discovery.State) bool {
		return s.Err != nil && len(s.Endpoints) == 0
	})
	put(t, cli, "svc/c", ep("c", "10.0.0.3:80"))
	waitSet(t, w, "c=10.0.0.3:80")
	del(t, cli, "svc/c")
	waitState(t, w, "an error with c deleted", func(s discovery.State) bool {
		return s.Err != nil && len(s.Endpoints) == 0
	})
	put(t, cli, "svc/d", ep("d", "10.0.0.4:80"))
	waitSet(t, w, "d=10.0.0.4:80")
}

// TestWatchersSharingAClientDoNotRelist starts two Watchers on one client:
// etcd answers a progress request for a whole gRPC stream, so on a shared
// stream the one whose watch starts past the store's revision (nothing
// written since its list) silenced the progress the other asked for, and
// the other listed again for nothing. Each Watcher now watches on a stream
// of its own.
func TestWatchersSharingAClientDoNotRelist(t *testing.T) {
	_, cli := startEtcd(t)
	put(t, cli, key("shb", 1), ep(id(1), addr(1)))
	b := startWatcher(t, cli, "shb", WithProgressInterval(100*time.Millisecond))
	waitState(t, b, "b's set", func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	put(t, cli, key("sha", 1), ep(id(2), addr(2))) // b's watch is now behind the store
	a := startWatcher(t, cli, "sha", WithProgressInterval(100*time.Millisecond))
	waitState(t, a, "a's set", func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	la, lb := a.lists.Load(), b.lists.Load()
	time.Sleep(2 * time.Second) // twenty progress intervals, nothing written
	if na, nb := a.lists.Load()-la, b.lists.Load()-lb; na != 0 || nb != 0 {
		t.Fatalf("relists in 2 s with nothing written: %d by a, %d by b; want none", na, nb)
	}
}

// TestWriteElsewhereRightAfterTheListIsNotAStall is the turn right after a
// list: the first progress request goes unanswered (nothing written since
// the list), then a write under another prefix comes before the watcher
// looks. The list saw the store idle, so the watcher asks once more rather
// than listing again.
func TestWriteElsewhereRightAfterTheListIsNotAStall(t *testing.T) {
	_, cli := startEtcd(t)
	const d = 200 * time.Millisecond
	put(t, cli, key("ft", 1), ep(id(1), addr(1)))
	listed := make(chan time.Time, 100)
	w := startWatcher(t, cli, "ft", WithProgressInterval(d), func(o *options) {
		o.onList = func(int64) { listed <- time.Now() }
	})
	waitState(t, w, "the set", func(s discovery.State) bool { return len(s.Endpoints) == 1 })
	at := <-listed
	before := w.lists.Load()
	time.Sleep(time.Until(at.Add(3 * d / 2))) // after the first request, before the look
	put(t, cli, key("elsewhere", 1), ep(id(9), addr(9)))
	time.Sleep(4 * d)
	if n := w.lists.Load() - before; n != 0 {
		t.Fatalf("%d relists after a write under another prefix 1.5 intervals after the list; want none", n)
	}
}

// TestWatchersClosedBeforeTheirWatchLeaveNoStreams closes Watchers on a
// shared client between their list and their watch. The client makes a
// stream for a watch context's metadata before it looks at the context, and
// a stream no watch joins stays open until the client closes: with a stream
// key of its own per Watcher, each such Close left one (and its goroutines).
func TestWatchersClosedBeforeTheirWatchLeaveNoStreams(t *testing.T) {
	_, cli := startEtcd(t)
	put(t, cli, key("lk", 1), ep(id(1), addr(1)))
	time.Sleep(200 * time.Millisecond)
	g0 := runtime.NumGoroutine()
	for range 10 {
		hold, listed := make(chan struct{}), make(chan struct{})
		w, err := New(cli, "lk", WithLogger(newLogger(&logBuffer{})), func(o *options) {
			o.onList = func(int64) { close(listed); <-hold }
		})
		if err != nil {
			t.Fatal(err)
		}
		<-listed
		closed := make(chan struct{})
		go func() { w.Close(); close(closed) }()
		time.Sleep(20 * time.Millisecond) // Close has cancelled the run
		close(hold)
		<-closed
	}
	// A stream costs the client several goroutines; allow a few strays.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > g0+8 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > g0+8 {
		t.Fatalf("%d goroutines after 10 Watchers closed between list and watch, %d before: streams left open", g, g0)
	}
}

// endpointsText never shows userinfo, and bounds what a long list adds.
func TestEndpointsTextLeavesOutCredentials(t *testing.T) {
	got := endpointsText([]string{"http://alice:s3cret@10.0.0.1:2379", "bob:pw@10.0.0.2:2379", "10.0.0.3:2379", "unix:///run/a@b.sock"})
	if want := "http://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379,unix:///run/a@b.sock"; got != want {
		t.Errorf("endpointsText = %q, want %q", got, want)
	}
	many := make([]string, 100)
	for i := range many {
		many[i] = "10.0.0.1:2379"
	}
	if got := endpointsText(many); len(got) > 260 {
		t.Errorf("endpointsText of 100 endpoints is %d bytes; want it clipped near 256", len(got))
	}
}

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

// A ResolveNow made while a list is in flight (here the first one, after
// its read) is not served by that list, whose read may predate the call: it
// stays pending and forces one more list at once (no forced list yet, so
// the resolve interval does not hold it back). It is neither lost nor
// repeated.
func TestResolveNowDuringAListIsServedByTheNextList(t *testing.T) {
	_, cli := startEtcd(t)
	listed := make(chan time.Time, 100)
	ready := make(chan struct{})
	var w *Watcher
	first := true
	w = startWatcher(t, cli, "svc", func(o *options) {
		o.onList = func(int64) {
			if first { // the watcher goroutine only
				first = false
				<-ready
				w.ResolveNow()
			}
			listed <- time.Now()
		}
	})
	close(ready)
	<-listed
	select {
	case <-listed:
	case <-time.After(5 * time.Second):
		t.Fatal("a ResolveNow made during the first list was lost")
	}
	time.Sleep(time.Second)
	if n := w.lists.Load(); n != 2 {
		t.Fatalf("%d lists after one ResolveNow during the first list; want 2", n)
	}
}
