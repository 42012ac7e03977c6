package etcd

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dialtone-go/dialtone/discovery"
)

// DefaultEndpoint is the etcd address used when neither the target nor
// ETCD_ENDPOINTS names one.
const DefaultEndpoint = "127.0.0.1:2379"

// maxRecvMsgSize bounds one response from etcd on clients the builder makes:
// MaxValueSize x DefaultMaxEntries would be 6.4 GB, far above any sane
// service registry.
const maxRecvMsgSize = 64 << 20

func init() { discovery.Register("etcd", build) }

// build serves etcd://[host:port,host:port]/PREFIX. It makes its own client,
// which the Watcher closes. It does not wait for etcd: the first State (or
// error) arrives through Next.
func build(_ context.Context, t discovery.Target) (discovery.Watcher, error) {
	bad := func(part, why string) error {
		return fmt.Errorf("%w %q: %s: %s", discovery.ErrBadTarget, clip(t.Raw), part, why)
	}
	if strings.Trim(t.Path, "/") == "" {
		return nil, bad("path", "empty key prefix (want etcd://[host:port,...]/PREFIX)")
	}
	if len(t.Query) > 0 {
		keys := make([]string, 0, len(t.Query))
		for k := range t.Query {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return nil, bad("query", fmt.Sprintf("unknown option %q (etcd targets take no options)", clip(keys[0])))
	}
	hosts := t.Hosts
	if len(hosts) == 0 {
		hosts = envEndpoints(os.Getenv("ETCD_ENDPOINTS"))
	}
	if len(hosts) == 0 {
		hosts = []string{DefaultEndpoint}
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:            hosts,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		MaxCallRecvMsgSize:   maxRecvMsgSize,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: client for %s: %w", strings.Join(hosts, ","), err)
	}
	return start(client, true, t.Path, nil), nil
}

// envEndpoints splits ETCD_ENDPOINTS ("host:port,host:port", as etcdctl
// takes it; http:// prefixes are allowed) into a list, skipping blanks.
func envEndpoints(v string) []string {
	var out []string
	for h := range strings.SplitSeq(v, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}
