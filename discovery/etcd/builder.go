package etcd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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

// credentialKeys are query keys that would carry a secret; the error for
// them says where credentials go instead.
var credentialKeys = map[string]bool{"user": true, "username": true, "password": true, "token": true}

// build serves etcd://[host:port,host:port]/PREFIX. It makes its own client
// from ConfigFromEnv (TLS and credentials from etcdctl's environment
// variables; see the package documentation, "Security"), which the Watcher
// closes.
//
// Without credentials it does not wait for etcd: the first State arrives
// through Next, and an unreachable etcd or a server certificate that fails
// verification (ErrTLSVerify) is reported in State.Err, never downgraded
// to plaintext. With credentials (ETCDCTL_USER), etcd's client logs in
// while it is made, so build blocks until etcd answers, at most 5 s or
// until ctx ends (then with ctx's error), and returns a wrong password,
// ErrTLSVerify (at once) or an unreachable etcd as its error.
//
// To configure the client in code, make a *clientv3.Client (from
// ConfigFromEnv, adjusted, if convenient) and call New with it.
func build(ctx context.Context, t discovery.Target) (discovery.Watcher, error) {
	// The query may hold a secret: never echo it.
	raw, _, _ := strings.Cut(t.Raw, "?")
	bad := func(part, why string) error {
		return fmt.Errorf("%w %q: %s: %s", discovery.ErrBadTarget, clip(raw), part, why)
	}
	if strings.Trim(t.Path, "/") == "" {
		return nil, bad("path", "empty key prefix (want etcd://[host:port,...]/PREFIX)")
	}
	if len(t.Query) > 0 {
		keys := make([]string, 0, len(t.Query))
		for k := range t.Query {
			if credentialKeys[strings.ToLower(k)] {
				return nil, bad("query", fmt.Sprintf("credentials are never read from the target; set %s and %s", varUser, varPassword))
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return nil, bad("query", fmt.Sprintf("unknown option %q (etcd targets take no options)", clip(keys[0])))
	}
	cfg, err := configFromEnv(os.Getenv, t.Hosts)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		// Bounds the login, the only wait in clientv3.New.
		cfg.DialTimeout = max(min(cfg.DialTimeout, time.Until(dl)), time.Millisecond)
	}
	client, release, err := dial(ctx, cfg)
	if err != nil {
		who := ""
		if cfg.Username != "" {
			who = fmt.Sprintf(" as user %q (%s)", clip(cfg.Username), varUser)
		}
		return nil, fmt.Errorf("etcd: client for %s%s: %w", strings.Join(cfg.Endpoints, ","), who, err)
	}
	var opts []Option
	if cfg.TLS != nil {
		tc, eps, why := cfg.TLS, cfg.Endpoints, tlsReason(os.Getenv, cfg.Endpoints)
		opts = append(opts, func(o *options) {
			o.explain = func(ctx context.Context) error {
				_, err := verifyServers(ctx, tc, eps, why)
				return err
			}
		})
	}
	w := start(client, true, t.Path, opts)
	w.release = release
	return w, nil
}

// dial makes the builder's client, and a function to call after closing
// it. With TLS and credentials, clientv3.New logs in, and when the TLS
// handshake fails it only says, at the deadline, that the time ran out: a
// handshake of our own runs alongside to find out why, and ends the wait at
// once when no server passes verification.
//
// ctx bounds the login: when it ends first, the client is aborted and ctx's
// error returned (wrapped with the client's).
func dial(ctx context.Context, cfg clientv3.Config) (*clientv3.Client, func(), error) {
	life, abort := context.WithCancel(context.Background())
	cfg.Context = life
	// A login (with credentials, clientv3.New waits for it) ends with ctx,
	// not only at its deadline: Ctrl-C in a CLI must not wait out the dial
	// timeout.
	stop := context.AfterFunc(ctx, abort)
	defer stop()
	if cfg.TLS == nil || cfg.Username == "" {
		c, err := clientv3.New(cfg)
		if err == nil && !stop() {
			// ctx ended between the login and here: abort has run, or
			// will, and the client is dead.
			c.Close()
			err = ctx.Err()
		}
		if err != nil {
			abort()
			return nil, nil, withCtxErr(ctx, err)
		}
		return c, abort, nil
	}
	vctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	verified := make(chan error, 1)
	go func() {
		all, err := verifyServers(vctx, cfg.TLS, cfg.Endpoints, tlsReason(os.Getenv, cfg.Endpoints))
		if all {
			abort()
		}
		verified <- err
	}()
	c, err := clientv3.New(cfg)
	if err == nil {
		cancel()
	}
	verr := <-verified
	if err == nil && (!stop() || life.Err() != nil) {
		// Given up on between the login and here (ctx ended, or no
		// server passed verification): the client is dead.
		c.Close()
		err = context.Canceled
	}
	if err == nil {
		return c, abort, nil
	}
	abort()
	if verr != nil {
		err = fmt.Errorf("%w (%w)", verr, err)
	}
	return nil, nil, withCtxErr(ctx, err)
}

// withCtxErr wraps err with ctx's error when ctx has ended and err does not
// say so already: the caller gave up, and errors.Is should tell.
func withCtxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
