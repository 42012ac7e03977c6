// Package consultest starts a real Consul agent for integration tests.
//
// The agent binary is built from Consul's Go module by scripts/consul.sh
// (the README's test command runs it) and found through DIALTONE_CONSUL_BIN or
// the cache it writes. A missing binary fails the test: Consul tests are never
// skipped.
package consultest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the Consul version scripts/consul.sh builds.
const Version = "v1.22.0"

// Binary returns the path of the consul binary, or fails t.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("DIALTONE_CONSUL_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("DIALTONE_CONSUL_BIN=%s: %v", p, err)
		}
		return p
	}
	cache := os.Getenv("DIALTONE_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "dialtone")
	}
	p := filepath.Join(cache, "consul-"+Version, "consul")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no consul binary at %s: run scripts/consul.sh (or the README's test command, which does) first", p)
	}
	return p
}

// Agent is a consul agent -dev process on free loopback ports.
type Agent struct {
	t     testing.TB
	bin   string
	ports [4]int // http, serf-lan, serf-wan, server
	log   *syncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts an agent and waits until it has a leader. The agent is
// stopped by t.Cleanup.
func Start(t testing.TB) *Agent {
	t.Helper()
	a := &Agent{t: t, bin: Binary(t), log: &syncBuffer{}}
	for i := range a.ports {
		a.ports[i] = freePort(t)
	}
	a.start()
	t.Cleanup(a.Stop)
	return a
}

// Addr returns the HTTP API address, 127.0.0.1:port.
func (a *Agent) Addr() string { return "127.0.0.1:" + strconv.Itoa(a.ports[0]) }

func (a *Agent) start() {
	a.t.Helper()
	var lastErr error
	for attempt := range 3 {
		if attempt > 0 {
			// A port was taken between freePort and the agent binding it.
			for i := range a.ports {
				a.ports[i] = freePort(a.t)
			}
		}
		if lastErr = a.startOnce(); lastErr == nil {
			return
		}
	}
	a.t.Fatalf("consul agent did not start: %v\n%s", lastErr, a.log.String())
}

func (a *Agent) startOnce() error {
	p := a.ports
	cmd := exec.Command(a.bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(p[0]), "-grpc-port", "-1", "-grpc-tls-port", "-1", "-dns-port", "-1",
		"-serf-lan-port", strconv.Itoa(p[1]), "-serf-wan-port", strconv.Itoa(p[2]), "-server-port", strconv.Itoa(p[3]),
		"-log-level", "warn", "-disable-host-node-id", "-node", "dialtone-test")
	cmd.Stdout, cmd.Stderr = a.log, a.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+a.Addr()+"/v1/status/leader", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && len(bytes.Trim(b.Bytes(), `" `+"\n")) > 0 {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("agent exited: %v", cmd.ProcessState)
		case <-ctx.Done():
			a.Stop()
			return fmt.Errorf("no leader within 30 s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop kills the agent and waits for it to exit. Its catalog is lost: the
// agent runs in -dev mode, in memory.
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// Restart stops the agent and starts a new one on the same ports, with an
// empty catalog, so Consul's index starts again from a low number.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	if err := a.startOnce(); err != nil {
		a.t.Fatalf("consul agent restart: %v\n%s", err, a.log.String())
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		s.b.Reset()
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
