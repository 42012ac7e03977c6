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

	"github.com/dialtone-go/dialtone/internal/testcert"
	"github.com/hashicorp/consul/api"
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

// Agent is a consul agent process on free loopback ports: a single -dev
// agent (Start), or one server of a Cluster.
type Agent struct {
	t     testing.TB
	bin   string
	ports [4]int // http, serf-lan, serf-wan, server
	https int    // the HTTPS API's port (StartTLS); 0 for none
	log   *syncBuffer
	name  string                  // node name
	in    *Cluster                // the cluster of a server; nil for a -dev agent
	flags func(a *Agent) []string // mode flags (-dev, or -server and its cluster); set before start

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts an agent and waits until it has a leader. The agent is
// stopped by t.Cleanup.
func Start(t testing.TB) *Agent {
	t.Helper()
	return StartWithHCL(t)
}

// StartWithHCL starts a -dev agent as Start does, with extra configuration:
// each string is passed in one -hcl flag (ACLs, say).
func StartWithHCL(t testing.TB, hcl ...string) *Agent {
	t.Helper()
	return startDev(t, false, func(*Agent) []string {
		f := devFlags(nil)
		for _, h := range hcl {
			f = append(f, "-hcl", h)
		}
		return f
	})
}

// StartTLS starts a -dev agent as Start does that also serves its HTTP API
// over TLS (HTTPSAddr), with the server certificate and CA of files; with
// verifyIncoming, the HTTPS API requires a client certificate the CA signed.
// The plain HTTP API (Addr) stays on, for the harness's own requests.
func StartTLS(t testing.TB, files testcert.Files, verifyIncoming bool) *Agent {
	t.Helper()
	tlsHCL := fmt.Sprintf(`tls {
		defaults { ca_file = %q cert_file = %q key_file = %q }
		https { verify_incoming = %v } }`, files.CA, files.ServerCert, files.ServerKey, verifyIncoming)
	return startDev(t, true, func(a *Agent) []string {
		return append(devFlags(nil), "-https-port", strconv.Itoa(a.https), "-hcl", tlsHCL)
	})
}

// startDev starts a -dev agent with flags on free loopback ports (an HTTPS
// port too, with https), waits until it has a leader, and has t.Cleanup
// stop it.
func startDev(t testing.TB, https bool, flags func(*Agent) []string) *Agent {
	t.Helper()
	a := &Agent{t: t, bin: Binary(t), log: &syncBuffer{}, name: "dialtone-test", flags: flags}
	for i := range a.ports {
		a.ports[i] = freePort(t)
	}
	if https {
		a.https = freePort(t)
	}
	a.start()
	t.Cleanup(a.Stop)
	return a
}

// HTTPSAddr returns the HTTPS API address of an agent StartTLS started,
// 127.0.0.1:port.
func (a *Agent) HTTPSAddr() string { return "127.0.0.1:" + strconv.Itoa(a.https) }

// Addr returns the HTTP API address, 127.0.0.1:port.
func (a *Agent) Addr() string { return "127.0.0.1:" + strconv.Itoa(a.ports[0]) }

// API returns a Consul API client of a's HTTP address with token (none
// when empty), whatever CONSUL_* the environment sets.
func (a *Agent) API(t testing.TB, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = a.Addr(), token
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (a *Agent) start() {
	a.t.Helper()
	var lastErr error
	for attempt := range 3 {
		if attempt > 0 {
			// A port was taken between freePort and the agent binding it.
			for i := range a.ports {
				a.ports[i] = freePort(a.t)
			}
			if a.https != 0 {
				a.https = freePort(a.t)
			}
		}
		if lastErr = a.startOnce(); lastErr == nil {
			return
		}
	}
	a.t.Fatalf("consul agent did not start: %v\n%s", lastErr, a.log.String())
}

// devFlags are the flags of a single -dev agent: a server that is its own
// leader, with the catalog in memory.
func devFlags(*Agent) []string { return []string{"-dev"} }

// commonFlags are the flags every agent gets: loopback only, the agent's
// ports, no gRPC or DNS, no update check (no traffic leaves the machine).
func (a *Agent) commonFlags() []string {
	p := a.ports
	return []string{"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(p[0]), "-grpc-port", "-1", "-grpc-tls-port", "-1", "-dns-port", "-1",
		"-serf-lan-port", strconv.Itoa(p[1]), "-serf-wan-port", strconv.Itoa(p[2]), "-server-port", strconv.Itoa(p[3]),
		"-log-level", "warn", "-disable-host-node-id", "-node", a.name, "-hcl", "disable_update_check = true"}
}

func (a *Agent) startOnce() error {
	if err := a.launch(); err != nil {
		return err
	}
	return a.waitLeader(30 * time.Second)
}

// launch starts the agent process and returns without waiting for it.
func (a *Agent) launch() error {
	args := append(append([]string{"agent"}, a.flags(a)...), a.commonFlags()...)
	cmd := exec.Command(a.bin, args...)
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
	return nil
}

// waitLeader waits until the launched agent answers with a leader, at most
// timeout; it kills the agent if it does not.
func (a *Agent) waitLeader(timeout time.Duration) error {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("agent %s is not running", a.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if l, err := a.leader(ctx); err == nil && a.leads(l) {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("agent %s exited: %v", a.name, cmd.ProcessState)
		case <-ctx.Done():
			a.Stop()
			return fmt.Errorf("agent %s: no leader within %v", a.name, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// statusClient is for the harness's own status requests. It keeps no idle
// connections, so it leaves no goroutine behind.
var statusClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// leader asks the agent which server is the raft leader: "127.0.0.1:PORT"
// (its server port), or "" while there is none.
func (a *Agent) leader(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+a.Addr()+"/v1/status/leader", nil)
	if err != nil {
		return "", err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(bytes.Trim(b.Bytes(), `" `+"\n")), nil
}

// leads reports whether addr, a leader named by the agent's HTTP port, is
// this agent's own server (a -dev agent leads itself) or one of its
// cluster's. Any other leader was named by another process's agent, which
// took the HTTP port between freePort and this agent's bind: this agent
// then exits on its bind error, and start tries again on new ports.
func (a *Agent) leads(addr string) bool {
	if addr == "" {
		return false
	}
	servers := []*Agent{a}
	if a.in != nil {
		servers = a.in.agents
	}
	for _, s := range servers {
		if addr == "127.0.0.1:"+strconv.Itoa(s.ports[3]) {
			return true
		}
	}
	return false
}

// Name returns the agent's node name.
func (a *Agent) Name() string { return a.name }

// Stop kills the agent (SIGKILL) and waits for it to exit. A -dev agent
// loses its catalog (it is in memory); a cluster server keeps its data
// directory but, killed, does not leave the cluster: it stays a voter.
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

// Restart stops the agent and starts a new one on the same ports, and waits
// until it sees a leader. A -dev agent comes back with an empty catalog, so
// Consul's index starts again from a low number; a cluster server comes back
// with its data directory and rejoins.
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

// running reports whether the agent's process is alive.
func (a *Agent) running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}
