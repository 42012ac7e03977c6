package rpcclient

import (
	"testing"

	"github.com/dialtone-go/dialtone/internal/rpctest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	rpctest.RunChildIfRequested()
	goleak.VerifyTestMain(m)
}
