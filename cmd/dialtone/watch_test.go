package main

import (
	"strings"
	"testing"
	"time"

	"github.com/dialtone-go/dialtone/discovery"
)

// TestFormatStateQuotesControlCharacters: an endpoint's ID (an etcd key
// suffix) and zone come from the registry unchecked but for length; one
// holding a newline, a tab or a terminal escape must not add lines to the
// watch output, break its table, or reach the operator's terminal raw.
func TestFormatStateQuotesControlCharacters(t *testing.T) {
	now := time.Now()
	s := discovery.State{Version: 3, Synced: now, Endpoints: []discovery.Endpoint{
		{ID: "a\nversion 9: 0 endpoints", Addr: "10.0.0.1:80", Weight: 1},
		{ID: "b\x1b]0;owned\x07", Addr: "10.0.0.2:80", Weight: 1, Zone: "z\tq"},
		{ID: "plain", Addr: "10.0.0.3:80", Weight: 1, Zone: "eu-1"},
	}}
	out := string(formatState(s, now))
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 { // header, column titles, three endpoints
		t.Errorf("output has %d lines, want 5:\n%s", len(lines), out)
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("output carries a terminal escape raw: %q", out)
	}
	if !strings.Contains(out, "plain") || !strings.Contains(out, "eu-1") {
		t.Errorf("a plain endpoint is not shown as it is:\n%s", out)
	}
}
