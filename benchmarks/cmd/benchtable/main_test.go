package main

import (
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkRoundRobin/peer=grpc/n=3/serial-2         	100	 10.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRoundRobin/peer=grpc/n=3/serial-2         	100	 12.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRoundRobin/peer=grpc/n=3/serial-2         	100	 30.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRoundRobin/peer=grpc/n=1000/serial-2      	100	 24.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRoundRobin/peer=dialtone/n=3/serial-2     	100	  6.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRoundRobin/peer=dialtone-fast/n=3/serial-2	100	  3.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRebuild/peer=kitex/n=1000-2               	100	 5000 ns/op	 5100 cpu-ns/op	 9000 B/op	 5 allocs/op
BenchmarkRebuild/peer=dialtone/n=1000-2            	100	 9000 ns/op	 1530 cpu-ns/op	 9000 B/op	 5 allocs/op
BenchmarkFloor/peer=atomic/parallel-2              	100	 20.0 ns/op	 0 B/op	 0 allocs/op
PASS
`

func TestRun(t *testing.T) {
	var out strings.Builder
	if err := run(strings.NewReader(sample), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		"RoundRobin n=3 serial",
		"dialtone/peer", "dialtone-fast/peer",
		"0.50x", // dialtone 6 / grpc median 12
		"0.25x", // dialtone-fast 3 / grpc 12
		"2.00x", // grpc n=1000 24 vs n=3 12
		"Rebuild n=1000",
		"cpu-ns/op",
		"0.30x", // dialtone 1530 / kitex 5100: by CPU time, not ns/op
		"Floor parallel",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(got, "1.80x") { // dialtone 9000 / kitex 5000 ns/op
		t.Error("Rebuild compared on ns/op although every peer reports cpu-ns/op")
	}
}

func TestParseName(t *testing.T) {
	k, peer, ok := parseName("BenchmarkP2C/peer=grpc-least_request/n=100/parallel-2")
	if !ok || k != (key{"P2C", 100, "parallel"}) || peer != "grpc-least_request" {
		t.Fatalf("got %+v %q %v", k, peer, ok)
	}
}

// With as many runs on both sides, a ratio is the median of the rounds'
// ratios: here 1.20, 0.40 and 1.00 (median 1.00x), where the ratio of the
// medians, 12/20, would say 0.60x.
func TestRatioPairsRounds(t *testing.T) {
	const rounds = `BenchmarkP2C/peer=grpc/n=3/serial-2     	100	 10.0 ns/op
BenchmarkP2C/peer=dialtone/n=3/serial-2 	100	 12.0 ns/op
BenchmarkP2C/peer=grpc/n=3/serial-2     	100	 30.0 ns/op
BenchmarkP2C/peer=dialtone/n=3/serial-2 	100	 12.0 ns/op
BenchmarkP2C/peer=grpc/n=3/serial-2     	100	 20.0 ns/op
BenchmarkP2C/peer=dialtone/n=3/serial-2 	100	 20.0 ns/op
`
	var out strings.Builder
	if err := run(strings.NewReader(rounds), &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "1.00x") || strings.Contains(got, "0.60x") {
		t.Fatalf("want the median of the rounds' ratios (1.00x), not the ratio of the medians (0.60x):\n%s", got)
	}
}

// The median of an even count is the mean of the middle two, and with
// unequal run counts a ratio is the ratio of the medians: dialtone's
// median (10+14)/2 = 12 over grpc's 30 is 0.40x, and the n=1000 row's
// scale is its median 45 over n=3's 30, 1.50x.
func TestMedianEvenAndUnpairedRatio(t *testing.T) {
	const in = `BenchmarkP2C/peer=grpc/n=3/serial-2       	100	 20.0 ns/op	 1 allocs/op
BenchmarkP2C/peer=grpc/n=3/serial-2       	100	 30.0 ns/op	 3 allocs/op
BenchmarkP2C/peer=grpc/n=3/serial-2       	100	 90.0 ns/op	 3 allocs/op
BenchmarkP2C/peer=dialtone/n=3/serial-2   	100	 14.0 ns/op	 0 allocs/op
BenchmarkP2C/peer=dialtone/n=3/serial-2   	100	 10.0 ns/op	 0 allocs/op
BenchmarkP2C/peer=grpc/n=1000/serial-2    	100	 40.0 ns/op	 3 allocs/op
BenchmarkP2C/peer=grpc/n=1000/serial-2    	100	 50.0 ns/op	 3 allocs/op
`
	var out strings.Builder
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"dialtone  12.00",    // median of 10 and 14
		"grpc      30.00  3", // median ns and allocs of three runs
		"0.40x",              // 12 / 30, not the median of paired ratios
		"grpc  45.00  3          -     1.50x",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
