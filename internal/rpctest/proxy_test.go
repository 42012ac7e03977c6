package rpctest

import (
	"errors"
	"net/rpc"
	"syscall"
	"testing"
	"time"
)

func TestProxyPass(t *testing.T) {
	srv := Start(t, WithName("behind"))
	p := NewProxy(t, srv.Addr())
	if got := echo(t, dial(t, p.Addr()), "via proxy"); got.Server != "behind" {
		t.Fatalf("Server = %q", got.Server)
	}
	var reply EchoReply
	if err := dial(t, p.Addr()).Call("Echo.Echo", &EchoArgs{ReplyBytes: 1 << 20}, &reply); err != nil || len(reply.Payload) != 1<<20 {
		t.Fatalf("big reply: %d bytes, %v", len(reply.Payload), err)
	}
}

func TestProxyLatency(t *testing.T) {
	srv := Start(t)
	p := NewProxy(t, srv.Addr())
	cli := dial(t, p.Addr())
	echo(t, cli, "warm")
	p.Latency(200 * time.Millisecond)
	start := time.Now()
	echo(t, cli, "slow")
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("call took %v with 200 ms latency", d)
	}
	p.Pass()
	start = time.Now()
	echo(t, cli, "fast")
	if d := time.Since(start); d >= 200*time.Millisecond {
		t.Fatalf("call took %v after Pass", d)
	}
}

func TestProxyBlackholeResponses(t *testing.T) {
	srv := Start(t)
	p := NewProxy(t, srv.Addr())
	cli := dial(t, p.Addr())
	echo(t, cli, "warm")
	p.BlackholeResponses()
	call := cli.Go("Echo.Exec", &ExecArgs{ID: "lost-reply"}, new(ExecReply), nil)
	hangs(t, call, 300*time.Millisecond)
	if got := srv.Executions(); len(got) != 1 || got[0] != "lost-reply " {
		t.Fatalf("Executions = %q, want the request executed", got)
	}
	// Leaving the mode resets the connection that lost bytes.
	p.Pass()
	if err := wait(t, call, 5*time.Second); err == nil {
		t.Fatal("call with a dropped response succeeded")
	}
	echo(t, dial(t, p.Addr()), "new conn")
}

func TestProxyReset(t *testing.T) {
	srv := Start(t)
	p := NewProxy(t, srv.Addr())
	cli := dial(t, p.Addr())
	echo(t, cli, "warm")
	pending := cli.Go("Echo.Echo", &EchoArgs{Sleep: time.Hour}, new(EchoReply), nil)
	hangs(t, pending, 50*time.Millisecond)
	p.Reset()
	if err := wait(t, pending, 5*time.Second); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("mid-call reset: %v, want ECONNRESET", err)
	}
	// New connections are reset on connect.
	cli2, err := rpc.Dial("tcp", p.Addr())
	if err == nil {
		defer cli2.Close()
		err = cli2.Call("Echo.Echo", &EchoArgs{}, new(EchoReply))
	}
	if err == nil {
		t.Fatal("call through a resetting proxy succeeded")
	}
	p.Pass()
	echo(t, dial(t, p.Addr()), "after reset")
}
