package consul

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
	"github.com/dialtone-go/dialtone/internal/consultest"
	"github.com/hashicorp/consul/api"
)

// lockedBuffer is a log sink safe for the watcher's goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// FAULTS.md row 13 against a real agent with ACLs: the watcher's token is
// deleted while it watches, and the agent answers 403 ("ACL not found").
// The figure: "last known good kept 100 %; token found in logs = 0". Every
// State published after the deletion must carry the set, the error must be
// reported, and neither errors nor logs (debug level) may hold the token's
// secret. TestTokenNeverLeaksAndACLFilteredEmptyIsError proves it against
// a fake's 403.
func TestAgentDeletedTokenKeepsLastKnownGoodAndNeverLeaks(t *testing.T) {
	const root = "6b0e2c4a-1f3d-4c8e-9a7b-2d5f8e1c3a90"
	a := consultest.StartWithHCL(t, `acl { enabled = true
		default_policy = "deny"
		tokens { initial_management = "`+root+`"
			agent = "`+root+`" } }`)
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = a.Addr(), root
	admin, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	register(t, admin, "web-1", "127.0.0.1:9001", nil, nil)
	register(t, admin, "web-2", "127.0.0.1:9002", nil, nil)
	pol, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: "web-read",
		Rules: `service "web" { policy = "read" } node_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := admin.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	w, err := New("web", WithAddress(a.Addr()), WithToken(tok.SecretID), WithWaitTime(time.Second),
		WithErrorBackoff(50*time.Millisecond, 200*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const good = "127.0.0.1:9001,127.0.0.1:9002"
	nextWhere(t, w, 10*time.Second, "the set", func(s discovery.State) bool { return s.Err == nil && addrsOf(s) == good })

	if _, err := admin.ACL().TokenDelete(tok.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	// Every State for 2 s after the deletion: the set, and the error.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var states, errs int
	var lastErr error
	for {
		s, err := w.Next(ctx)
		if err != nil {
			break
		}
		states++
		if addrsOf(s) != good {
			t.Errorf("State %d after the token's deletion has %q (err %v); want the last known good set", states, addrsOf(s), s.Err)
		}
		if s.Err != nil {
			errs++
			lastErr = s.Err
			if strings.Contains(s.Err.Error(), tok.SecretID) {
				t.Errorf("the token's secret is in the error: %v", s.Err)
			}
		}
	}
	w.Close()
	if errs == 0 {
		t.Fatalf("no error reported in 2 s after the watcher's token was deleted (%d States)", states)
	}
	if strings.Contains(logs.String(), tok.SecretID) {
		t.Errorf("the token's secret is in the logs:\n%s", logs.String())
	}
	t.Logf("%d States after the deletion; %d with an error, the last: %v", states, errs, lastErr)
}
