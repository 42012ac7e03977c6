package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/examples/echo/echoapi"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/dialtone-go/dialtone/internal/etcdtest"
	"github.com/dialtone-go/dialtone/rpcclient"
)

// A rolling deploy, as a user runs one: each of three instances is replaced
// in turn by a new one on a new port, which registers first; the old one
// is then sent its shutdown (deregister, serve on for -drain, close). A
// client calling without Idempotent() under load, through a real registry,
// must lose no call: it sees each instance leave the registry, stops
// sending to it and lets its calls in flight finish before the instance
// closes its connections. Nothing may be retried (the calls are not
// idempotent), so a call caught by a closing connection would fail.
//
// In place (consul-in-place), as on hosts with fixed ports: each old
// instance shuts down first and the new one then listens on its address
// and registers. The client still holds the address's endpoint, in its
// drain grace, when the old instance closes the connection and when the
// address comes back; it must take the new instance's calls on a new
// connection, and fail none.
func TestRollingDeployLosesNoCall(t *testing.T) {
	// Each registry starts a server for the subtest and returns the
	// client's target and the echo flags that register there.
	consul := func(t *testing.T) (string, []string) {
		agent := consultest.Start(t)
		t.Setenv("CONSUL_HTTP_ADDR", agent.Addr())
		return "consul://" + agent.Addr() + "/echo-roll", []string{"-registry", "consul", "-ttl", "2s"}
	}
	etcd := func(t *testing.T) (string, []string) {
		srv := etcdtest.Start(t)
		hosts := strings.Join(srv.Hosts(), ",")
		t.Setenv("ETCD_ENDPOINTS", hosts)
		return "etcd://" + hosts + "/services/echo-roll", []string{"-registry", "etcd", "-ttl", "5s"}
	}
	for _, tc := range []struct {
		name     string
		inPlace  bool
		registry func(*testing.T) (string, []string)
	}{
		{"consul", false, consul},
		{"etcd", false, etcd},
		{"consul-in-place", true, consul},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, flags := tc.registry(t)
			rollingDeploy(t, tc.inPlace, target, append(flags, "-service", "echo-roll")...)
		})
	}
}

// rollDrain is how long an old instance serves on after deregistering: the
// client must have seen it leave, and its calls on it ended, within it.
const rollDrain = time.Second

func rollingDeploy(t *testing.T, inPlace bool, target string, flags ...string) {
	type instance struct {
		name, addr string
		stop       func() error
	}
	start := func(name, listen string) instance {
		args := append([]string{"-name", name, "-drain", rollDrain.String(), "-listen", listen}, flags...)
		addr, stop := startEcho(t, args...)
		return instance{name, addr, stop}
	}
	old := []instance{start("v1-a", "127.0.0.1:0"), start("v1-b", "127.0.0.1:0"), start("v1-c", "127.0.0.1:0")}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := rpcclient.Dial(ctx, target)
	if err != nil {
		t.Fatalf("Dial(%q): %v", target, err)
	}
	defer c.Close()

	// served records, per instance, how many calls it answered and when
	// it answered the last.
	var (
		mu     sync.Mutex
		served = map[string]int{}
		last   = map[string]time.Time{}
		errs   []error
	)
	var calls, failed atomic.Int64
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	const callers = 8
	for i := range callers {
		wg.Go(func() {
			for n := 0; n < 100_000; n++ { // bounded: the load stops long before
				select {
				case <-stopLoad:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				var reply echoapi.Reply
				// A short sleep keeps calls in flight on every instance
				// while it leaves. Not Idempotent: never retried once sent.
				err := c.Call(cctx, echoapi.Method, &echoapi.Args{Msg: fmt.Sprint(i), Sleep: 2 * time.Millisecond}, &reply)
				ccancel()
				calls.Add(1)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if len(errs) < 5 {
						errs = append(errs, err)
					}
				} else {
					served[reply.Server]++
					last[reply.Server] = time.Now()
				}
				mu.Unlock()
			}
		})
	}
	var once sync.Once
	endLoad := func() {
		once.Do(func() { close(stopLoad) })
		wg.Wait()
	}
	defer endLoad()

	// waitServed waits until the instance has answered a call.
	waitServed := func(name string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := served[name]
			mu.Unlock()
			if n > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s answered no call within 20 s of registering", name)
			}
		}
	}
	for _, in := range old {
		waitServed(in.name)
	}

	var leftAfter []time.Duration // per old instance: its last answer, after its shutdown began
	var back []time.Duration      // in place: from each new instance's start to its first answer
	for i, in := range old {
		name := fmt.Sprintf("v2-%c", 'a'+i)
		if !inPlace {
			waitServed(start(name, "127.0.0.1:0").name)
		}
		began := time.Now()
		if err := in.stop(); err != nil {
			t.Fatalf("%s: shutdown: %v", in.name, err)
		}
		mu.Lock()
		leftAfter = append(leftAfter, last[in.name].Sub(began).Round(100*time.Microsecond))
		mu.Unlock()
		if inPlace {
			restarted := time.Now()
			waitServed(start(name, in.addr).name)
			back = append(back, time.Since(restarted).Round(time.Millisecond))
		}
	}
	time.Sleep(200 * time.Millisecond) // calls go on against the new instances only
	endLoad()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d calls, %d failed; answers per instance %v; each old instance's last answer came %v after its shutdown began (drain %v)",
		calls.Load(), failed.Load(), served, leftAfter, rollDrain)
	if inPlace {
		t.Logf("in place: each new instance answered its first call %v after it started on the old one's address", back)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed during the rolling deploy; first errors: %v", failed.Load(), calls.Load(), errs)
	}
	for i, d := range leftAfter {
		if d >= rollDrain {
			t.Errorf("%s answered a call %v after its shutdown began: the client did not leave it within the %v drain", old[i].name, d, rollDrain)
		}
	}
}
