package etcd

import (
	"testing"

	"go.uber.org/goleak"
)

// No goroutine is ignored: the embedded etcd server, its clients and the
// watchers all stop by the end of each test's cleanup.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
