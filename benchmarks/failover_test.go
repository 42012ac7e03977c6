package benchmarks

// The failover harness (FAULTS.md row 1, issue "rpcclient"): three backends
// in child processes under closed-loop load, one SIGKILLed a third of the
// way in, for dialtone's rpcclient (net/rpc backends) and for grpc-go with
// round_robin (gRPC backends serving grpc.health.v1), side by side.
// dialtone runs three ways, with its default policy (P2C) with retries and
// with retries off (the comparison with grpc-go, whose only retries are
// transparent ones for requests that never left), and with round robin and
// retries off.
//
// A call's failure is counted in the phase in which the call started
// ("before" holds the calls in flight at the kill); "total" is all phases.
// With retries off, every request the killed backend had not answered is
// lost, by either client: those in flight at the SIGKILL and those written
// while the kernel tears the process down, which it does (exit_mm) before it
// closes the process's sockets (exit_files). No client can see the death
// before the sockets close, so the last failure is at least that long after
// the SIGKILL. The table therefore also gives it after the sockets closed,
// as an idle probe connection to the victim sees it.
//
// The backends are small programs of their own, cmd/rpcbackend and
// cmd/grpcbackend, which the benchmark builds first (go build, without
// -race): the teardown took 3-4 ms for this 90 MB test binary (48 MB
// resident) when it was the backend, idle, and 2-17 ms under this load on
// 2 cores; a backend the size of a real service's takes a fraction of that.
//
// One round is noisy: which requests are in flight at the kill decides most
// of the failures with retries off. -failover.rounds=N repeats the whole run
// N times (fresh backends and clients each time), prints every round's
// table, and then the failures of every round and their median and mean per
// client.
//
//	go test -run='^$' -bench=Failover -benchtime=1x .
//	go test -run='^$' -bench=Failover -benchtime=1x . -failover.rounds=5

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"go.uber.org/goleak"
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/rpctest"
	"github.com/dialtone-go/dialtone/internal/stats"
	"github.com/dialtone-go/dialtone/rpcclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

var failoverRounds = flag.Int("failover.rounds", 1, "BenchmarkFailover: how many times to repeat the whole run")

func TestMain(m *testing.M) {
	// Every Balancer, watcher, client and server a benchmark starts is
	// closed when it ends. The goroutines already running here are the
	// peers' own, started when they were imported (go-zero's signal and
	// CPU-usage loops), and stay.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

type grpcChild struct {
	cmd  *exec.Cmd
	addr string
}

// startGRPCChild runs the cmd/grpcbackend program at bin.
func startGRPCChild(b *testing.B, bin string) *grpcChild {
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTENING ") {
		b.Fatalf("grpc child: %q, %v", line, err)
	}
	c := &grpcChild{cmd: cmd, addr: strings.TrimSpace(strings.TrimPrefix(line, "LISTENING "))}
	b.Cleanup(func() { stdin.Close(); c.kill() })
	return c
}

func (c *grpcChild) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

type outcome struct {
	at, latency time.Duration
	err         error
}

