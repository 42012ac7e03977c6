package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// bucket is the chart's time resolution.
const bucket = 250 * time.Millisecond

// Chart geometry, in SVG user units.
const (
	chartW       = 960
	chartLeft    = 70
	chartRight   = 30
	chartTop     = 95
	panelH       = 150
	panelGap     = 45
	chartBottomH = 60
)

// bucketStat is what the chart plots for one bucket.
type bucketStat struct {
	calls, ok int
	p99, max  time.Duration
}

// buckets groups samples (sorted by end time) by the bucket they returned
// in, over n buckets.
func buckets(samples []sample, n int) []bucketStat {
	out := make([]bucketStat, n)
	lats := make([][]time.Duration, n)
	for _, s := range samples {
		i := min(int(s.end/bucket), n-1)
		out[i].calls++
		if s.ok {
			out[i].ok++
		}
		lats[i] = append(lats[i], s.lat)
	}
	for i := range out {
		slices.Sort(lats[i])
		out[i].p99 = percentile(lats[i], 99)
		out[i].max = percentile(lats[i], 100)
	}
	return out
}

// panel maps data to one horizontal strip of the chart.
type panel struct {
	top          float64
	total        time.Duration
	lo, hi       float64
	log          bool
	title, units string
}

func (p panel) x(t time.Duration) float64 {
	return chartLeft + float64(t)/float64(p.total)*(chartW-chartLeft-chartRight)
}

func (p panel) y(v float64) float64 {
	lo, hi := p.lo, p.hi
	if p.log {
		v, lo, hi = math.Log10(max(v, p.lo)), math.Log10(lo), math.Log10(hi)
	}
	f := (v - lo) / (hi - lo)
	return p.top + panelH - max(0, min(1, f))*panelH
}

// chartSVG renders calls/s, success rate and p99 latency per bucket, with
// the phases shaded and the fault events as labelled vertical lines. It is
// plain SVG with no external references.
func chartSVG(samples []sample, events []event, phaseLen time.Duration, target string) string {
	total := phaseLen * time.Duration(len(phaseNames))
	n := int((total + bucket - 1) / bucket)
	bs := buckets(samples, n)

	maxRate, minOK, maxP99 := 1.0, 100.0, time.Millisecond
	for _, b := range bs {
		maxRate = max(maxRate, float64(b.calls)/bucket.Seconds())
		if b.calls > 0 {
			minOK = min(minOK, 100*float64(b.ok)/float64(b.calls))
		}
		maxP99 = max(maxP99, b.max)
	}
	okLo := 90.0
	if minOK < okLo {
		okLo = 0
	}
	msHi := math.Pow(10, math.Ceil(math.Log10(float64(maxP99)/float64(time.Millisecond)+1e-9)))
	panels := []panel{
		{title: "throughput", units: "calls/s", lo: 0, hi: niceCeil(maxRate)},
		{title: "success rate", units: "%", lo: okLo, hi: 100},
		{title: "latency", units: "ms, log scale; red p99, pink max", lo: 0.1, hi: max(msHi, 10), log: true},
	}
	for i := range panels {
		panels[i].top = chartTop + float64(i)*(panelH+panelGap)
		panels[i].total = total
	}
	height := chartTop + len(panels)*panelH + (len(panels)-1)*panelGap + chartBottomH

	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, height, chartW, height)
	fmt.Fprintf(&b, "<title>dialtone demo: %s</title>\n", esc(target))
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">dialtone demo: calls under faults</text>`+"\n", chartLeft)
	fmt.Fprintf(&b, `<text x="%d" y="42" fill="#555">%s; %v buckets by the time calls returned; dashed lines: faults</text>`+"\n",
		chartLeft, esc(target), bucket)

	// Phases: alternate shading down the whole chart, names at the bottom.
	p0 := panels[0]
	bottom := panels[len(panels)-1].top + panelH
	for i, name := range phaseNames {
		x0, x1 := p0.x(time.Duration(i)*phaseLen), p0.x(time.Duration(i+1)*phaseLen)
		if i%2 == 1 {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.1f" fill="#f3f3f3"/>`+"\n",
				x0, chartTop, x1-x0, bottom-chartTop)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%s</text>`+"\n",
			(x0+x1)/2, bottom+36, esc(name))
	}

	for i, p := range panels {
		drawAxes(&b, p, i == len(panels)-1)
	}

	// Series.
	var rate, ok, p99, slowest []string
	for i, bk := range bs {
		t := time.Duration(i)*bucket + bucket/2
		x := p0.x(t)
		rate = append(rate, fmt.Sprintf("%.1f,%.1f", x, panels[0].y(float64(bk.calls)/bucket.Seconds())))
		if bk.calls == 0 {
			continue // no call returned: no rate or latency to show
		}
		ok = append(ok, fmt.Sprintf("%.1f,%.1f", x, panels[1].y(100*float64(bk.ok)/float64(bk.calls))))
		p99 = append(p99, fmt.Sprintf("%.1f,%.1f", x, panels[2].y(float64(bk.p99)/float64(time.Millisecond))))
		slowest = append(slowest, fmt.Sprintf("%.1f,%.1f", x, panels[2].y(float64(bk.max)/float64(time.Millisecond))))
	}
	polyline(&b, slowest, "#f4a6a6")
	polyline(&b, rate, "#1f77b4")
	polyline(&b, ok, "#2ca02c")
	polyline(&b, p99, "#d62728")

	// Fault events: a line through every panel and a label on top,
	// staggered so that close events stay readable.
	for i, e := range events {
		x := p0.x(e.at)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#9467bd" stroke-width="1.5" stroke-dasharray="5,3"/>`+"\n",
			x, chartTop-8, x, bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#9467bd" font-weight="bold">%s</text>`+"\n",
			x+3, chartTop-10-(i%2)*12, esc(e.label))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// drawAxes draws a panel's frame, title, y ticks and, for the last panel,
// the time axis.
func drawAxes(b *strings.Builder, p panel, timeAxis bool) {
	x0, x1 := float64(chartLeft), float64(chartW-chartRight)
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="none" stroke="#999"/>`+"\n",
		x0, p.top, x1-x0, panelH)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-weight="bold">%s <tspan font-weight="normal" fill="#555">(%s)</tspan></text>`+"\n",
		x0, p.top-6, esc(p.title), esc(p.units))
	var ticks []float64
	if p.log {
		for v := p.lo; v <= p.hi*1.0001; v *= 10 {
			ticks = append(ticks, v)
		}
	} else {
		for i := range 5 {
			ticks = append(ticks, p.lo+(p.hi-p.lo)*float64(i)/4)
		}
	}
	for _, v := range ticks {
		y := p.y(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", x0, y, x1, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", x0-6, y+4, fmtTick(v))
	}
	if !timeAxis {
		return
	}
	bottom := p.top + panelH
	step := time.Second
	for p.total/step > 15 {
		step *= 2
	}
	for t := time.Duration(0); t <= p.total; t += step {
		x := p.x(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`+"\n", x, bottom, x, bottom+4)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%gs</text>`+"\n", x, bottom+17, t.Seconds())
	}
}

func polyline(b *strings.Builder, points []string, color string) {
	if len(points) == 0 {
		return
	}
	fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.8" stroke-linejoin="round" points="%s"/>`+"\n",
		color, strings.Join(points, " "))
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func fmtTick(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%g", v)
	}
}

// esc escapes s for SVG text and attributes.
func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
