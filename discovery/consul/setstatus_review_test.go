package consul

import (
	"context"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/hashicorp/consul/api"
)

// SetStatus with a ctx already cancelled fails and leaves the status the
// Registrar keeps as it was. takeSlot's select, with the slot free and ctx
// done, picked either at random: 13 of 20 such calls changed the kept
// status, which the next keep-alive then sent, though SetStatus had failed.
func TestSetStatusWithCancelledCtxIsDeterministic(t *testing.T) {
	a := consultest.Start(t)
	reg, err := NewRegistrar(context.Background(), Registration{Name: "web", ID: "web-1", Addr: "127.0.0.1:9001",
		Check: Check{TTL: 30 * time.Second}}, WithAddress(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	changed := 0
	for i := range 20 {
		want := api.HealthCritical
		if i%2 == 1 {
			want = api.HealthWarning
		}
		if err := reg.SetStatus(ctx, want); err == nil {
			t.Fatal("SetStatus with a cancelled ctx succeeded")
		}
		reg.mu.Lock()
		if reg.status == want {
			changed++
		}
		reg.mu.Unlock()
	}
	if changed != 0 {
		t.Fatalf("of 20 SetStatus calls with a cancelled ctx, all failing, %d changed the status the Registrar keeps", changed)
	}
}
