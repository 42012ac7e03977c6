package consultest

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func leader(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/status/leader")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Trim(string(b), "\" \n")
}

// The agent starts with a leader, restarts on the same ports, and Stop
// leaves no process and no goroutine behind.
func TestAgentStartRestartStop(t *testing.T) {
	a := Start(t)
	if leader(t, a.Addr()) == "" {
		t.Fatal("no leader after Start")
	}
	addr := a.Addr()
	a.Restart()
	if a.Addr() != addr || leader(t, a.Addr()) == "" {
		t.Fatalf("after Restart: addr %s (was %s)", a.Addr(), addr)
	}
	a.Stop()
	a.Stop()
	c := &http.Client{Timeout: time.Second}
	if _, err := c.Get("http://" + addr + "/v1/status/leader"); err == nil {
		t.Fatal("the agent still answers after Stop")
	}
	http.DefaultClient.CloseIdleConnections()
	c.CloseIdleConnections()
}

// Blocking queries are held by the proxy; plain reads pass at once and
// consistent ones are counted.
func TestHoldProxy(t *testing.T) {
	a := Start(t)
	p := Hold(t, a.Addr(), time.Hour)
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + p.Addr() + "/v1/health/service/x?consistent=")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p.ConsistentReads() != 1 {
		t.Fatalf("consistent reads %d, want 1", p.ConsistentReads())
	}
	held := &http.Client{Timeout: 200 * time.Millisecond}
	defer held.CloseIdleConnections()
	if _, err := held.Get("http://" + p.Addr() + "/v1/health/service/x?index=1"); err == nil {
		t.Fatal("a blocking query went through the hold proxy at once")
	}
	http.DefaultClient.CloseIdleConnections()
}

// Three servers elect a leader; when it is killed, the other two elect a
// new one, and every server is gone after Stop.
func TestClusterLeaderKill(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, 3)
	t.Logf("3 servers with a leader after %v", time.Since(start).Round(time.Millisecond))
	if n := len(c.Agents()); n != 3 {
		t.Fatalf("%d servers, want 3", n)
	}
	old := c.WaitLeader(t)
	old.Stop()
	killed := time.Now()
	l := c.WaitLeader(t)
	t.Logf("new leader %s %v after killing %s", l.Name(), time.Since(killed).Round(time.Millisecond), old.Name())
	if l == old {
		t.Fatalf("the killed server %s is still reported leader", old.Name())
	}
	for _, a := range c.Agents() {
		a.Stop()
	}
	if c.Leader() != nil {
		t.Fatal("a leader is reported with every server killed")
	}
}

// Another process (in `go test ./...`, another package's agent) can take
// the HTTP port between freePort and this agent's bind. The agent then exits
// on its bind error, but the stranger answers /v1/status/leader: start must
// not take that answer for its own agent's, or the test runs against
// another test's catalog with no agent of its own.
func TestStartIgnoresAStrangerOnItsHTTPPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stranger := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`"127.0.0.1:8300"`)) // a leader, whatever is asked
	})}
	go stranger.Serve(l)
	t.Cleanup(func() { stranger.Close() })
	a := &Agent{t: t, bin: Binary(t), log: &syncBuffer{}, name: "dialtone-test", flags: devFlags}
	a.ports[0] = l.Addr().(*net.TCPAddr).Port
	for i := 1; i < len(a.ports); i++ {
		a.ports[i] = freePort(t)
	}
	a.start()
	t.Cleanup(a.Stop)
	if !a.running() {
		t.Fatalf("start returned, but its agent has exited (the HTTP port %d was the stranger's):\n%s", a.ports[0], a.log.String())
	}
	if a.Addr() == "127.0.0.1:"+strconv.Itoa(l.Addr().(*net.TCPAddr).Port) {
		t.Fatalf("the agent still claims the stranger's port %s", a.Addr())
	}
}
