package rpctest

import (
	"errors"
	"io"
	"net/rpc"
	"reflect"
	"testing"
	"time"
)

func TestEcho(t *testing.T) {
	srv := Start(t, WithName("a"))
	cli := dial(t, srv.Addr())
	if got := echo(t, cli, "hello"); got.Server != "a" {
		t.Errorf("Server = %q, want a", got.Server)
	}
	if srv.Name() != "a" || srv.Calls() != 1 {
		t.Errorf("Name, Calls = %q, %d; want a, 1", srv.Name(), srv.Calls())
	}
	if n := len(srv.Accepts()); n != 1 {
		t.Errorf("Accepts = %d, want 1", n)
	}
}

func TestEchoDefaultName(t *testing.T) {
	srv := Start(t)
	if got := echo(t, dial(t, srv.Addr()), "x"); got.Server != srv.Addr() || srv.Name() != srv.Addr() {
		t.Errorf("Server, Name = %q, %q; want %q", got.Server, srv.Name(), srv.Addr())
	}
}

func TestEchoFail(t *testing.T) {
	srv := Start(t)
	cli := dial(t, srv.Addr())
	var reply EchoReply
	err := cli.Call("Echo.Echo", &EchoArgs{Fail: "boom"}, &reply)
	var se rpc.ServerError
	if !errors.As(err, &se) || se != "boom" {
		t.Fatalf("err = %#v, want rpc.ServerError(boom)", err)
	}
	echo(t, cli, "still works")
}

func TestEchoReplyBytes(t *testing.T) {
	srv := Start(t)
	cli := dial(t, srv.Addr())
	var reply EchoReply
	if err := cli.Call("Echo.Echo", &EchoArgs{ReplyBytes: 4 << 20}, &reply); err != nil {
		t.Fatal(err)
	}
	if len(reply.Payload) != 4<<20 {
		t.Fatalf("payload = %d bytes, want %d", len(reply.Payload), 4<<20)
	}
}

func TestExec(t *testing.T) {
	a, b := Start(t, WithName("a")), Start(t, WithName("b"))
	ca, cb := dial(t, a.Addr()), dial(t, b.Addr())
	args := &ExecArgs{ID: "op1"}
	args.SetIdempotencyKey("k1")
	if args.IdempotencyKey() != "k1" {
		t.Fatalf("IdempotencyKey = %q", args.IdempotencyKey())
	}
	var reply ExecReply
	if err := ca.Call("Echo.Exec", args, &reply); err != nil || reply.Server != "a" {
		t.Fatalf("Exec on a: %v, server %q", err, reply.Server)
	}
	if err := cb.Call("Echo.Exec", args, &reply); err != nil || reply.Server != "b" {
		t.Fatalf("Exec on b: %v, server %q", err, reply.Server)
	}
	if err := cb.Call("Echo.Exec", &ExecArgs{ID: "op2"}, &reply); err != nil {
		t.Fatal(err)
	}
	if got, want := a.Executions(), []string{"op1 k1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("a.Executions = %q, want %q", got, want)
	}
	if got, want := b.Executions(), []string{"op1 k1", "op2 "}; !reflect.DeepEqual(got, want) {
		t.Errorf("b.Executions = %q, want %q", got, want)
	}
	if got, want := Duplicates(a.Executions(), b.Executions()), map[string]int{"op1": 2}; !reflect.DeepEqual(got, want) {
		t.Errorf("Duplicates = %v, want %v", got, want)
	}
}

