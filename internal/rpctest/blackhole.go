package rpctest

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// blackholeProbe bounds each dial FillAcceptQueue makes.
const blackholeProbe = 200 * time.Millisecond

// Blackhole returns a 127.0.0.1:port address whose TCP handshakes never
// complete, without root: dials to it time out (they are neither refused nor
// reset). It is a ListenBacklog0 listener that is never accepted from, with
// its accept queue filled by FillAcceptQueue. It takes about 200 ms. A setup
// error fails t. t.Cleanup closes the listener and the queued connections.
// Call it from the test goroutine.
func Blackhole(t testing.TB) string {
	t.Helper()
	addr := ListenBacklog0(t).Addr().String()
	FillAcceptQueue(t, addr)
	return addr
}

// ListenBacklog0 returns a listener on 127.0.0.1 with an accept backlog of
// 0: the kernel queues at most one connection that nobody accepted, and
// drops the SYNs of any further one, whose dial then times out. Tests accept
// from it as from any listener, then make further dials hang with
// FillAcceptQueue. t.Cleanup closes it. A setup error fails t.
func ListenBacklog0(t testing.TB) net.Listener {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("rpctest: backlog-0 socket: %v", err)
	}
	f := os.NewFile(uintptr(fd), "backlog-0 listener")
	defer f.Close() // the listener holds its own descriptor
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("rpctest: backlog-0 bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("rpctest: backlog-0 listen: %v", err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatalf("rpctest: backlog-0 listener: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// FillAcceptQueue dials addr, a ListenBacklog0 listener's address, until a
// dial times out, which proves the kernel's accept queue is full: from then
// on every dial to addr times out, until something accepts. The queued
// connections are kept open until t.Cleanup. A dial that fails otherwise, or
// a queue still accepting after 8 connections, fails t. Call it from the
// test goroutine.
func FillAcceptQueue(t testing.TB, addr string) {
	t.Helper()
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, blackholeProbe)
		if err == nil {
			held = append(held, c)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return
		}
		t.Fatalf("rpctest: filling the accept queue of %s: %v", addr, err)
	}
	t.Fatalf("rpctest: accept queue of %s still accepts after %d connections", addr, len(held))
}
