// Command client calls the example echo service (examples/echo) by name
// through dialtone's rpcclient, and prints which instance answered each call
// and how long it took.
//
// Run it against instances registered in Consul or etcd, or a fixed list:
//
//	go run ./examples/client -target consul://127.0.0.1:8500/echo -n 20 -interval 200ms
//	go run ./examples/client -target etcd:///services/echo
//	go run ./examples/client -target static:///127.0.0.1:9000,127.0.0.1:9001 -n 0
//
// The target defaults to $DIALTONE_TARGET, then etcd:///services/echo. The
// registry addresses default to CONSUL_HTTP_ADDR (token CONSUL_HTTP_TOKEN)
// and ETCD_ENDPOINTS when the target names none. -n 0 calls until SIGINT or
// SIGTERM. At the end it prints a summary; it exits 1 when more calls failed
// than -max-failures allows, and 2 on a usage error (a malformed -target
// included).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
	_ "github.com/dialtone-go/dialtone/discovery/consul" // registers consul://
	_ "github.com/dialtone-go/dialtone/discovery/etcd"   // registers etcd://
	"github.com/dialtone-go/dialtone/examples/echo/echoapi"
	"github.com/dialtone-go/dialtone/rpcclient"
)

// defaultTarget is used when neither -target nor DIALTONE_TARGET is set.
const defaultTarget = "etcd:///services/echo"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2) // the flag package has printed the error and the usage
	default:
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

// errUsage marks command-line errors, already reported on standard error.
var errUsage = errors.New("usage error")

// config is the parsed command line.
type config struct {
	target            string
	n, maxFailures    int
	interval, timeout time.Duration
	msg               string
	sleep             time.Duration
	zone              string
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	// No flag default: PrintDefaults would show it beside the text's.
	fs.StringVar(&c.target, "target", "", "service `target`: consul://[host:port]/NAME, etcd://[host:port,...]/PREFIX or static:///host:port,... (default $DIALTONE_TARGET, then "+defaultTarget+")")
	fs.IntVar(&c.n, "n", 10, "number of calls; 0 calls until interrupted")
	fs.DurationVar(&c.interval, "interval", time.Second, "time between the starts of two calls")
	fs.IntVar(&c.maxFailures, "max-failures", 0, "failed calls tolerated before the exit status is 1")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "deadline of each call, retries included")
	fs.StringVar(&c.msg, "msg", "hello", "message to send")
	fs.DurationVar(&c.sleep, "sleep", 0, "ask the server to wait this long before answering (a slow call)")
	fs.StringVar(&c.zone, "zone", "", "prefer the instances registered in this `zone` (the echo server's -zone) while enough of them are healthy")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: client [flags]\n\nCalls %s through dialtone and prints which instance answered.\n"+
			"Environment: DIALTONE_TARGET, CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ETCD_ENDPOINTS, ETCDCTL_* (etcd TLS and auth).\n\nFlags:\n", echoapi.Method)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "target" })
	if !set {
		c.target = cmp.Or(os.Getenv("DIALTONE_TARGET"), defaultTarget)
	}
	bad := func(format string, a ...any) (config, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintln(fs.Output(), err)
		fs.Usage()
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected arguments: %q", fs.Args())
	case c.n < 0:
		return bad("-n %d: want 0 or more", c.n)
	case c.maxFailures < 0:
		return bad("-max-failures %d: want 0 or more", c.maxFailures)
	case c.interval < 0:
		return bad("-interval %v: want 0 or more", c.interval)
	case c.timeout <= 0:
		return bad("-timeout %v: want more than 0", c.timeout)
	}
	return c, nil
}