func TestStopRestart(t *testing.T) {
	srv := Start(t)
	first := srv.Addr()
	cli := dial(t, first)
	echo(t, cli, "before")
	srv.Stop()
	var reply EchoReply
	if err := cli.Call("Echo.Echo", &EchoArgs{}, &reply); !errors.Is(err, rpc.ErrShutdown) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("call after Stop: %v, want ErrShutdown or ErrUnexpectedEOF", err)
	}
	if _, err := rpc.Dial("tcp", first); err == nil {
		t.Fatal("dial after Stop succeeded")
	}
	srv.Stop() // idempotent

	srv.Restart(t, true)
	if srv.Addr() != first {
		t.Fatalf("Restart(samePort) addr = %s, want %s", srv.Addr(), first)
	}
	echo(t, dial(t, srv.Addr()), "same port")

	srv.Restart(t, false)
	if srv.Addr() == first {
		t.Fatalf("Restart(new port) kept %s", first)
	}
	echo(t, dial(t, srv.Addr()), "new port")
	if srv.Calls() != 3 {
		t.Errorf("Calls = %d, want 3 across restarts", srv.Calls())
	}
}

func TestStopInterruptsSleep(t *testing.T) {
	srv := Start(t)
	cli := dial(t, srv.Addr())
	call := cli.Go("Echo.Exec", &ExecArgs{ID: "x", Sleep: time.Hour}, new(ExecReply), nil)
	echo(t, cli, "after") // served after call was read: its handler sleeps
	start := time.Now()
	srv.Stop()
	if err := wait(t, call, 5*time.Second); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("sleeping call after Stop: %v, want io.ErrUnexpectedEOF", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Stop took %v", d)
	}
	if got := srv.Executions(); len(got) != 0 {
		t.Errorf("interrupted Exec executed: %q", got)
	}
}

func TestHang(t *testing.T) {
	srv := Start(t, WithHeartbeat())
	cli := dial(t, srv.Addr())
	echo(t, cli, "warm")

	srv.Hang()
	exec := cli.Go("Echo.Exec", &ExecArgs{ID: "held"}, new(ExecReply), nil)
	var pong int
	ping := cli.Go("Dialtone.Ping", 7, &pong, nil)
	hangs(t, exec, 300*time.Millisecond)
	hangs(t, ping, 0)
	if got := srv.Executions(); len(got) != 0 {
		t.Fatalf("executed while hung: %q", got)
	}
	// New connections are accepted but not served either.
	cli2 := dial(t, srv.Addr())
	hangs(t, cli2.Go("Echo.Echo", &EchoArgs{}, new(EchoReply), nil), 100*time.Millisecond)

	srv.Unhang()
	if err := wait(t, exec, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, ping, 5*time.Second); err != nil || pong != 7 {
		t.Fatalf("Ping = %d, %v; want 7", pong, err)
	}
	if got := srv.Executions(); len(got) != 1 {
		t.Fatalf("Executions = %q, want one", got)
	}
	echo(t, cli2, "after")
}

func TestHangThenStop(t *testing.T) {
	srv := Start(t)
	cli := dial(t, srv.Addr())
	srv.Hang()
	call := cli.Go("Echo.Exec", &ExecArgs{ID: "never"}, new(ExecReply), nil)
	hangs(t, call, 100*time.Millisecond)
	srv.Stop()
	if err := wait(t, call, 5*time.Second); err == nil {
		t.Fatal("call succeeded after Stop")
	}
	if got := srv.Executions(); len(got) != 0 {
		t.Fatalf("executed: %q", got)
	}
}

type extra struct{}

func (extra) Double(args int, reply *int) error { *reply = 2 * args; return nil }

func TestWithRegister(t *testing.T) {
	srv := Start(t, WithRegister(func(s *rpc.Server) error { return s.RegisterName("Extra", extra{}) }))
	for range 2 {
		var got int
		if err := dial(t, srv.Addr()).Call("Extra.Double", 21, &got); err != nil || got != 42 {
			t.Fatalf("Extra.Double = %d, %v", got, err)
		}
		srv.Restart(t, false) // registered again
	}
}

func TestWithAddr(t *testing.T) {
	first := Start(t)
	addr := first.Addr()
	first.Stop()
	srv := Start(t, WithAddr(addr))
	if srv.Addr() != addr {
		t.Fatalf("Addr = %s, want %s", srv.Addr(), addr)
	}
	echo(t, dial(t, addr), "x")
}
