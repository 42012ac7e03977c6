package main

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dialtone-go/dialtone/balancer"
	"github.com/dialtone-go/dialtone/breaker"
	"github.com/dialtone-go/dialtone/rpcclient"
)

// ANSI sequences for the live view.
const (
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
	ansiGreen  = "\x1b[32m"
	ansiBold   = "\x1b[1m"
	ansiReset  = "\x1b[0m"
)

// refresh is how often the live view samples the client (and, on a
// terminal, redraws); logEvery is how many samples make a log line when
// stdout is not a terminal.
const (
	refresh  = 250 * time.Millisecond
	logEvery = 4
)

// view owns stdout while the demo runs. On a terminal it redraws a status
// frame in place and prints log lines above it; otherwise it prints log
// lines and one status line a second. Its methods are safe from any
// goroutine.
type view struct {
	w   io.Writer
	tty bool
	d   *demo

	mu       sync.Mutex
	start    time.Time // zero until the load starts
	rec      *recorder
	frame    []string          // the frame on screen (tty)
	hist     []snapshot        // the last second of counters
	nodes    map[string]string // discovered ID -> address, for discovery diffs
	addrName map[string]string // every address seen -> backend name
	lastLine time.Time         // when the last status line was printed (not a terminal)
	stopped  bool              // the live view is over: breaker events are no longer shown

	stopCh chan struct{}
	done   chan struct{}
}

// snapshot is the counters at one sample.
type snapshot struct {
	at         time.Time
	calls      int64
	fails      int64
	perBackend map[string]int64
}

func newView(w io.Writer, tty bool, d *demo) *view {
	return &view{w: w, tty: tty, d: d, nodes: map[string]string{}, addrName: map[string]string{}}
}

// logf prints one log line, stamped with the time since the load started.
func (v *view) logf(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.logLocked(fmt.Sprintf(format, args...))
}

func (v *view) logLocked(msg string) {
	stamp := "         "
	if !v.start.IsZero() {
		stamp = fmt.Sprintf("[%6.2fs]", time.Since(v.start).Seconds())
	}
	v.writeLocked(stamp + " " + msg + "\n")
}

// printf prints text as is (after the live view has stopped).
func (v *view) printf(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.writeLocked(fmt.Sprintf(format, args...))
}

// writeLocked writes text above the live frame: the frame is erased, the
// text written, and the frame drawn again below it.
func (v *view) writeLocked(text string) {
	if !v.tty || len(v.frame) == 0 {
		io.WriteString(v.w, text)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\x1b[%dA\x1b[J", len(v.frame))
	b.WriteString(text)
	for _, l := range v.frame {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	io.WriteString(v.w, b.String())
}

// drawLocked replaces the frame on screen with frame.
func (v *view) drawLocked(frame []string) {
	var b strings.Builder
	if len(v.frame) > 0 {
		fmt.Fprintf(&b, "\x1b[%dA\x1b[J", len(v.frame))
	}
	for _, l := range frame {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	v.frame = frame
	io.WriteString(v.w, b.String())
}

// breakerEvent logs a breaker's state change. The balancer calls it from its
// breaker Set's event goroutine.
func (v *view) breakerEvent(e breaker.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped {
		return
	}
	name := v.addrName[e.Addr]
	if name == "" {
		name = "?"
	}
	v.logLocked(fmt.Sprintf("breaker %s (%s): %s -> %s", name, e.Addr, e.From, e.To))
}

// captureDefaultLogger makes slog.Default() (and the log package) write
// warnings and errors as log lines of the view, until the returned function
// restores them. Loggers taken from slog.Default() meanwhile keep writing to
// the view.
func (v *view) captureDefaultLogger() (restore func()) {
	prev, prevOut, prevFlags := slog.Default(), log.Writer(), log.Flags()
	h := slog.NewTextHandler(logWriter{v}, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // the view stamps its own time
			}
			return a
		},
	})
	slog.SetDefault(slog.New(h))
	return func() {
		slog.SetDefault(prev)
		log.SetOutput(prevOut)
		log.SetFlags(prevFlags)
	}
}

// logWriter turns each line written to it into a log line of the view.
type logWriter struct{ v *view }

func (w logWriter) Write(p []byte) (int, error) {
	for line := range strings.Lines(string(p)) {
		w.v.logf("%s", strings.TrimRight(line, "\n"))
	}
	return len(p), nil
}

// noteAddr records which backend listens on addr, for breaker events that
// come before discovery shows the address.
func (v *view) noteAddr(addr, name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.addrName[addr] = name
}

// startLive starts sampling the client every refresh.
func (v *view) startLive(rec *recorder) {
	v.mu.Lock()
	v.start, v.rec = rec.start, rec
	v.hist = []snapshot{v.snapshotLocked(rec.start)}
	v.diffNodesLocked(v.d.client.Balancer().Status())
	v.mu.Unlock()
	v.stopCh, v.done = make(chan struct{}), make(chan struct{})
	go v.loop()
}

// stopLive stops sampling and waits for it; a terminal keeps the last frame.
func (v *view) stopLive() {
	close(v.stopCh)
	<-v.done
	v.mu.Lock()
	now := time.Now()
	v.update(now, now.Sub(v.lastLine) > refresh)
	v.frame = nil // leave it on screen; what follows prints below
	v.stopped = true
	v.mu.Unlock()
}

func (v *view) loop() {
	defer close(v.done)
	t := time.NewTicker(refresh)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-v.stopCh:
			return
		case now := <-t.C:
			v.mu.Lock()
			v.update(now, tick%logEvery == 0)
			v.mu.Unlock()
		}
	}
}

