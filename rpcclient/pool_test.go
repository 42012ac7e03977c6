package rpcclient

import (
	"context"
	"net"
	"net/rpc"
	"sync"
	"testing"
	"time"
)

// limitedServer serves Arith on loopback and lets a test refuse new
// connections (close the listener; accepted connections keep serving),
// accept them again on the same port, and cut the accepted ones.
type limitedServer struct {
	t     *testing.T
	srv   *rpc.Server
	addr  string
	mu    sync.Mutex
	l     net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func newLimitedServer(t *testing.T) *limitedServer {
	s := &limitedServer{t: t, srv: rpc.NewServer()}
	if err := s.srv.Register(&Arith{}); err != nil {
		t.Fatal(err)
	}
	s.listen("127.0.0.1:0")
	t.Cleanup(func() {
		s.refuse()
		s.cut()
		s.wg.Wait()
	})
	return s
}

// listen accepts connections on addr until refuse.
func (s *limitedServer) listen(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.l, s.addr = l, l.Addr().String()
	s.mu.Unlock()
	s.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() { s.srv.ServeConn(c) })
		}
	})
}

// refuse closes the listener: dials are refused, accepted connections serve on.
func (s *limitedServer) refuse() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.l != nil {
		s.l.Close()
		s.l = nil
	}
}

// cut closes every accepted connection.
func (s *limitedServer) cut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// With a pool of several connections, a failed dial for an extra one does
// not fail the call or mark the node down: the call goes on the connection
// that works, and further extra dials wait for the reconnect backoff.
func TestPoolGrowthFailureKeepsWorkingConnection(t *testing.T) {
	srv := newLimitedServer(t)
	addr := srv.addr
	c, _ := newTestClient(t, []string{addr}, WithPoolSize(3), WithHeartbeat(0, 0),
		WithConnectBackoff(time.Minute, 1.6, time.Minute, 0))
	add := func(i int) error {
		var sum int
		if err := c.Call(context.Background(), "Arith.Add", Pair{A: i, B: 1}, &sum); err != nil {
			return err
		}
		if sum != i+1 {
			t.Fatalf("Add(%d, 1) = %d", i, sum)
		}
		return nil
	}
	if err := add(0); err != nil {
		t.Fatal(err)
	}
	srv.refuse() // the server takes no more connections
	start := time.Now()
	for i := range 50 {
		if err := add(i); err != nil {
			t.Fatalf("call %d with one working connection: %v", i, err)
		}
	}
	took := time.Since(start)
	st := endpointStatus(c, addr)
	if st.State != Ready || st.Dials != 2 {
		t.Fatalf("endpoint %+v: want Ready after 2 dials (the first, one refused extra dial, then the backoff)", st)
	}
	for _, n := range c.Balancer().Status() {
		if n.Endpoint.Addr == addr && (n.Quarantined || !n.Ready) {
			t.Fatalf("the node is out of rotation after a failed extra dial: %+v", n)
		}
	}
	// The extra dials' backoff (a minute) does not hold back a redial
	// once the last connection is gone.
	srv.listen(addr)
	srv.cut()
	deadline := time.Now().Add(5 * time.Second)
	for endpointStatus(c, addr).State == Ready {
		if time.Now().After(deadline) {
			t.Fatal("the client never saw its connection cut")
		}
		time.Sleep(time.Millisecond)
	}
	if err := add(1); err != nil {
		t.Fatalf("call after the connection was cut and the server listens again: %v", err)
	}
	if st := endpointStatus(c, addr); st.State != Ready || st.Dials != 3 {
		t.Fatalf("endpoint %+v after the redial: want Ready after 3 dials", st)
	}
	t.Logf("50 calls in %v on 1 working connection of 3", took)
}
