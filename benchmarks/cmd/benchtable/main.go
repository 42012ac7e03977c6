// Command benchtable reads `go test -bench` output on stdin and prints, per
// Kind, n and mode, each peer's ns/op and allocs/op (the median over -count
// runs), how that cost compares with the same peer at n=3, and the ratio of
// every dialtone variant (peer=dialtone or peer=dialtone-*) to every other
// peer. A ratio below 1.00x means dialtone is faster.
//
// When both sides of a ratio have the same number of runs, the ratio is the
// median of the runs' ratios, the i-th run of one over the i-th of the
// other; otherwise the ratio of the medians. Rounds of -count=1, each
// running every peer in turn, pair runs taken close together, so that the
// box's state between them cancels out of each ratio:
//
//	for i in 1 2 3 4 5; do go test -run='^$' -bench=P2C -benchmem -count=1 .; done | go run ./cmd/benchtable
//
// With -count=N the runs of one benchmark come back to back instead, and
// the i-th runs of two peers are minutes apart.
//
// It expects names of the form
//
//	Benchmark<Kind>/peer=<name>/n=<n>/<mode>[-GOMAXPROCS]
//
// where the n= and mode parts may be missing (BenchmarkFloor, BenchmarkRebuild).
//
// A group in which every peer also reports cpu-ns/op (the process's CPU time
// per op, which BenchmarkRebuild reports because dialtone's side runs on
// other goroutines than the benchmark's) is compared on that instead of
// ns/op, and its column says so.
//
// Usage:
//
//	go test -run='^$' -bench=. -benchmem -count=5 . | tee out.txt
//	go run ./cmd/benchtable < out.txt
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

type key struct {
	kind string
	n    int // -1 when the name has no n=
	mode string
}

type samples struct {
	ns, cpu, allocs, bytes []float64
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	data := map[key]map[string]*samples{}
	peerOrder := map[key][]string{}
	var keys []key

	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil { // iterations
			continue
		}
		k, peer, ok := parseName(f[0])
		if !ok {
			continue
		}
		if data[k] == nil {
			data[k] = map[string]*samples{}
			keys = append(keys, k)
		}
		s := data[k][peer]
		if s == nil {
			s = &samples{}
			data[k][peer] = s
			peerOrder[k] = append(peerOrder[k], peer)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				s.ns = append(s.ns, v)
			case "cpu-ns/op":
				s.cpu = append(s.cpu, v)
			case "allocs/op":
				s.allocs = append(s.allocs, v)
			case "B/op":
				s.bytes = append(s.bytes, v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(keys) == 0 {
		return fmt.Errorf("no benchmark lines named Benchmark<Kind>/peer=<name>/... on stdin")
	}

	// Keep Kinds in order of first appearance; within a Kind sort by n, then
	// serial before parallel.
	kindRank := map[string]int{}
	for _, k := range keys {
		if _, ok := kindRank[k.kind]; !ok {
			kindRank[k.kind] = len(kindRank)
		}
	}
	slices.SortStableFunc(keys, func(a, b key) int {
		if c := kindRank[a.kind] - kindRank[b.kind]; c != 0 {
			return c
		}
		if a.n != b.n {
			return a.n - b.n
		}
		return modeRank(a.mode) - modeRank(b.mode)
	})

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, k := range keys {
		peers := peerOrder[k]
		var ours []string
		for _, p := range peers {
			if isDialtone(p) {
				ours = append(ours, p)
			}
		}
		title := k.kind
		if k.n >= 0 {
			title += " n=" + strconv.Itoa(k.n)
		}
		if k.mode != "" {
			title += " " + k.mode
		}
		fmt.Fprintln(tw, title) // no tab: each group aligns on its own
		unit, cost := "ns/op", func(s *samples) []float64 { return s.ns }
		if !slices.ContainsFunc(peers, func(p string) bool { return len(data[k][p].cpu) == 0 }) {
			unit, cost = "cpu-ns/op", func(s *samples) []float64 { return s.cpu }
		}
		hdr := []string{"peer", unit, "allocs/op", "B/op", "vs n=3"}
		for _, o := range ours {
			hdr = append(hdr, o+"/peer")
		}
		fmt.Fprintln(tw, strings.Join(hdr, "\t"))
		for _, p := range peers {
			s := data[k][p]
			ns := median(cost(s))
			scale := "-"
			if k.n > 0 && k.n != 3 {
				if base := data[key{k.kind, 3, k.mode}][p]; base != nil && median(cost(base)) > 0 {
					scale = fmt.Sprintf("%.2fx", ns/median(cost(base)))
				}
			}
			row := []string{p, fmtNum(ns), fmtCount(median(s.allocs)), fmtCount(median(s.bytes)), scale}
			for _, o := range ours {
				switch {
				case isDialtone(p):
					row = append(row, "")
				case ns > 0:
					row = append(row, fmt.Sprintf("%.2fx", ratio(cost(data[k][o]), cost(s))))
				default:
					row = append(row, "-")
				}
			}
			fmt.Fprintln(tw, strings.TrimRight(strings.Join(row, "\t"), "\t"))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// parseName splits "Benchmark<Kind>/peer=<p>/n=<n>/<mode>-<procs>".
func parseName(name string) (key, string, bool) {
	name = procsSuffix.ReplaceAllString(strings.TrimPrefix(name, "Benchmark"), "")
	parts := strings.Split(name, "/")
	k := key{kind: parts[0], n: -1}
	peer := ""
	var rest []string
	for _, p := range parts[1:] {
		switch {
		case strings.HasPrefix(p, "peer="):
			peer = strings.TrimPrefix(p, "peer=")
		case strings.HasPrefix(p, "n="):
			n, err := strconv.Atoi(strings.TrimPrefix(p, "n="))
			if err != nil {
				return key{}, "", false
			}
			k.n = n
		default:
			rest = append(rest, p)
		}
	}
	k.mode = strings.Join(rest, "/")
	return k, peer, peer != ""
}

func isDialtone(peer string) bool {
	return peer == "dialtone" || strings.HasPrefix(peer, "dialtone-")
}

func modeRank(m string) int {
	switch m {
	case "serial":
		return 0
	case "parallel":
		return 1
	}
	return 2
}

// ratio returns how a's runs compare with b's: the median of a[i]/b[i]
// when both have the same number of runs (rounds), else the ratio of
// their medians.
func ratio(a, b []float64) float64 {
	if len(a) != len(b) || len(a) < 2 {
		return median(a) / median(b)
	}
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return median(r)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return -1
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtCount(v float64) string {
	if v < 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func fmtNum(v float64) string {
	switch {
	case v < 0:
		return "-"
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
