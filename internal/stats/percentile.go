// Package stats has small helpers for benchmark reports.
package stats

import (
	"fmt"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0-100) of ds by the nearest-rank
// method; 0 for an empty slice. ds is not modified.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// Ms converts d to float milliseconds, for b.ReportMetric.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Report is what a propagation benchmark found: latencies of registry
// changes reaching Next.
type Report struct {
	Registry, Mode string
	Latencies      []time.Duration
}

// Metrics returns p50 and p99 in milliseconds, for b.ReportMetric.
func (r Report) Metrics() (p50, p99 float64) {
	return Ms(Percentile(r.Latencies, 50)), Ms(Percentile(r.Latencies, 99))
}

// Table renders the report as one markdown table with a header, the shape
// every propagation benchmark prints.
func (r Report) Table() string {
	p50, p99 := r.Metrics()
	return fmt.Sprintf("\n| registry | mode         | changes |    p50 ms |    p99 ms |    max ms |\n"+
		"|----------|--------------|---------|-----------|-----------|-----------|\n"+
		"| %-8s | %-12s | %7d | %9.2f | %9.2f | %9.2f |\n\n",
		r.Registry, r.Mode, len(r.Latencies), p50, p99, Ms(Percentile(r.Latencies, 100)))
}
