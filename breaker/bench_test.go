package breaker

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// benchNodes is the number of per-node breakers the parallel benchmarks
// spread over, as a balancer would.
const benchNodes = 8

func benchAddrs() []string {
	addrs := make([]string, benchNodes)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.0.%d:80", i)
	}
	return addrs
}

// BenchmarkAllowDone measures this package's success path in gobreaker's
// two-step form: Allow + done(nil) on a closed breaker.
func BenchmarkAllowDone(b *testing.B) {
	benchSuccess(b, func(br *Breaker) error {
		done, err := br.Allow()
		if err == nil {
			done(nil)
		}
		return err
	})
}

// BenchmarkBeginEnd measures the success path the balancer uses: Begin +
// End(nil) on a closed breaker, which takes no lock and allocates nothing.
func BenchmarkBeginEnd(b *testing.B) {
	benchSuccess(b, func(br *Breaker) error {
		t, err := br.Begin()
		if err == nil {
			br.End(t, nil)
		}
		return err
	})
}

// benchSuccess runs one successful request through a closed breaker per
// iteration: serially on one breaker, and in parallel over benchNodes.
func benchSuccess(b *testing.B, once func(*Breaker) error) {
	s := NewSet(Config{})
	defer s.Close()
	var bs []*Breaker
	for _, a := range benchAddrs() {
		bs = append(bs, s.Get(a))
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		br := bs[0]
		for b.Loop() {
			if err := once(br); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var next atomic.Uint32
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(1)
			for pb.Next() {
				i++
				if err := once(bs[i%benchNodes]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkGobreakerTwoStep is the peer: bare gobreaker v2 two-step breakers,
// once with gobreaker's default settings and once with the settings this
// package gives it (10 s rolling window in 1 s buckets, our hooks).
func BenchmarkGobreakerTwoStep(b *testing.B) {
	cfg := Config{}.withDefaults()
	for _, tc := range []struct {
		name     string
		settings func(name string) gobreaker.Settings
	}{
		{"default", func(name string) gobreaker.Settings { return gobreaker.Settings{Name: name} }},
		{"same-settings", func(name string) gobreaker.Settings {
			return cfg.settings(name, func(string, gobreaker.State, gobreaker.State) {})
		}},
	} {
		var cbs []*gobreaker.TwoStepCircuitBreaker[struct{}]
		for _, a := range benchAddrs() {
			cbs = append(cbs, gobreaker.NewTwoStepCircuitBreaker[struct{}](tc.settings(a)))
		}
		b.Run(tc.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			cb := cbs[0]
			for b.Loop() {
				done, err := cb.Allow()
				if err != nil {
					b.Fatal(err)
				}
				done(nil)
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			var next atomic.Uint32
			b.RunParallel(func(pb *testing.PB) {
				i := next.Add(1)
				for pb.Next() {
					i++
					done, err := cbs[i%benchNodes].Allow()
					if err != nil {
						b.Error(err)
						return
					}
					done(nil)
				}
			})
		})
	}
}

// BenchmarkAllowOpen measures the refusal of an open breaker (fail fast).
func BenchmarkAllowOpen(b *testing.B) {
	s := NewSet(Config{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	defer s.Close()
	br := s.Get("a")
	done, _ := br.Allow()
	done(errTransport)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := br.Allow(); err != ErrOpen {
			b.Fatal(err)
		}
	}
}
