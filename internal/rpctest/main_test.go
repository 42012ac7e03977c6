package rpctest

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	RunChildIfRequested()
	goleak.VerifyTestMain(m)
}
