package consul

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/dialtone-go/dialtone/discovery"
)

func init() { discovery.Register("consul", build) }

// build serves consul://[host:port]/NAME?tag=a&tag=b&dc=dc1&near=_agent&filter=EXPR&healthy=passing|warning.
func build(_ context.Context, t discovery.Target) (discovery.Watcher, error) {
	opts, err := targetOptions(t)
	if err != nil {
		return nil, err
	}
	return New(t.Path, opts...)
}

func targetOptions(t discovery.Target) ([]Option, error) {
	bad := func(part, why string) ([]Option, error) {
		return nil, fmt.Errorf("%w %q: %s: %s", discovery.ErrBadTarget, t.String(), part, why)
	}
	if len(t.Hosts) > 1 {
		return bad("authority", "consul takes one agent address")
	}
	if t.Path == "" || strings.Contains(t.Path, "/") {
		return bad("path", "want one service name, as in consul://127.0.0.1:8500/orders")
	}
	if err := validServiceName(t.Path); err != nil {
		return bad("path", err.Error())
	}
	var opts []Option
	if len(t.Hosts) == 1 {
		opts = append(opts, WithAddress(t.Hosts[0]))
	} else if os.Getenv("CONSUL_HTTP_ADDR") == "" {
		opts = append(opts, WithAddress("127.0.0.1:8500"))
	}
	for key, vals := range t.Query {
		one := func() (string, bool) { return vals[0], len(vals) == 1 && vals[0] != "" }
		switch key {
		case "tag":
			for _, v := range vals {
				if v == "" {
					return bad("query", "empty tag")
				}
			}
			opts = append(opts, WithTags(vals...))
		case "dc":
			v, ok := one()
			if !ok {
				return bad("query", "dc takes one non-empty value")
			}
			opts = append(opts, WithDatacenter(v))
		case "near":
			v, ok := one()
			if !ok {
				return bad("query", "near takes one non-empty value")
			}
			opts = append(opts, WithNear(v))
		case "filter":
			v, ok := one()
			if !ok {
				return bad("query", "filter takes one non-empty expression")
			}
			opts = append(opts, WithFilter(v))
		case "healthy":
			v, _ := one()
			switch {
			case len(vals) != 1:
				return bad("query", "healthy takes one value")
			case v == "passing":
			case v == "warning":
				opts = append(opts, WithWarning(true))
			default:
				return bad("query", fmt.Sprintf("healthy=%q: want passing or warning", v))
			}
		case "token":
			return bad("query", "the token is never read from the target; set CONSUL_HTTP_TOKEN or use WithToken")
		default:
			return bad("query", fmt.Sprintf("unknown option %q (known: tag, dc, near, filter, healthy)", key))
		}
	}
	return opts, nil
}
