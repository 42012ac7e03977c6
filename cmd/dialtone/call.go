package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"slices"
	"strings"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/discovery"
)

const (
	// defaultCallTimeout is call's -timeout.
	defaultCallTimeout = 10 * time.Second
	// maxDials bounds the endpoints one call tries when dials fail.
	maxDials = 3
	// dialTimeout bounds one dial.
	dialTimeout = 3 * time.Second
)

// errNotSent marks failures before the request could leave: they are
// retried on another endpoint.
var errNotSent = errors.New("request not sent")

// runCall implements dialtone call TARGET Service.Method [JSON].
func runCall(ctx context.Context, fs *flag.FlagSet, o options, stdout, stderr io.Writer) int {
	if fs.NArg() < 2 || fs.NArg() > 3 {
		return usageError(fs, stderr, "want TARGET Service.Method [JSON], got %d arguments", fs.NArg())
	}
	target, method, params := fs.Arg(0), fs.Arg(1), "null"
	if fs.NArg() == 3 {
		params = fs.Arg(2)
	}
	if svc, m, ok := strings.Cut(method, "."); !ok || svc == "" || m == "" || strings.Contains(m, ".") {
		return usageError(fs, stderr, "method %q: want Service.Method", method)
	}
	if !json.Valid([]byte(params)) {
		return usageError(fs, stderr, "parameter %q is not valid JSON (quote it for the shell: '{\"Msg\":\"hi\"}')", params)
	}
	if o.timeout <= 0 {
		return usageError(fs, stderr, "-timeout %v: want more than 0", o.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	w, err := discovery.Watch(ctx, target)
	if err != nil {
		return targetError(stderr, "call", err)
	}
	defer w.Close()
	b := balancer.New(w, balancer.WithService(serviceName(target)))
	defer b.Close() // before w.Close: deferred calls run last in, first out

	var tried []string
	for {
		res, err := pick(ctx, b, tried)
		if err != nil {
			fmt.Fprintf(stderr, "dialtone call: %v\n", err)
			return exitFail
		}
		addr := res.Endpoint.Addr
		tried = append(tried, addr)
		start := time.Now()
		result, err := callJSON(ctx, addr, method, json.RawMessage(params))
		res.Done(err)
		if err == nil {
			fmt.Fprintf(stderr, "# %s answered by %s (%s) in %v\n", method, res.Endpoint.ID, addr, time.Since(start).Round(time.Microsecond))
			var out bytes.Buffer
			if json.Indent(&out, result, "", "  ") != nil {
				out.Reset()
				out.Write(result)
			}
			out.WriteByte('\n')
			stdout.Write(out.Bytes())
			return exitOK
		}
		var se rpc.ServerError
		switch {
		case errors.As(err, &se):
			fmt.Fprintf(stderr, "dialtone call: %s on %s (%s) returned an error: %s\n", method, res.Endpoint.ID, addr, string(se))
			return exitFail
		case errors.Is(err, errNotSent) && len(tried) < maxDials && ctx.Err() == nil:
			fmt.Fprintf(stderr, "dialtone call: %v; trying another endpoint\n", err)
			w.ResolveNow()
		default:
			fmt.Fprintf(stderr, "dialtone call: %s on %s (%s): %v\n", method, res.Endpoint.ID, addr, err)
			return exitFail
		}
	}
}

// pick waits, as long as ctx allows, for discovery's first answer, then
// picks an endpoint not tried yet. Done is called on a result it does not
// return.
func pick(ctx context.Context, b *balancer.Balancer, tried []string) (balancer.Result, error) {
	for {
		upd := b.Updated()
		res, err := b.Pick(ctx, balancer.Exclude(tried...))
		switch {
		case err == nil && slices.Contains(tried, res.Endpoint.Addr):
			res.Done(context.Canceled) // not a failure of the node
			return balancer.Result{}, fmt.Errorf("no endpoint left to try after failed dials to %s", strings.Join(tried, ", "))
		case err == nil:
			return res, nil
		case !errors.Is(err, balancer.ErrNoStateYet):
			return balancer.Result{}, err
		}
		select {
		case <-upd:
		case <-ctx.Done():
			return balancer.Result{}, fmt.Errorf("no answer from discovery: %w", ctx.Err())
		}
	}
}

// callJSON dials addr and makes one JSON-RPC call (net/rpc/jsonrpc's wire
// format) with params, returning the raw JSON result. Dial failures wrap
// errNotSent; an error returned by the method is an rpc.ServerError.
func callJSON(ctx context.Context, addr, method string, params json.RawMessage) (json.RawMessage, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotSent, err)
	}
	client := jsonrpc.NewClient(conn)
	defer client.Close()
	var result json.RawMessage
	call := client.Go(method, params, &result, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
	case <-ctx.Done():
		client.Close() // releases the call with rpc.ErrShutdown
		<-call.Done
		return nil, ctx.Err()
	}
	if call.Error != nil {
		if errors.Is(call.Error, io.ErrUnexpectedEOF) || errors.Is(call.Error, io.EOF) || errors.Is(call.Error, rpc.ErrShutdown) {
			return nil, fmt.Errorf("%w (does the server speak JSON-RPC? plain net/rpc servers speak gob)", call.Error)
		}
		return nil, call.Error
	}
	return result, nil
}
