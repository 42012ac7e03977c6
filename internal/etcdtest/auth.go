package etcdtest

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// User is an etcd user that EnableAuth creates, allowed to read the keys
// under ReadPrefix (every key that starts with it) and nothing else.
type User struct {
	Name       string
	Password   string
	ReadPrefix string
}

// EnableAuth turns on etcd authentication through cli, a client that is not
// logged in (auth is still off): it creates the user root with rootPassword
// and the root role, then each of users with a role of its own, then enables
// authentication. From then on every request needs credentials: use
// Server.ClientAs, for instance ClientAs(t, "root", rootPassword) for
// writes. Clients made before keep their connection but are refused. The
// test fails on any error.
func EnableAuth(t testing.TB, cli *clientv3.Client, rootPassword string, users ...User) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("etcdtest: enable auth: %s: %v", what, err)
		}
	}
	_, err := cli.UserAdd(ctx, "root", rootPassword)
	must("add user root", err)
	_, err = cli.UserGrantRole(ctx, "root", "root")
	must("grant role root", err)
	for _, u := range users {
		role := "read-" + u.Name
		_, err = cli.RoleAdd(ctx, role)
		must("add role "+role, err)
		_, err = cli.RoleGrantPermission(ctx, role, u.ReadPrefix, clientv3.GetPrefixRangeEnd(u.ReadPrefix), clientv3.PermissionType(clientv3.PermRead))
		must("grant read on "+u.ReadPrefix, err)
		_, err = cli.UserAdd(ctx, u.Name, u.Password)
		must("add user "+u.Name, err)
		_, err = cli.UserGrantRole(ctx, u.Name, role)
		must("grant role "+role, err)
	}
	_, err = cli.AuthEnable(ctx)
	must("enable", err)
}
