package rpctest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Environment variables through which StartChild configures the child.
const (
	// ChildEnv, when set (to any value), makes RunChildIfRequested run a
	// server instead of returning.
	ChildEnv      = "DIALTONE_RPCTEST_CHILD"
	childNameEnv  = "DIALTONE_RPCTEST_NAME"
	childLogEnv   = "DIALTONE_RPCTEST_EXECLOG"
	childHBEnv    = "DIALTONE_RPCTEST_HEARTBEAT"
	childEventEnv = "DIALTONE_RPCTEST_EVENTLOG"
	listeningLine = "LISTENING "
)

// childStartTimeout bounds how long StartChild waits for the LISTENING line.
const childStartTimeout = 10 * time.Second

var childSeq atomic.Int64

// RunChildIfRequested must be the first call of the TestMain of every package
// that uses StartChild. In the test process it returns at once. In a child
// started by StartChild (ChildEnv is set) it runs a Server on 127.0.0.1:0
// with the Echo service (plus the heartbeat service if asked), prints
// "LISTENING 127.0.0.1:port" on stdout, and never returns: the process exits
// with status 0 when its stdin reaches EOF (the parent closed it or died) or
// on SIGTERM/SIGINT, and with status 1 if it cannot listen. SIGUSR1 stops
// its server and SIGUSR2 starts it again on the same address (see
// Child.StopServer).
func RunChildIfRequested() {
	if os.Getenv(ChildEnv) == "" {
		return
	}
	opts := []Option{WithName(os.Getenv(childNameEnv))}
	if os.Getenv(childHBEnv) != "" {
		opts = append(opts, WithHeartbeat())
	}
	s := newServer(opts...)
	if path := os.Getenv(childLogEnv); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rpctest child: %v\n", err)
			os.Exit(1)
		}
		s.execs.file = f
	}
	if path := os.Getenv(childEventEnv); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rpctest child: %v\n", err)
			os.Exit(1)
		}
		s.events = f
	}
	// Catch the signals before the parent can learn the address: a SIGUSR1
	// that arrived before Notify would be dropped (Go ignores it).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	if err := s.listen("127.0.0.1:0"); err != nil {
		fmt.Fprintf(os.Stderr, "rpctest child: listen: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stdout, "%s%s\n", listeningLine, s.Addr())
	os.Stdout = os.Stderr // nothing else may fill the pipe the parent no longer reads

	done := make(chan struct{}, 2)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		done <- struct{}{}
	}()
	for {
		select {
		case <-done:
			os.Exit(0)
		case g := <-sig:
			switch g {
			case syscall.SIGUSR1:
				s.Stop()
			case syscall.SIGUSR2:
				if !s.stopped() {
					continue
				}
				if err := s.listen(s.Addr()); err != nil {
					fmt.Fprintf(os.Stderr, "rpctest child: listen again: %v\n", err)
					os.Exit(1)
				}
			default:
				os.Exit(0)
			}
		}
	}
}

// ChildOption configures a child started by StartChild.
type ChildOption func(*childOptions)

type childOptions struct {
	name      string
	heartbeat bool
	binary    string
}

// WithChildName sets the child server's name, returned in EchoReply.Server
// and ExecReply.Server. The default is "child-N", N counting from 1 in the
// test process.
func WithChildName(name string) ChildOption {
	return func(o *childOptions) { o.name = name }
}

// WithChildHeartbeat makes the child also register the heartbeat service
// "Dialtone" (Ping(args int, reply *int) error, *reply = args), like
// WithHeartbeat for an in-process server. Off by default.
func WithChildHeartbeat() ChildOption {
	return func(o *childOptions) { o.heartbeat = true }
}

// WithChildBinary runs the program at path instead of re-executing the test
// binary. Its main must call RunChildIfRequested first, as a TestMain does;
// it gets no arguments. The failover benchmark kills such a small program:
// the kernel closes a dying process's sockets only after it has torn down
// its memory, which for a test binary with a large resident set takes
// milliseconds that no client can see past.
func WithChildBinary(path string) ChildOption {
	return func(o *childOptions) { o.binary = path }
}

