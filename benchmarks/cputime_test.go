package benchmarks

import (
	"syscall"
	"testing"
	"time"
)

// cpuMeter reports, as cpu-ns/op, the CPU time the whole process spent per
// op (user and system, from getrusage): the cost of an op that runs on other
// goroutines than the benchmark's, which ns/op (wall time) cannot separate
// from the time those goroutines take to wake up. It includes the garbage
// collector's work, for every peer alike.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
}

// startCPU resets b's timer and starts measuring.
func startCPU(b *testing.B) *cpuMeter {
	b.ResetTimer()
	return &cpuMeter{b: b, start: processCPU(b)}
}

// stop stops b's timer and reports cpu-ns/op.
func (m *cpuMeter) stop() {
	m.b.StopTimer()
	used := processCPU(m.b) - m.start
	m.b.ReportMetric(float64(used.Nanoseconds())/float64(m.b.N), "cpu-ns/op")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
