package etcdtest

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is several embedded etcd members forming one cluster on loopback,
// for member-loss and partition tests. Every member's client and peer URLs
// are TCP proxies (see Member.Stop and Member.Isolate), so faults look to
// clients and peers like a dead process or a cut network. Its methods are
// safe for concurrent use.
type Cluster struct {
	members []*Member
	net     *network
}

// Member is one member of a Cluster.
type Member struct {
	c            *Cluster
	idx          int
	name         string
	dir          string
	clientURL    url.URL // advertised: the client proxy
	peerURL      url.URL // advertised: the peer proxy
	listenClient url.URL
	listenPeer   url.URL
	initial      string // the initial-cluster flag
	opts         []Option

	mu   sync.Mutex
	etcd *embed.Etcd // nil while stopped
	id   uint64      // raft member ID, once started
}

// WithElection sets the raft heartbeat interval and election timeout
// (etcd's defaults are 100 ms and 1 s). A member cut off from the leader
// notices within one to two election timeouts, and etcd cancels watches that
// require a leader after three more.
func WithElection(heartbeat, election time.Duration) Option {
	return func(c *embed.Config) {
		c.TickMs = uint(heartbeat / time.Millisecond)
		c.ElectionMs = uint(election / time.Millisecond)
	}
}

// StartCluster starts n members (n >= 1; 3 for quorum tests) on free
// loopback ports, each with its own data directory under t.TempDir(), and
// blocks until every member is ready and they agree on a leader (at most
// 30 s, or the test fails). The members are stopped by t.Cleanup.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: StartCluster with %d members", n)
	}
	if !clientTLS(opts).Empty() {
		t.Fatalf("etcdtest: StartCluster does not support WithClientTLS")
	}
	c := &Cluster{net: newNetwork(n)}
	t.Cleanup(c.net.close) // after the members stop (cleanups run last-in first-out)
	root := t.TempDir()
	var initial []string
	for i := range n {
		m := &Member{c: c, idx: i, name: fmt.Sprintf("m%d", i), dir: filepath.Join(root, fmt.Sprintf("m%d", i)), opts: opts}
		cp, err := c.net.listen(i, false, m.listenClientHost)
		if err != nil {
			t.Fatalf("etcdtest: client proxy: %v", err)
		}
		pp, err := c.net.listen(i, true, m.listenPeerHost)
		if err != nil {
			t.Fatalf("etcdtest: peer proxy: %v", err)
		}
		m.clientURL = url.URL{Scheme: "http", Host: cp}
		m.peerURL = url.URL{Scheme: "http", Host: pp}
		initial = append(initial, m.name+"="+m.peerURL.String())
		c.members = append(c.members, m)
	}
	t.Cleanup(c.stopAll)
	for _, m := range c.members {
		m.initial = strings.Join(initial, ",")
	}

	// Members wait for each other to become ready: launch all, then wait.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.launch(true)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("etcdtest: start member m%d: %v", i, err)
		}
	}
	ids := make(map[uint64]int, n)
	for _, m := range c.members {
		_, id, _ := m.lead()
		ids[id] = m.idx
	}
	c.net.setIDs(ids)
	c.WaitLeader(t)
	return c
}

// Members returns the members, in the order of their names m0, m1, ...
func (c *Cluster) Members() []*Member { return c.members }

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.Endpoint()
	}
	return eps
}

// Client returns a client of the given members (all of them if none is
// given), closed by t.Cleanup. Like Server.Client, it does not block.
func (c *Cluster) Client(t testing.TB, members ...*Member) *clientv3.Client {
	t.Helper()
	if len(members) == 0 {
		members = c.members
	}
	eps := make([]string, len(members))
	for i, m := range members {
		eps[i] = m.Endpoint()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Leader returns the member that a majority of the members, itself
// included, currently follow as leader, or nil if there is none. Stopped
// members count as not agreeing.
func (c *Cluster) Leader() *Member {
	votes := map[uint64]int{}
	self := map[uint64]*Member{}
	for _, m := range c.members {
		if lead, id, ok := m.lead(); ok && lead != 0 {
			votes[lead]++
			if lead == id {
				self[id] = m
			}
		}
	}
	for id, m := range self {
		if votes[id] > len(c.members)/2 {
			return m
		}
	}
	return nil
}

// WaitLeader blocks until Leader returns a member, and returns it. The
// test fails after 30 s.
func (c *Cluster) WaitLeader(t testing.TB) *Member {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		if l := c.Leader(); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcdtest: no leader within %v", readyTimeout)
		}
		time.Sleep(20 * time.Millisecond) // polling raft state, bounded by the deadline
	}
}

