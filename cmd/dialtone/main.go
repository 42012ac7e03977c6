// Command dialtone shows a service the way dialtone's client library sees it:
// the live endpoint set that discovery publishes for a target, and a call to
// one endpoint picked by the balancer.
//
// Build and run it:
//
//	go run ./cmd/dialtone help
//	go run ./cmd/dialtone watch consul://127.0.0.1:8500/echo
//	go run ./cmd/dialtone watch etcd:///services/echo
//	go run ./cmd/dialtone call consul:///echo Echo.Echo '{"Msg":"hello"}'
//
// See usage (dialtone help) for the subcommands, the target formats and the
// environment variables.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
