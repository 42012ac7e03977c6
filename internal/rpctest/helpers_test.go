package rpctest

import (
	"net/rpc"
	"testing"
	"time"
)

// dial returns a net/rpc client of addr, closed by t.Cleanup.
func dial(t *testing.T, addr string) *rpc.Client {
	t.Helper()
	cli, err := rpc.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// echo calls Echo.Echo with msg and returns the reply.
func echo(t *testing.T, cli *rpc.Client, msg string) EchoReply {
	t.Helper()
	var reply EchoReply
	if err := cli.Call("Echo.Echo", &EchoArgs{Msg: msg}, &reply); err != nil {
		t.Fatalf("Echo(%q): %v", msg, err)
	}
	if reply.Msg != msg {
		t.Fatalf("Echo(%q) = %q", msg, reply.Msg)
	}
	return reply
}

// wait returns the error of call, or fails t if it takes longer than d.
func wait(t *testing.T, call *rpc.Call, d time.Duration) error {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-call.Done:
		return call.Error
	case <-timer.C:
		t.Fatalf("%s did not return within %v", call.ServiceMethod, d)
		return nil
	}
}

// hangs fails t if call returns within d.
func hangs(t *testing.T, call *rpc.Call, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-call.Done:
		t.Fatalf("%s returned (err %v), want it to hang", call.ServiceMethod, call.Error)
	case <-timer.C:
	}
}
