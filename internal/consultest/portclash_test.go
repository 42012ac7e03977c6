package consultest

import (
	"net"
	"net/http"
	"strconv"
	"testing"
)

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
