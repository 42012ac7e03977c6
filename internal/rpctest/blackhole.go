package rpctest

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// blackholeProbe bounds each dial Blackhole makes while filling the queue.
const blackholeProbe = 200 * time.Millisecond

// Blackhole returns a 127.0.0.1:port address whose TCP handshakes never
// complete, without root: dials to it time out (they are neither refused nor
// reset). It works by listening with backlog 0 on a raw socket that is never
// accepted from, and dialing it until the kernel's accept queue is full
// (Linux then drops every further SYN, and the client retransmits until its
// timeout). The queued connections are kept open. It takes about 200 ms (one
// probe dial times out to prove the queue is full). A setup error fails t.
// t.Cleanup closes the socket and the queued connections. Call it from the
// test goroutine.
func Blackhole(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("rpctest: blackhole socket: %v", err)
	}
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
		syscall.Close(fd)
	})
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("rpctest: blackhole bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("rpctest: blackhole listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("rpctest: blackhole getsockname: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)

	// Backlog 0 admits one connection on current kernels; dial until a dial
	// times out, which proves the queue is full.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, blackholeProbe)
		if err == nil {
			held = append(held, c)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr
		}
		t.Fatalf("rpctest: blackhole: filling the accept queue: %v", err)
	}
	t.Fatalf("rpctest: blackhole: accept queue of %s still accepts after %d connections", addr, len(held))
	return ""
}