// load runs callers closed-loop for d and kills one backend, whose address
// is victim, at d/3. It returns the outcomes, the moment SIGKILL was sent and
// the moment the kernel closed the backend's sockets: an idle probe
// connection to victim, opened before the kill, reads EOF then. That is the
// earliest any client on this machine can learn of the death.
func load(b *testing.B, callers int, d time.Duration, victim string, kill func(), call func(ctx context.Context) error) ([]outcome, time.Duration, time.Duration) {
	probe, err := net.Dial("tcp", victim)
	if err != nil {
		b.Fatalf("probe connection to %s: %v", victim, err)
	}
	defer probe.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		var buf [64]byte
		for {
			if _, err := probe.Read(buf[:]); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	killed := make(chan time.Duration, 1)
	go func() {
		time.Sleep(d / 3)
		at := time.Since(start)
		kill()
		killed <- at
	}()
	var mu sync.Mutex
	var out []outcome
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			var local []outcome
			for i := 0; i < 1<<20 && time.Since(start) < d; i++ {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := call(ctx)
				cancel()
				local = append(local, outcome{t0.Sub(start), time.Since(t0), err})
			}
			mu.Lock()
			out = append(out, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	killAt := <-killed
	select {
	case closeAt := <-closed:
		return out, killAt, closeAt
	case <-time.After(5 * time.Second):
		b.Fatalf("the probe connection to %s stayed open 5 s after the run", victim)
		return nil, 0, 0
	}
}

func BenchmarkFailover(b *testing.B) {
	const run = 3 * time.Second
	bins := backendBinaries{rpc: buildBackend(b, "rpcbackend"), grpc: buildBackend(b, "grpcbackend")}
	var rows []failoverRow
	for round := 1; round <= max(*failoverRounds, 1); round++ {
		rows = append(rows, failoverRound(b, round, run, bins)...)
	}
	printFailover(rows)
}

// phaseRows splits one client's run into the rows of its phases: before
// the kill, the second after it, the rest, and the total.
func phaseRows(round int, client string, callers int, run time.Duration, out []outcome, killAt, closeAt time.Duration) []failoverRow {
	var rows []failoverRow
	for _, ph := range []struct {
		name     string
		from, to time.Duration
	}{{"before", 0, killAt}, {"during", killAt, killAt + time.Second}, {"after", killAt + time.Second, run}, {"total", 0, run}} {
		r := failoverRow{round: round, client: client, callers: callers, phase: ph.name}
		var lat []time.Duration
		for _, o := range out {
			if o.at < ph.from || o.at >= ph.to {
				continue
			}
			r.calls++
			lat = append(lat, o.latency)
			if o.err != nil {
				r.fails++
				r.lastFailAfterKill = max(r.lastFailAfterKill, o.at+o.latency-killAt)
				r.lastFailAfterClose = max(r.lastFailAfterClose, o.at+o.latency-closeAt)
				if o.at >= closeAt {
					r.startedAfterClose++
				}
			}
		}
		r.p50, r.p99 = stats.Percentile(lat, 50), stats.Percentile(lat, 99)
		rows = append(rows, r)
	}
	return rows
}

// backendBinaries are the paths of the built backend programs.
type backendBinaries struct{ rpc, grpc string }

// buildBackend builds the program ./cmd/name of this module into a
// temporary directory and returns its path. It needs the go command on
// PATH and the package's directory as the working directory, as go test
// runs it.
func buildBackend(b *testing.B, name string) string {
	bin := filepath.Join(b.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/"+name).CombinedOutput()
	if err != nil {
		b.Fatalf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	return bin
}

// failoverRound runs every client at 16 and 64 callers once and returns
// the rows of every run.
func failoverRound(b *testing.B, round int, run time.Duration, bins backendBinaries) []failoverRow {
	var rows []failoverRow
	for _, callers := range []int{16, 64} {
		for _, mode := range []string{"retries", "no retries", "rr, no retries"} {
			retries := mode == "retries"
			var addrs []string
			var kids []*rpctest.Child
			for range 3 {
				k := rpctest.StartChild(b, rpctest.WithChildHeartbeat(), rpctest.WithChildBinary(bins.rpc))
				kids = append(kids, k)
				addrs = append(addrs, k.Addr())
			}
			w, err := discovery.StaticAddrs(addrs...)
			if err != nil {
				b.Fatal(err)
			}
			opts := []rpcclient.Option{rpcclient.WithAttemptTimeout(500 * time.Millisecond)}
			name := "dialtone, " + mode
			if !retries {
				opts = append(opts, rpcclient.WithMaxAttempts(1))
			}
			if mode == "rr, no retries" {
				opts = append(opts, rpcclient.WithBalancer(balancer.WithPolicy(balancer.RoundRobin())))
			}
			c, err := rpcclient.New(w, opts...)
			if err != nil {
				b.Fatal(err)
			}
			out, killAt, closeAt := load(b, callers, run, kids[0].Addr(), kids[0].Kill, func(ctx context.Context) error {
				var r rpctest.EchoReply
				return c.Call(ctx, "Echo.Echo", &rpctest.EchoArgs{Msg: "x"}, &r, rpcclient.Idempotent())
			})
			c.Close()
			w.Close()
			rows = append(rows, phaseRows(round, name, callers, run, out, killAt, closeAt)...)
		}

		// grpc-go round_robin, default settings (transparent retries only).
		var gkids []*grpcChild
		var gaddrs []resolver.Address
		for range 3 {
			k := startGRPCChild(b, bins.grpc)
			gkids = append(gkids, k)
			gaddrs = append(gaddrs, resolver.Address{Addr: k.addr})
		}
		r := manual.NewBuilderWithScheme("failover")
		r.InitialState(resolver.State{Addresses: gaddrs})
		conn, err := grpc.NewClient(r.Scheme()+":///echo", grpc.WithResolvers(r),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
		if err != nil {
			b.Fatal(err)
		}
		hc := healthpb.NewHealthClient(conn)
		out, killAt, closeAt := load(b, callers, run, gkids[0].addr, gkids[0].kill, func(ctx context.Context) error {
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		})
		conn.Close()
		rows = append(rows, phaseRows(round, "grpc-go round_robin", callers, run, out, killAt, closeAt)...)
	}
	return rows
}

// failoverRow is one phase of one client's run in one round.
type failoverRow struct {
	round              int
	client             string
	callers            int
	phase              string
	calls, fails       int
	p50, p99           time.Duration
	lastFailAfterKill  time.Duration
	lastFailAfterClose time.Duration
	// startedAfterClose counts the failed calls that started (entered Call)
	// after the probe connection saw the sockets close. The failures that
	// end after the close but started before it were in flight on the
	// dying backend: their end is when the client read the reset, and with
	// 64 callers on 2 cores, waking every caller that waited on it takes up
	// to about 2 ms. The probe's own wake-up can lag the close as much, so
	// a call that started just after the close may count as before it.
	startedAfterClose int
}

// printFailover prints every round's table, in the order the rounds ran,
// and with more than one round a summary of the total failures.
func printFailover(rows []failoverRow) {
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].round != rows[j].round {
			return rows[i].round < rows[j].round
		}
		return rows[i].callers < rows[j].callers
	})
	rounds := 0
	for _, r := range rows {
		if r.round != rounds {
			rounds = r.round
			fmt.Printf("\nround %d\n", r.round)
			fmt.Printf("| client                    | callers | phase  |  calls | failures |  p50 ms |  p99 ms | last failure after SIGKILL sent / sockets closed | failed, started after close |\n")
			fmt.Printf("|---------------------------|---------|--------|--------|----------|---------|---------|--------------------------------------------------|-----------------------------|\n")
		}
		last := "-"
		if r.fails > 0 {
			last = fmt.Sprintf("%.1f ms / %.1f ms", stats.Ms(r.lastFailAfterKill), stats.Ms(r.lastFailAfterClose))
		}
		fmt.Printf("| %-25s | %7d | %-6s | %6d | %8d | %7.2f | %7.2f | %48s | %27d |\n", r.client, r.callers, r.phase,
			r.calls, r.fails, stats.Ms(r.p50), stats.Ms(r.p99), last, r.startedAfterClose)
	}
	fmt.Println()
	if rounds < 2 {
		return
	}
	// The summary: per client and caller count, the total failures of each
	// round, their median, and the median calls per round.
	type key struct {
		client  string
		callers int
	}
	var order []key
	fails := map[key][]int{}
	calls := map[key][]int{}
	late := map[key]int{}
	for _, r := range rows {
		if r.phase != "total" {
			continue
		}
		k := key{r.client, r.callers}
		if _, ok := fails[k]; !ok {
			order = append(order, k)
		}
		fails[k] = append(fails[k], r.fails)
		calls[k] = append(calls[k], r.calls)
		late[k] += r.startedAfterClose
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].callers < order[j].callers })
	fmt.Printf("| client                    | callers | failures per round               | median | mean | median calls | failed, started after close (all rounds) |\n")
	fmt.Printf("|---------------------------|---------|----------------------------------|--------|------|--------------|------------------------------------------|\n")
	for _, k := range order {
		sum := 0
		for _, f := range fails[k] {
			sum += f
		}
		fmt.Printf("| %-25s | %7d | %-32s | %6d | %4.1f | %12d | %40d |\n", k.client, k.callers, fmt.Sprint(fails[k]),
			medianInt(fails[k]), float64(sum)/float64(len(fails[k])), medianInt(calls[k]), late[k])
	}
	fmt.Println()
}

// medianInt returns the median of xs (the upper one of an even count).
func medianInt(xs []int) int {
	s := append([]int(nil), xs...)
	sort.Ints(s)
	return s[len(s)/2]
}
