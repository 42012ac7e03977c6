package consultest

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clusterReady bounds how long a Cluster may take to elect its first leader.
const clusterReady = 30 * time.Second

// Cluster is several Consul servers (consul agent -server, not -dev) forming
// one datacenter on loopback: each on its own free ports, with its own data
// directory under t.TempDir(), joined through serf (-retry-join) and
// bootstrapped together (-bootstrap-expect). Raft runs with
// raft_multiplier = 1, the timing Consul recommends for production
// (elections in a second or two, where the default of 5 takes several).
// Stopping a server (Agent.Stop) kills it, as a crash would: it stays a
// voter, so a 3-server cluster keeps its quorum with one killed.
type Cluster struct {
	agents []*Agent
}

// StartCluster starts n servers (3 for leader-loss tests) and blocks until
// they all follow one leader, at most 30 s; it tries again on new ports, up
// to 3 times, if that fails (a port taken meanwhile). The servers are killed
// by t.Cleanup.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := Binary(t)
	root := t.TempDir()
	var lastErr error
	var logs strings.Builder
	for attempt := range 3 {
		c := &Cluster{}
		for i := range n {
			a := &Agent{t: t, bin: bin, log: &syncBuffer{}, name: fmt.Sprintf("dialtone-s%d", i), in: c}
			for j := range a.ports {
				a.ports[j] = freePort(t)
			}
			dir := filepath.Join(root, fmt.Sprintf("try%d-s%d", attempt, i))
			a.flags = func(a *Agent) []string { return c.serverFlags(a, dir) }
			c.agents = append(c.agents, a)
		}
		if lastErr = c.start(); lastErr == nil {
			t.Cleanup(c.stop)
			return c
		}
		logs.Reset()
		for _, a := range c.agents {
			fmt.Fprintf(&logs, "--- %s\n%s", a.name, a.log.String())
		}
		c.stop()
	}
	t.Fatalf("consul cluster did not start: %v\n%s", lastErr, logs.String())
	return nil
}

// serverFlags are the flags of one server of c: data on disk, and every
// other server's serf address to join.
func (c *Cluster) serverFlags(a *Agent, dir string) []string {
	f := []string{"-server", "-bootstrap-expect", strconv.Itoa(len(c.agents)), "-data-dir", dir,
		"-retry-interval", "200ms", "-hcl", "performance { raft_multiplier = 1 }"}
	for _, o := range c.agents {
		if o != a {
			f = append(f, "-retry-join", "127.0.0.1:"+strconv.Itoa(o.ports[1]))
		}
	}
	return f
}

func (c *Cluster) start() error {
	for _, a := range c.agents {
		if err := a.launch(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReady)
	defer cancel()
	for {
		if l := c.leader(ctx); l != nil && c.agree(ctx, l) {
			return nil
		}
		for _, a := range c.agents {
			if !a.running() {
				return fmt.Errorf("server %s exited", a.name)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no leader within %v", clusterReady)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) stop() {
	var wg sync.WaitGroup
	for _, a := range c.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.Stop()
		}()
	}
	wg.Wait()
}

// Agents returns the servers, named dialtone-s0, dialtone-s1, ...
func (c *Cluster) Agents() []*Agent { return c.agents }

// Leader returns the running server that the running servers report as the
// raft leader, or nil if there is none (or it was killed).
func (c *Cluster) Leader() *Agent {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.leader(ctx)
}

// WaitLeader blocks until Leader returns a server, and returns it; the test
// fails after 30 s.
func (c *Cluster) WaitLeader(t testing.TB) *Agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterReady)
	defer cancel()
	for {
		if l := c.leader(ctx); l != nil {
			return l
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consul cluster: no leader within %v", clusterReady)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leader asks the running servers for the leader and returns the first
// answer that names a running server.
func (c *Cluster) leader(ctx context.Context) *Agent {
	for _, a := range c.agents {
		if !a.running() {
			continue
		}
		addr, err := a.leader(ctx)
		if err != nil || addr == "" {
			continue
		}
		for _, l := range c.agents {
			if addr == "127.0.0.1:"+strconv.Itoa(l.ports[3]) && l.running() {
				return l
			}
		}
	}
	return nil
}

// agree reports whether every running server follows l.
func (c *Cluster) agree(ctx context.Context, l *Agent) bool {
	want := "127.0.0.1:" + strconv.Itoa(l.ports[3])
	for _, a := range c.agents {
		if !a.running() {
			continue
		}
		if addr, err := a.leader(ctx); err != nil || addr != want {
			return false
		}
	}
	return true
}
