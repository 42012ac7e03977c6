package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// No goroutine is ignored: run stops the embedded etcd, its clients, the
// backends, the client and the load before it returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDemoShort(t *testing.T) {
	o := defaultOptions()
	o.duration = shortDuration
	o.chart = filepath.Join(t.TempDir(), "demo.svg")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, o, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	text := out.String()
	summary := text[strings.Index(text, "Summary"):]
	for _, p := range append(phaseNames, "all") {
		if !strings.Contains(summary, "\n"+p+" ") {
			t.Errorf("summary does not list phase %q", p)
		}
	}
	// The kill and the hang make attempts fail: the client retried, or
	// moved attempts that sent nothing, and says so.
	var retries, budget, unsent int
	if i := strings.Index(summary, "client stats: "); i < 0 {
		t.Errorf("summary has no client stats")
	} else if _, err := fmt.Sscanf(summary[i:], "client stats: %d retries (%d refused by the retry budget), %d attempts",
		&retries, &budget, &unsent); err != nil {
		t.Errorf("client stats line: %v", err)
	} else if retries+unsent == 0 {
		t.Errorf("client stats show no retry and no unsent attempt through a kill and a hang: %s", summary[i:])
	}
	if !strings.Contains(text, "failure budget held") {
		t.Errorf("output does not say the failure budget held")
	}
	if strings.Contains(text, "\x1b[") {
		t.Errorf("output to a buffer has ANSI escape codes")
	}

	svg, err := os.ReadFile(o.chart)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var texts strings.Builder
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
		if cd, ok := tok.(xml.CharData); ok {
			texts.Write(cd)
			texts.WriteByte('\n')
		}
	}
	for _, label := range []string{"kill echo-2", "hang echo-3", "move echo-4", "restore echo-2 + echo-3"} {
		if !strings.Contains(texts.String(), label) {
			t.Errorf("chart has no label %q", label)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-short", "-backends", "5", "-workers", "3", "-chart", "", "-max-failures", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != shortDuration || o.backends != 5 || o.workers != 3 || o.chart != "" || o.maxFailures != 2 {
		t.Errorf("parsed %+v", o)
	}
	for _, args := range [][]string{{"-backends", "3"}, {"-duration", "1s"}, {"-workers", "0"}, {"extra"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	var help bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	if !strings.Contains(help.String(), "-max-failures") || !strings.Contains(help.String(), "restore") {
		t.Errorf("-h does not explain the flags and phases:\n%s", help.String())
	}
}

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, v := range n {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
	} {
		if got := percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.in, tc.p, got, tc.want)
		}
	}
}

// A run whose calls cannot succeed (a call deadline far below a backend's
// latency) must fail its budget and say why.
func TestDemoBudgetExceeded(t *testing.T) {
	o := defaultOptions()
	o.duration = 5 * time.Second
	o.workers = 2
	o.chart = ""
	o.callTimeout = 100 * time.Microsecond
	var out bytes.Buffer
	err := run(context.Background(), o, &out)
	if err == nil || !strings.Contains(err.Error(), "failure budget exceeded") {
		t.Fatalf("run: %v, want the budget exceeded\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "failed calls (first") || !strings.Contains(out.String(), "FAILURE BUDGET EXCEEDED") {
		t.Errorf("output does not list the failures:\n%s", out.String())
	}
	t.Logf("error: %v", err)
}

// TestDemoIgnoresEtcdctlVariables: make demo is "one command, no external
// services"; its embedded etcd serves plaintext on loopback. The etcdctl
// variables an etcd operator keeps exported for a TLS cluster
// (ETCDCTL_INSECURE_TRANSPORT=false, ETCDCTL_CACERT...) are for that
// cluster: the demo's client must not take them for its own etcd. It did,
// and the demo failed with "discovery listed 0 of 4 backends: context
// deadline exceeded".
func TestDemoIgnoresEtcdctlVariables(t *testing.T) {
	t.Setenv("ETCDCTL_INSECURE_TRANSPORT", "false")
	t.Setenv("ETCDCTL_USER", "ops:secret")
	o := defaultOptions()
	o.duration = 5 * time.Second
	o.workers = 2
	o.chart = ""
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, o, &out); err != nil {
		t.Fatalf("run with etcdctl's TLS variables exported: %v\n%s", err, out.String())
	}
}
