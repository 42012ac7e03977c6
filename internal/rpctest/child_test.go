package rpctest

import (
	"errors"
	"io"
	"net/rpc"
	"reflect"
	"testing"
	"time"
)

func TestChildEcho(t *testing.T) {
	c := StartChild(t, WithChildHeartbeat(), WithChildName("kid"))
	cli := dial(t, c.Addr())
	if got := echo(t, cli, "hi"); got.Server != "kid" {
		t.Errorf("Server = %q, want kid", got.Server)
	}
	var pong int
	if err := cli.Call("Dialtone.Ping", 5, &pong); err != nil || pong != 5 {
		t.Fatalf("Ping = %d, %v", pong, err)
	}
	if c.Pid() <= 0 {
		t.Errorf("Pid = %d", c.Pid())
	}
}

func TestChildKill(t *testing.T) {
	c := StartChild(t)
	cli := dial(t, c.Addr())
	echo(t, cli, "alive")
	pending := cli.Go("Echo.Echo", &EchoArgs{Sleep: time.Hour}, new(EchoReply), nil)
	echo(t, cli, "after") // served after pending was read: the child has it
	c.Kill()
	if err := wait(t, pending, 5*time.Second); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("pending call: %v, want io.ErrUnexpectedEOF", err)
	}
	err := cli.Call("Echo.Echo", &EchoArgs{}, new(EchoReply))
	if !errors.Is(err, rpc.ErrShutdown) {
		t.Fatalf("call after Kill: %v, want rpc.ErrShutdown", err)
	}
	if _, err := rpc.Dial("tcp", c.Addr()); err == nil {
		t.Fatal("dial after Kill succeeded")
	}
	c.Kill() // idempotent
}

func TestChildStopCont(t *testing.T) {
	c := StartChild(t, WithChildHeartbeat())
	cli := dial(t, c.Addr())
	echo(t, cli, "alive")
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	call := cli.Go("Echo.Echo", &EchoArgs{Msg: "held"}, new(EchoReply), nil)
	hangs(t, call, 300*time.Millisecond)
	if err := c.Cont(); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, call, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := call.Reply.(*EchoReply).Msg; got != "held" {
		t.Fatalf("reply = %q", got)
	}
}

func TestChildExecutionsSurviveKill(t *testing.T) {
	c := StartChild(t)
	cli := dial(t, c.Addr())
	var want []string
	for _, id := range []string{"a", "b", "c"} {
		args := &ExecArgs{ID: id}
		args.SetIdempotencyKey("k-" + id)
		if err := cli.Call("Echo.Exec", args, new(ExecReply)); err != nil {
			t.Fatal(err)
		}
		want = append(want, id+" k-"+id)
	}
	c.Kill()
	if got := c.Executions(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Executions after Kill = %q, want %q", got, want)
	}
}

func TestChildExecutionsEmpty(t *testing.T) {
	if got := StartChild(t).Executions(); len(got) != 0 {
		t.Fatalf("Executions = %q", got)
	}
}

func TestChildStopStartServer(t *testing.T) {
	c := StartChild(t)
	cli := dial(t, c.Addr())
	echo(t, cli, "alive")
	pending := cli.Go("Echo.Echo", &EchoArgs{Sleep: time.Hour}, new(EchoReply), nil)
	echo(t, cli, "after") // served after pending was read: the child has it
	before := time.Now()
	stopped, err := c.StopServer()
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(t, pending, 5*time.Second); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("pending call: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := rpc.Dial("tcp", c.Addr()); err == nil {
		t.Fatal("dial after StopServer succeeded")
	}
	started, err := c.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	if !before.Before(stopped) || !stopped.Before(started) || time.Since(started) < 0 {
		t.Fatalf("event times out of order: before %v, stopped %v, started %v, now %v", before, stopped, started, time.Now())
	}
	echo(t, dial(t, c.Addr()), "again")
	acc := c.Accepts()
	if len(acc) != 2 || acc[0].After(stopped) || acc[1].Before(started) {
		t.Fatalf("Accepts = %v, want one before the stop (%v) and one after the start (%v)", acc, stopped, started)
	}
}
