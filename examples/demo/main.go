// Command demo shows dialtone keeping calls alive while backends die, hang
// and move. One command, no external services:
//
//	go run ./examples/demo          # about 25 s, live view in a terminal
//	go run ./examples/demo -short   # about 9 s, for CI
//
// It starts an embedded etcd (or uses a Consul agent with -consul), N echo
// backends registered in it, and a dialtone client under closed-loop load.
// Then it kills one backend, hangs another, moves a third to a new port, and
// restores them, printing what happens. At the end it prints a table per
// phase, writes a chart as SVG, and exits with status 1 if more idempotent
// calls failed than -max-failures allows.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, opts, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into options. Usage and errors go to
// stderr; -h returns flag.ErrHelp.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := defaultOptions()
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.backends, "backends", o.backends, "number of echo backends (at least 4: one is killed, one hung, one moved, one stays healthy)")
	fs.IntVar(&o.workers, "workers", o.workers, "closed-loop load workers, each with one call in flight")
	fs.DurationVar(&o.duration, "duration", o.duration, "length of the whole run, split evenly over the 5 phases")
	fs.BoolVar(&o.short, "short", false, "short run for CI: -duration "+shortDuration.String())
	fs.StringVar(&o.consul, "consul", "", "use the Consul agent at `ADDR` (host:port) instead of an embedded etcd")
	fs.StringVar(&o.chart, "chart", o.chart, "write the SVG chart to `PATH` (empty: no chart)")
	fs.IntVar(&o.maxFailures, "max-failures", o.maxFailures, "failure budget: idempotent calls allowed to fail before the exit status is 1")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: go run ./examples/demo [flags]

Runs a dialtone client against in-process echo backends registered in an
embedded etcd (or in Consul with -consul) and injects faults under load:

  warmup   all backends healthy
  kill     one backend crashes: listener and connections closed at once,
           its registration left to expire (TTL %v)
  hang     another stops answering: connections stay open, nothing is read
  move     a third restarts on a new port and registers again
  restore  the killed one comes back (new port, new registration), the hung
           one answers again

A terminal gets a live view redrawn every 250 ms; otherwise one log line a
second. At the end: calls, failures, p50 and p99 per phase, and an SVG chart
of success rate and p99 latency with the faults marked. The exit status is 0
only if idempotent failures stayed within -max-failures.

Flags:
`, registrationTTL)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return o, errors.New("unexpected arguments")
	}
	if o.short {
		o.duration = shortDuration
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return o, err
	}
	return o, nil
}

// shortDuration is the length of a -short run.
const shortDuration = 9 * time.Second
