package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/dialtone-go/dialtone/discovery"
)

// runWatch implements dialtone watch TARGET: it prints every State the
// watcher publishes until ctx is done (exit 0) or, with -once, the first one
// (exit 1 if it holds only a registry error).
func runWatch(ctx context.Context, fs *flag.FlagSet, o options, stdout, stderr io.Writer) int {
	if fs.NArg() != 1 {
		return usageError(fs, stderr, "want exactly one TARGET, got %d arguments", fs.NArg())
	}
	target := fs.Arg(0)
	w, err := discovery.Watch(ctx, target)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, discovery.ErrBadTarget) && !errors.Is(err, discovery.ErrUnknownScheme) {
			return exitOK // interrupted while the builder waited (an etcd login)
		}
		return targetError(stderr, "watch", err)
	}
	defer w.Close()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK // interrupted: the normal end of a watch
			}
			fmt.Fprintf(stderr, "dialtone watch: %v\n", err)
			return exitFail
		}
		// One Write per State, so that a reader sees whole blocks.
		if _, err := stdout.Write(formatState(s, time.Now())); err != nil {
			fmt.Fprintf(stderr, "dialtone watch: %v\n", err)
			return exitFail
		}
		if o.once {
			if s.Err != nil && len(s.Endpoints) == 0 {
				return exitFail // the registry failed and there is nothing to show
			}
			return exitOK
		}
	}
}

// formatState renders one State as a header line, a table of endpoints, and
// the discovery error if there is one:
//
//	version 2: 2 endpoints (synced 0s ago)
//	  ID           ADDR         WEIGHT  HEALTH   ZONE
//	  127.0.0.1:1  127.0.0.1:1  1       healthy  -
//	  error: ... (showing the last known good set)
func formatState(s discovery.State, now time.Time) []byte {
	var b bytes.Buffer
	noun := "endpoints"
	if len(s.Endpoints) == 1 {
		noun = "endpoint"
	}
	fmt.Fprintf(&b, "%s version %d: %d %s", now.Format("15:04:05.000"), s.Version, len(s.Endpoints), noun)
	if s.Synced.IsZero() {
		b.WriteString(" (the registry has not answered yet)\n")
	} else {
		fmt.Fprintf(&b, " (synced %v ago)\n", now.Sub(s.Synced).Round(time.Millisecond))
	}
	if len(s.Endpoints) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tADDR\tWEIGHT\tHEALTH\tZONE")
		for _, e := range s.Endpoints {
			zone := e.Zone
			if zone == "" {
				zone = "-"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", printable(e.ID), e.Addr, e.Weight, e.Health, printable(zone))
		}
		tw.Flush()
	}
	if s.Err != nil {
		fmt.Fprintf(&b, "  error: %v", s.Err)
		if len(s.Endpoints) > 0 {
			b.WriteString(" (showing the last known good set)")
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// printable returns s as it is, or quoted if it holds a character that is
// not printable: an endpoint's ID (an etcd key suffix) and zone come from
// the registry, checked for length only, and a newline, a tab or a
// terminal escape in one must not forge lines of the output, break its
// table, or reach the operator's terminal.
func printable(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}