func (v *view) snapshotLocked(now time.Time) snapshot {
	s := snapshot{at: now, calls: v.rec.calls.Load(), fails: v.rec.fails.Load(), perBackend: map[string]int64{}}
	for name, c := range v.rec.perBackend {
		s.perBackend[name] = c.Load()
	}
	return s
}

// nodeRow is one line of the live view.
type nodeRow struct {
	name, addr, conn, brk string
	brkState              breaker.State
	ewma                  time.Duration
	inflight              int64
	rate                  float64
	flags                 []string
}

// update samples the client: it logs discovery changes, then redraws the
// frame (terminal) or, when logLine is set, prints a status line.
func (v *view) update(now time.Time, logLine bool) {
	cur := v.snapshotLocked(now)
	v.hist = append(v.hist, cur)
	for len(v.hist) > 2 && now.Sub(v.hist[1].at) >= time.Second {
		v.hist = v.hist[1:]
	}
	old := v.hist[0]
	dt := now.Sub(old.at).Seconds()
	rate := func(a, b int64) float64 {
		if dt <= 0 {
			return 0
		}
		return float64(a-b) / dt
	}

	status := v.d.client.Balancer().Status()
	conns := map[string]rpcclient.EndpointStatus{}
	for _, e := range v.d.client.Endpoints() {
		conns[e.Addr] = e
	}
	v.diffNodesLocked(status)

	var rows []nodeRow
	listed := map[string]bool{}
	for _, s := range status {
		name := nodeName(s.Endpoint.ID)
		listed[s.Endpoint.Addr] = true
		r := nodeRow{
			name: name, addr: s.Endpoint.Addr, conn: "idle", brk: s.Breaker.String(), brkState: s.Breaker,
			ewma: s.Latency, inflight: s.InFlight,
			rate: rate(cur.perBackend[name], old.perBackend[name]),
		}
		if c, ok := conns[s.Endpoint.Addr]; ok {
			r.conn = c.State.String()
		}
		if s.Ejected {
			r.flags = append(r.flags, "eject")
		}
		if s.Quarantined {
			r.flags = append(r.flags, "quar")
		}
		if !s.Ready {
			r.flags = append(r.flags, "out")
		}
		rows = append(rows, r)
	}
	for addr, c := range conns { // endpoints discovery dropped, still draining
		if listed[addr] || c.State != rpcclient.Ready && c.Pending == 0 {
			continue // idle or failed: nothing left to drain
		}
		rows = append(rows, nodeRow{name: v.addrName[addr], addr: addr, conn: c.State.String(), brk: "-",
			inflight: int64(c.Pending), flags: []string{"drain"}})
	}
	slices.SortFunc(rows, func(a, b nodeRow) int { return strings.Compare(a.name+a.addr, b.name+b.addr) })

	total := rate(cur.calls, old.calls)
	elapsed := now.Sub(v.start).Seconds()
	phase := v.d.phaseName()
	if v.tty {
		v.drawLocked(v.frameLines(rows, phase, elapsed, total, cur))
		return
	}
	if !logLine {
		return
	}
	v.lastLine = now
	var b strings.Builder
	fmt.Fprintf(&b, "[%6.2fs] %-7s %6.0f calls/s, %d failed |", elapsed, phase, total, cur.fails)
	for _, r := range rows {
		fmt.Fprintf(&b, " %s %s %s", r.name, r.conn, r.brk)
		if r.ewma > 0 {
			fmt.Fprintf(&b, " %s", fmtDur(r.ewma))
		}
		fmt.Fprintf(&b, " %.0f/s", r.rate)
		for _, f := range r.flags {
			fmt.Fprintf(&b, " [%s]", f)
		}
		b.WriteString(" |")
	}
	b.WriteByte('\n')
	io.WriteString(v.w, b.String())
}

// diffNodesLocked logs the nodes discovery added, removed or moved.
func (v *view) diffNodesLocked(status []balancer.NodeStatus) {
	seen := map[string]string{}
	for _, s := range status {
		id, addr := s.Endpoint.ID, s.Endpoint.Addr
		seen[id] = addr
		v.addrName[addr] = nodeName(id)
		switch old, ok := v.nodes[id]; {
		case !ok && len(v.nodes) > 0:
			v.logLocked(fmt.Sprintf("discovery: %s joined at %s", nodeName(id), addr))
		case ok && old != addr:
			v.logLocked(fmt.Sprintf("discovery: %s moved %s -> %s", nodeName(id), old, addr))
		}
	}
	for id, addr := range v.nodes {
		if _, ok := seen[id]; !ok {
			v.logLocked(fmt.Sprintf("discovery: %s (%s) left", nodeName(id), addr))
		}
	}
	if len(seen) > 0 || len(v.nodes) > 0 {
		v.nodes = seen
	}
}

