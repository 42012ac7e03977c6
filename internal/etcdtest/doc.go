// Package etcdtest runs a real etcd server inside the test process, for the
// integration tests of packages that talk to etcd.
//
// Start embeds etcd (go.etcd.io/etcd/server/v3/embed) on 127.0.0.1 with free
// ports and a data directory under t.TempDir(), waits until it serves, and
// registers its shutdown with t.Cleanup. Stop and Restart simulate an etcd
// outage: Restart brings the same member back on the same ports with the same
// data. Logging is silenced.
//
//	srv := etcdtest.Start(t)
//	cli := srv.Client(t) // closed by t.Cleanup
//
// A Server is a single member for now; multi-member clusters will be added
// for member-loss tests.
package etcdtest