// run makes the calls and prints one line per call and a summary on stdout.
// It returns an error when more than -max-failures calls failed. Calls
// interrupted by ctx are not counted. Tests call it directly.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parseFlags(args)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	attempts := &attemptLog{}
	opts := []rpcclient.Option{rpcclient.WithLogger(log), rpcclient.WithObserver(attempts)}
	if c.zone != "" {
		opts = append(opts, rpcclient.WithBalancer(balancer.WithLocalZone(c.zone), balancer.WithLogger(log)))
	}
	client, err := rpcclient.Dial(ctx, c.target, opts...)
	if errors.Is(err, discovery.ErrBadTarget) || errors.Is(err, discovery.ErrUnknownScheme) {
		// A usage error, as for dialtone watch and call: exit 2, not the
		// status of failed calls.
		fmt.Fprintln(os.Stderr, "client: -target:", err)
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err != nil {
		return err
	}
	defer client.Close()
	fmt.Fprintf(stdout, "calling %s at %s\n", echoapi.Method, c.target)

	var (
		ok, failed int
		byServer   = map[string]int{}
		latencies  []time.Duration
	)
	var tick <-chan time.Time // nil: no wait between calls
	if c.interval > 0 {
		t := time.NewTicker(c.interval)
		defer t.Stop()
		tick = t.C
	}
	for i := 1; c.n == 0 || i <= c.n; i++ {
		if i > 1 && tick != nil {
			select {
			case <-ctx.Done():
			case <-tick:
			}
		}
		if ctx.Err() != nil {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		var reply echoapi.Reply
		start := time.Now()
		err := client.Call(cctx, echoapi.Method, &echoapi.Args{Msg: fmt.Sprintf("%s %d", c.msg, i), Sleep: c.sleep}, &reply, rpcclient.Idempotent())
		took := time.Since(start)
		cancel()
		tries := attempts.take()
		switch {
		case err == nil:
			ok++
			byServer[reply.Server]++
			latencies = append(latencies, took)
			fmt.Fprintf(stdout, "call %d: reply from %s in %v\n", i, reply.Server, took.Round(time.Microsecond))
			printRetried(stdout, tries)
		case ctx.Err() != nil:
			// Interrupted by the user: not a failure of the service.
		default:
			failed++
			fmt.Fprintf(stdout, "call %d: failed after %v: %v\n", i, took.Round(time.Microsecond), err)
			printRetried(stdout, tries)
		}
	}

	fmt.Fprintf(stdout, "%d calls: %d ok, %d failed", ok+failed, ok, failed)
	if len(byServer) > 0 {
		var parts []string
		for _, s := range slices.Sorted(maps.Keys(byServer)) {
			parts = append(parts, fmt.Sprintf("%s=%d", s, byServer[s]))
		}
		slices.Sort(latencies)
		var sum time.Duration
		for _, d := range latencies {
			sum += d
		}
		fmt.Fprintf(stdout, "; by server: %s; latency min %v, avg %v, max %v", strings.Join(parts, " "),
			latencies[0].Round(time.Microsecond), (sum / time.Duration(len(latencies))).Round(time.Microsecond),
			latencies[len(latencies)-1].Round(time.Microsecond))
	}
	fmt.Fprintln(stdout)
	if failed > c.maxFailures {
		return fmt.Errorf("%d of %d calls failed, more than -max-failures %d", failed, ok+failed, c.maxFailures)
	}
	return nil
}

// attemptLog is the client's Observer: it keeps the attempts of the call
// in progress (run makes one call at a time), which printRetried shows
// when a call took more than one.
type attemptLog struct {
	mu   sync.Mutex
	list []rpcclient.AttemptInfo
}

func (l *attemptLog) ObserveAttempt(a rpcclient.AttemptInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, a)
}

func (l *attemptLog) ObserveCall(rpcclient.CallInfo) {}

// take returns the attempts kept so far and forgets them.
func (l *attemptLog) take() []rpcclient.AttemptInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.list
	l.list = nil
	return list
}

// printRetried prints the attempts of a call that took more than one: the
// failover a user would otherwise not see.
func printRetried(w io.Writer, tries []rpcclient.AttemptInfo) {
	if len(tries) < 2 {
		return
	}
	for _, a := range tries {
		outcome := "ok"
		if a.Err != nil {
			outcome = a.Err.Error()
		}
		backup := ""
		if a.Hedge {
			backup = " (hedge)"
		}
		fmt.Fprintf(w, "  attempt %d%s on %s, %v: %s\n", a.Attempt, backup, a.Addr, a.Duration.Round(time.Microsecond), outcome)
	}
}