// frameLines renders the terminal frame. Its lines stay within 80 columns,
// so that none wraps and the redraw can count them.
func (v *view) frameLines(rows []nodeRow, phase string, elapsed, total float64, cur snapshot) []string {
	idx := slices.Index(phaseNames, phase)
	fails := fmt.Sprintf("%d failed", cur.fails)
	if cur.fails > 0 {
		fails = ansiRed + fails + ansiReset
	}
	lines := []string{
		"",
		fmt.Sprintf("%sdialtone demo%s  %s", ansiBold, ansiReset, v.d.reg.Target()),
		fmt.Sprintf("phase %s%-7s%s (%d/%d)  %5.1fs/%.0fs  %6.0f calls/s  %d calls  %s",
			ansiBold, phase, ansiReset, idx+1, len(phaseNames), elapsed, v.d.opts.duration.Seconds(), total, cur.calls, fails),
		fmt.Sprintf("%-7s %-15s %-10s %-9s %7s %4s %5s  %s", "NODE", "ADDRESS", "CONN", "BREAKER", "EWMA", "INFL", "REQ/S", "FLAGS"),
	}
	for _, r := range rows {
		brk := fmt.Sprintf("%-9s", r.brk)
		switch {
		case r.brk == "-":
		case r.brkState == breaker.Open:
			brk = ansiRed + brk + ansiReset
		case r.brkState == breaker.HalfOpen:
			brk = ansiYellow + brk + ansiReset
		default:
			brk = ansiGreen + brk + ansiReset
		}
		conn := r.conn
		if conn == rpcclient.TransientFailure.String() {
			conn = "t-failure"
		}
		lines = append(lines, fmt.Sprintf("%-7s %-15s %-10s %s %7s %4d %5.0f  %s",
			r.name, r.addr, conn, brk, fmtDur(r.ewma), r.inflight, r.rate, strings.Join(r.flags, ",")))
	}
	lines = append(lines, "flags: eject = outlier-ejected, quar = quarantined after a failed dial,",
		"       out = not pickable now, drain = left discovery, calls finishing")
	return lines
}

// summary prints the table per phase and the failures kept.
func (v *view) summary(stats []phaseStat, rec *recorder, failures []failure) {
	var b strings.Builder
	b.WriteString("\nSummary (calls by the time they returned; every call idempotent, deadline ")
	fmt.Fprintf(&b, "%v, attempt timeout %v)\n\n", v.d.opts.callTimeout, v.d.opts.attemptTimeout)
	fmt.Fprintf(&b, "%-8s %7s %7s %9s %9s %9s %9s %9s\n", "phase", "from", "to", "calls", "failures", "p50", "p99", "max")
	for i, s := range stats {
		if i == len(stats)-1 {
			b.WriteString(strings.Repeat("-", 75) + "\n")
		}
		fmt.Fprintf(&b, "%-8s %6.1fs %6.1fs %9d %9d %9s %9s %9s\n",
			s.name, s.from.Seconds(), s.to.Seconds(), s.calls, s.fails, fmtDur(s.p50), fmtDur(s.p99), fmtDur(s.max))
	}
	b.WriteString("\nanswered by:")
	var total int64
	for _, c := range rec.perBackend {
		total += c.Load()
	}
	for _, bk := range v.d.backends {
		n := rec.perBackend[bk.name].Load()
		fmt.Fprintf(&b, " %s %d (%.0f%%)", bk.name, n, 100*float64(n)/float64(max(total, 1)))
	}
	b.WriteByte('\n')
	// What the client did to keep the calls succeeding (rpcclient.Stats).
	cs := v.d.client.Stats()
	fmt.Fprintf(&b, "client stats: %d retries (%d refused by the retry budget), %d attempts that sent nothing "+
		"(failed dials), %d waits for discovery, %d failed calls\n",
		cs.Retries, cs.BudgetExhausted, cs.Unsent, cs.RefreshWaits, cs.Failed)
	if c := rec.cancelled.Load(); c > 0 {
		fmt.Fprintf(&b, "%d calls cut short by the interrupt (not counted)\n", c)
	}
	if len(failures) > 0 {
		fmt.Fprintf(&b, "\nfailed calls (first %d of %d):\n", len(failures), rec.fails.Load())
		for _, f := range failures {
			fmt.Fprintf(&b, "  %6.2fs %-7s %v\n", f.at.Seconds(), f.phase, f.err)
		}
	}
	v.printf("%s", b.String())
}

// fmtDur formats a latency compactly: 850µs, 1.25ms, 312ms, 1.20s.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