func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Stop()
		}()
	}
	wg.Wait()
}

// Name returns the member's name, m0, m1, ...
func (m *Member) Name() string { return m.name }

// Endpoint returns the member's client URL, e.g. "http://127.0.0.1:40123".
// It stays the same across Stop and Restart.
func (m *Member) Endpoint() string { return m.clientURL.String() }

// HasLeader reports whether the member runs and follows (or is) a leader.
func (m *Member) HasLeader() bool {
	lead, _, ok := m.lead()
	return ok && lead != 0
}

// lead returns the ID of the leader the member follows (0: none) and its
// own ID, and false if the member is stopped.
func (m *Member) lead() (lead, self uint64, ok bool) {
	m.mu.Lock()
	e, self := m.etcd, m.id
	m.mu.Unlock()
	if e == nil {
		return 0, 0, false
	}
	return uint64(e.Server.Leader()), self, true
}

// Stop kills the member as if its process died: every connection to or from
// it is closed at once, new ones are refused, and the server stops without
// handing over leadership. Its data directory is kept for Restart. It is a
// no-op on a stopped member and waits until the member has stopped.
func (m *Member) Stop() {
	m.c.net.setDown(m.idx, true)
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	if e == nil {
		return
	}
	e.Server.HardStop() // no leadership transfer; Close then finds it stopped
	e.Close()
}

// Restart stops the member if it runs, then starts it again with the same
// data directory and URLs, and blocks until it has rejoined the cluster.
// The test fails if it cannot.
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	m.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := m.launch(false)
		if err == nil {
			return
		}
		if !isAddrInUse(err) || time.Now().After(deadline) {
			t.Fatalf("etcdtest: restart %s: %v", m.name, err)
		}
		time.Sleep(100 * time.Millisecond) // bounded by the deadline: waiting for the port to free
	}
}

// Isolate cuts the member off from its peers: traffic between them is held
// back, silently, on open connections, as in a network partition. Its
// clients still reach it. A follower loses its leader within one or two
// election timeouts, and a leader steps down as soon.
func (m *Member) Isolate() { m.c.net.setCut(m.idx, true) }

// Rejoin ends Isolate; the held traffic is delivered.
func (m *Member) Rejoin() { m.c.net.setCut(m.idx, false) }

// launch starts the member behind its proxies and waits until it is ready.
// On the first launch, it picks new listen ports and tries again when one
// was taken: the proxies' addresses, which peers and clients use, do not
// change.
func (m *Member) launch(first bool) error {
	var err error
	for range bindAttempts {
		if first {
			var ports []int
			if ports, err = freePorts(2); err != nil {
				return err
			}
			m.mu.Lock()
			m.listenClient = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
			m.listenPeer = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
			m.mu.Unlock()
		}
		m.c.net.setDown(m.idx, false)
		var e *embed.Etcd
		if e, err = embed.StartEtcd(memberConfig(m.name, m.dir, m.listenClient, m.clientURL, m.listenPeer, m.peerURL, m.initial, m.opts)); err == nil {
			if err = waitReady(e); err == nil {
				m.mu.Lock()
				m.etcd = e
				m.id = uint64(e.Server.MemberID())
				m.mu.Unlock()
				return nil
			}
		}
		m.c.net.setDown(m.idx, true)
		if !first || !isAddrInUse(err) {
			return err
		}
	}
	return err
}

func (m *Member) listenClientHost() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listenClient.Host
}

func (m *Member) listenPeerHost() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listenPeer.Host
}
