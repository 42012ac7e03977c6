package rpctest

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestBlackhole(t *testing.T) {
	addr := Blackhole(t)
	for range 3 {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err == nil {
			c.Close()
			t.Fatal("dial succeeded")
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial error %v, want a timeout", err)
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("dial failed after %v, want the 300 ms timeout", d)
		}
	}
}
