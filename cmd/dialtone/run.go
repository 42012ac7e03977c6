package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	_ "github.com/dialtone-go/dialtone/discovery/consul" // registers consul://
	_ "github.com/dialtone-go/dialtone/discovery/etcd"   // registers etcd://
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // the watch or the call failed
	exitUsage = 2 // bad command line or malformed target
)

// usage is the text of dialtone help.
const usage = `dialtone shows a service the way dialtone's client library sees it: the live
endpoint set that Consul, etcd or a static list publishes for a target, and a
call to one endpoint picked by the balancer.

Usage:
  dialtone watch [-once] TARGET
  dialtone call [-timeout 10s] TARGET Service.Method [JSON]
  dialtone help [SUBCOMMAND]

Subcommands:
  watch   Print the endpoint set of TARGET each time it changes: the version,
          the count, each endpoint's ID, address, weight, health and zone,
          and the registry error if there is one (the set shown is then the
          last known good one). Runs until Ctrl-C; -once prints the first
          set and exits (status 1 if it holds only a registry error).
  call    Pick one endpoint of TARGET through discovery and the balancer, call
          Service.Method on it over net/rpc's JSON codec (net/rpc/jsonrpc),
          with JSON as the one parameter (default null), and print the JSON
          result. Only servers that speak JSON-RPC answer (the example echo
          server does; plain gob net/rpc servers do not). A failed dial is
          retried on another endpoint; a call that may have reached the
          server is not.
  help    Print this text, or the flags of a subcommand.

Targets:
  consul://[host:port]/NAME[?tag=T&tag=T2&dc=DC&near=_agent&filter=EXPR&healthy=passing|warning]
          Instances of service NAME whose checks pass; healthy=warning also
          lists those at warning, as degraded. Without host:port the agent is
          $CONSUL_HTTP_ADDR, then 127.0.0.1:8500.
  etcd://[host:port,host:port,...]/PREFIX
          Keys PREFIX/ID holding etcd's naming format ({"Addr":"host:port",
          "Metadata":...}). Without hosts: $ETCD_ENDPOINTS, then
          127.0.0.1:2379. etcd:///services/echo reads keys services/echo/*.
  static:///host:port,host:port,...
          A fixed list of addresses.

Environment:
  CONSUL_HTTP_ADDR   Consul agent (host:port or http[s]://host:port) for
                     consul:// targets that name none.
  CONSUL_HTTP_TOKEN  Consul ACL token; a token is never read from the target.
                     (CONSUL_HTTP_SSL, CONSUL_CACERT, ... configure TLS.)
  ETCD_ENDPOINTS     Comma-separated etcd endpoints for etcd:// targets that
                     name none.
                     (ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY and
                     ETCDCTL_INSECURE_TRANSPORT configure TLS, ETCDCTL_USER
                     and ETCDCTL_PASSWORD authentication, as for etcdctl;
                     ETCDCTL_ENDPOINTS is not read.)

Examples:
  dialtone watch consul://127.0.0.1:8500/echo
  dialtone watch 'consul:///echo?tag=v2&healthy=warning'
  ETCD_ENDPOINTS=10.0.0.1:2379,10.0.0.2:2379 dialtone watch etcd:///services/echo
  dialtone watch -once static:///127.0.0.1:9000,127.0.0.1:9001
  dialtone call consul:///echo Echo.Echo '{"Msg":"hello"}'

Exit status: 0 on success (and when watch is interrupted), 1 when the watch
or the call fails, 2 on a usage error or a malformed target.
`

// run is the whole program: it runs the subcommand named by args[0] and
// returns the exit status. ctx ends a watch (Ctrl-C) or aborts a call. Tests
// call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && cmd == "help" {
			if fs := subcommand(rest[0], stdout, &options{}); fs != nil {
				fs.Usage()
				return exitOK
			}
			fmt.Fprintf(stderr, "dialtone: no subcommand %q\n\n%s", rest[0], usage)
			return exitUsage
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	case "watch", "call":
		var o options
		fs := subcommand(cmd, stderr, &o)
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage // the flag package has printed the error and the usage
		}
		if cmd == "watch" {
			return runWatch(ctx, fs, o, stdout, stderr)
		}
		return runCall(ctx, fs, o, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "dialtone: unknown subcommand %q\n\n%s", cmd, usage)
		return exitUsage
	}
}

// options holds the flags of the subcommands.
type options struct {
	once    bool          // watch -once
	timeout time.Duration // call -timeout
}

// subcommand returns the flag set of the subcommand name, printing to out and
// setting o, or nil if there is no such subcommand.
func subcommand(name string, out io.Writer, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	var synopsis, text string
	switch name {
	case "watch":
		synopsis = "dialtone watch [-once] TARGET"
		text = "Prints the endpoint set of TARGET each time it changes, until Ctrl-C."
		fs.BoolVar(&o.once, "once", false, "print the first endpoint set and exit (status 1 if it holds only a registry error)")
	case "call":
		synopsis = "dialtone call [-timeout 10s] TARGET Service.Method [JSON]"
		text = "Calls Service.Method with the JSON parameter on one endpoint of TARGET, over\nnet/rpc's JSON codec, and prints the JSON result."
		fs.DurationVar(&o.timeout, "timeout", defaultCallTimeout, "deadline for discovery, dial and call together")
	default:
		return nil
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\nTARGET is consul://..., etcd://... or static:///...; see dialtone help.\n", synopsis, text)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// usageError prints msg and the subcommand's usage, and returns exitUsage.
func usageError(fs *flag.FlagSet, stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "dialtone %s: %s\n\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.SetOutput(stderr)
	fs.Usage()
	return exitUsage
}

// targetError reports an error from discovery.Watch: a malformed target or an
// unknown scheme is a usage error.
func targetError(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "dialtone %s: %v\n", cmd, err)
	if errors.Is(err, discovery.ErrBadTarget) || errors.Is(err, discovery.ErrUnknownScheme) {
		return exitUsage
	}
	return exitFail
}

// serviceName is the name a target's service goes by in errors: the Consul
// name, or the last element of the etcd prefix.
func serviceName(target string) string {
	t, err := discovery.ParseTarget(target)
	if err != nil || t.Scheme == "static" {
		return target
	}
	p := strings.TrimRight(t.Path, "/")
	return p[strings.LastIndexByte(p, '/')+1:]
}