// Child is a server running in a child process (the test binary re-executed),
// for faults that need a real process: SIGKILL, SIGSTOP. Its methods are safe
// for concurrent use from any goroutine.
type Child struct {
	t         testing.TB
	name      string
	addr      string
	logPath   string
	eventPath string
	cmd       *exec.Cmd
	stdin     io.Closer // kept open: the child exits when it closes; Wait closes it

	killOnce sync.Once
}

// StartChild re-executes the test binary (os.Args[0] -test.run=^$), or runs
// the WithChildBinary program, with ChildEnv set, and returns once the child printed its LISTENING line (at
// most 10 s, or the test fails). The child's stderr goes to the test's
// stderr; its execution log is a file under t.TempDir(). The child gets
// SIGKILL when the thread that started it exits (Pdeathsig), and t.Cleanup
// kills and reaps it. The package's TestMain must call RunChildIfRequested
// first. Call it from the test goroutine.
func StartChild(t testing.TB, opts ...ChildOption) *Child {
	t.Helper()
	var o childOptions
	for _, opt := range opts {
		opt(&o)
	}
	n := childSeq.Add(1)
	if o.name == "" {
		o.name = "child-" + strconv.FormatInt(n, 10)
	}
	dir := t.TempDir()
	c := &Child{
		t:         t,
		name:      o.name,
		logPath:   filepath.Join(dir, "executions-"+strconv.FormatInt(n, 10)+".log"),
		eventPath: filepath.Join(dir, "events-"+strconv.FormatInt(n, 10)+".log"),
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if o.binary != "" {
		cmd = exec.Command(o.binary)
	}
	cmd.Env = append(os.Environ(),
		ChildEnv+"=1",
		childNameEnv+"="+c.name,
		childLogEnv+"="+c.logPath,
		childEventEnv+"="+c.eventPath,
	)
	if o.heartbeat {
		cmd.Env = append(cmd.Env, childHBEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("rpctest: child stdin: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("rpctest: child stdout: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("rpctest: start child: %v", err)
	}
	c.cmd = cmd
	c.stdin = stdin
	t.Cleanup(c.Kill)

	type result struct {
		line string
		err  error
	}
	lines := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		lines <- result{line, err}
	}()
	timer := time.NewTimer(childStartTimeout)
	defer timer.Stop()
	var r result
	select {
	case r = <-lines:
	case <-timer.C:
		c.Kill() // the reader gets EOF and exits
		<-lines
		t.Fatalf("rpctest: child printed no %q line within %v", listeningLine, childStartTimeout)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(r.line), listeningLine)
	if !ok {
		c.Kill()
		t.Fatalf("rpctest: child printed %q (%v), want %q...: does TestMain call rpctest.RunChildIfRequested first?",
			r.line, r.err, listeningLine)
	}
	c.addr = addr
	return c
}

// Addr returns the child's listening address, 127.0.0.1:port.
func (c *Child) Addr() string { return c.addr }

// Pid returns the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Kill sends SIGKILL (which also ends a stopped child) and waits until the
// child is reaped, so its sockets are closed when Kill returns: clients see
// EOF (pending calls fail with io.ErrUnexpectedEOF, later ones with
// rpc.ErrShutdown) and new dials are refused. Kill is idempotent; t.Cleanup
// calls it.
func (c *Child) Kill() {
	c.killOnce.Do(func() {
		c.cmd.Process.Kill()
		c.cmd.Wait() // "signal: killed" is expected
	})
}

// Stop sends SIGSTOP and waits (at most 5 s) until every thread of the
// child is stopped. The TCP connections stay open and the kernel still
// completes new handshakes (until the listen backlog fills), but nothing is
// read, executed or answered until Cont.
func (c *Child) Stop() error { return c.signal(syscall.SIGSTOP, true) }

// Cont sends SIGCONT and waits (at most 5 s) until the child runs again:
// held requests are then served.
func (c *Child) Cont() error { return c.signal(syscall.SIGCONT, false) }

func (c *Child) signal(sig syscall.Signal, stopped bool) error {
	pid := c.Pid()
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("rpctest: %v to child %d: %w", sig, pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		all, err := allStopped(pid)
		if err != nil {
			return fmt.Errorf("rpctest: child %d state: %w", pid, err)
		}
		if all == stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rpctest: child %d: stopped=%v after %v, want %v", pid, all, sig, stopped)
		}
		time.Sleep(time.Millisecond)
	}
}

// allStopped reports whether every thread of pid is in state T (stopped),
// reading /proc/pid/task/*/stat.
func allStopped(pid int) (bool, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// "tid (comm) S ...": the state follows the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) {
			return false, fmt.Errorf("bad stat %q", stat)
		}
		if stat[i+2] != 'T' {
			return false, nil
		}
	}
	return true, nil
}

