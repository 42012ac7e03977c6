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
// For a secured etcd, NewPKI makes a throwaway CA with server and client
// certificates for 127.0.0.1, WithClientTLS serves https:// only and
// requires client certificates, and EnableAuth turns on authentication with
// root and read-only users; Client and ClientAs then connect with the
// PKI's client certificate:
//
//	pki := etcdtest.NewPKI(t)
//	srv := etcdtest.Start(t, etcdtest.WithClientTLS(pki))
//	etcdtest.EnableAuth(t, srv.Client(t), "rootpw", etcdtest.User{Name: "reader", Password: "pw", ReadPrefix: "svc/"})
//	root := srv.ClientAs(t, "root", "rootpw")
//
// StartCluster runs several members as one cluster (3 for quorum tests),
// each behind loopback TCP proxies for its client and peer URLs, so that
// Member.Stop looks like a dead process (connections closed, no leadership
// handover) and Member.Isolate like a network partition (peer traffic held
// back on open connections, clients still served):
//
//	c := etcdtest.StartCluster(t, 3)
//	l := c.WaitLeader(t)
//	cli := c.Client(t) // every member
//	l.Stop()           // the others elect a new leader
//	l.Restart(t)       // back with its data
package etcdtest
