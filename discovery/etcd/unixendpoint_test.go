package etcd

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// TestConfigFromEnvAcceptsUnixColonEndpoint: etcd's client takes a unix
// socket as "unix:PATH" (and "unixs:PATH") as well as "unix://PATH"; the
// doc of ConfigFromEnv names unix as an accepted scheme. Such an endpoint
// must be accepted, and it reaches etcd.
func TestConfigFromEnvAcceptsUnixColonEndpoint(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // etcd names a unix listener's socket after the URL's host, in the working directory
	sock := "etcd.sock"
	etcdtest.Start(t, func(c *embed.Config) {
		c.ListenClientUrls = append(c.ListenClientUrls, url.URL{Scheme: "unix", Host: sock})
	})
	if _, err := os.Stat(filepath.Join(dir, sock)); err != nil {
		t.Fatalf("no socket: %v", err)
	}
	for _, ep := range []string{"unix:" + filepath.Join(dir, sock), "unix:" + sock} {
		cfg, err := configFromEnv(func(string) string { return "" }, []string{ep})
		if err != nil {
			t.Errorf("ConfigFromEnv(%q): %v; want it accepted (etcd's client dials it)", ep, err)
			continue
		}
		c, err := clientv3.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = c.Get(ctx, "x")
		cancel()
		c.Close()
		if err != nil {
			t.Errorf("Get over %q: %v", ep, err)
		}
	}
}