// Executions reads the child's execution log file: one "ID Key" line per
// completed Echo.Exec, in execution order. Every line was written with a
// single write(2), so the lines survive SIGKILL; a log that does not exist
// yet is empty. A read error is reported with t.Errorf (of StartChild) and
// gives nil. It works before and after Kill.
func (c *Child) Executions() []string {
	data, err := os.ReadFile(c.logPath)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		c.t.Errorf("rpctest: read child execution log: %v", err)
		return nil
	}
	lines := strings.SplitAfter(string(data), "\n")
	var out []string
	for _, l := range lines {
		if strings.HasSuffix(l, "\n") { // drop a torn last line, if any
			out = append(out, strings.TrimSuffix(l, "\n"))
		}
	}
	return out
}

// StopServer makes the child stop its server as Server.Stop does, while the
// process keeps running: the listener and every connection are closed at
// once and new dials are refused. It returns, after the child finished
// (at most 5 s), the time at which it did. Calling it on a stopped server
// waits for nothing new and fails after 5 s.
func (c *Child) StopServer() (time.Time, error) {
	return c.signalEvent(syscall.SIGUSR1, eventStop)
}

// StartServer makes a child stopped by StopServer listen again on the same
// address (the child exits with status 1 if it cannot). It returns, once the
// child listens (at most 5 s), the time at which it started listening.
func (c *Child) StartServer() (time.Time, error) {
	return c.signalEvent(syscall.SIGUSR2, eventListen)
}

// signalEvent sends sig and waits for the child to log one more event of
// the given kind than before, and returns that event's time.
func (c *Child) signalEvent(sig syscall.Signal, kind string) (time.Time, error) {
	before := len(c.events(kind))
	if err := c.cmd.Process.Signal(sig); err != nil {
		return time.Time{}, fmt.Errorf("rpctest: %v to child %d: %w", sig, c.Pid(), err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ev := c.events(kind); len(ev) > before {
			return ev[before], nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("rpctest: child %d logged no %q event within 5 s of %v", c.Pid(), kind, sig)
		}
		time.Sleep(time.Millisecond)
	}
}

// Accepts returns the times at which the child accepted connections, across
// StopServer and StartServer, oldest first, like Server.Accepts. The times
// are the child's wall clock, which is this process's. It works before and
// after Kill.
func (c *Child) Accepts() []time.Time { return c.events(eventAccept) }

// events reads the times of the events of one kind from the child's event
// log; a log that does not exist yet is empty. A read error is reported with
// t.Errorf (of StartChild) and gives nil.
func (c *Child) events(kind string) []time.Time {
	data, err := os.ReadFile(c.eventPath)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		c.t.Errorf("rpctest: read child event log: %v", err)
		return nil
	}
	var out []time.Time
	for _, l := range strings.SplitAfter(string(data), "\n") {
		k, ns, ok := strings.Cut(strings.TrimSuffix(l, "\n"), " ")
		if !ok || k != kind || !strings.HasSuffix(l, "\n") { // a torn last line is skipped
			continue
		}
		n, err := strconv.ParseInt(ns, 10, 64)
		if err != nil {
			c.t.Errorf("rpctest: bad child event line %q", l)
			return nil
		}
		out = append(out, time.Unix(0, n))
	}
	return out
}
