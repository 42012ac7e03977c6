#!/usr/bin/env bash
# The test command: provisions what the tests need (a Consul agent built from
# its Go module, cached outside the checkout), checks the package layering,
# and runs every test with the race detector. Real Consul and etcd tests are
# never skipped: a missing server fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local

# -race needs cgo, which Go turns off when it finds no C compiler.
if [ "$(go env CGO_ENABLED)" != 1 ]; then
  echo "go test -race needs cgo: install a C compiler (gcc or clang; Debian: apt-get install gcc) or set CGO_ENABLED=1 with one on PATH"
  exit 1
fi

DIALTONE_CONSUL_BIN=$(./scripts/consul.sh)
export DIALTONE_CONSUL_BIN
echo "consul: $DIALTONE_CONSUL_BIN ($("$DIALTONE_CONSUL_BIN" version | head -1))"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== layering: discovery and breaker import neither balancer nor rpcclient"
mod=$(go list -m)
bad=$(go list -deps -f '{{.ImportPath}}' ./discovery/... ./breaker/... 2>/dev/null | grep -E "^$mod/(balancer|rpcclient)(/|$)" || true)
if [ -n "$bad" ]; then echo "layering violated: $bad"; exit 1; fi
bad=$(go list -deps -f '{{.ImportPath}}' ./breaker/... 2>/dev/null | grep -E "^$mod/discovery(/|$)" || true)
if [ -n "$bad" ]; then echo "breaker must not import discovery: $bad"; exit 1; fi

echo "== balancer.(*Balancer).Pick inlines (the Result is then built in the caller's frame, not returned through memory)"
# The compiler's report is read whole first: grep -q would stop reading at
# its first match, and pipefail would then take go build's SIGPIPE for a failure.
inl=$(go build -gcflags=-m ./balancer 2>&1)
if ! grep -q 'can inline (\*Balancer).Pick$' <<<"$inl"; then
  echo "balancer.(*Balancer).Pick no longer inlines: keep it a thin wrapper over pick"; exit 1
fi

echo "== go test -race"
go test -race -count=1 -timeout 15m ./... "$@"

echo "== go test ./balancer without -race (its per-P round-robin counters count without atomics outside race builds: pcounter.go)"
go test -count=1 ./balancer
echo "== the reconnect storm without -race (FAULTS.md row 25: its figures are asserted only when this process keeps time, which -race on 2 cores does not)"
storm=$(go test -count=1 -run '^TestReconnectStorm$' -v ./rpcclient 2>&1) && rc=0 || rc=$?
if [ "$rc" -ne 0 ]; then echo "$storm"; exit "$rc"; fi
grep -E '^(--- |ok)|storm_test' <<<"$storm" || true
echo "== docker-compose.yml (loaded with compose-go; commands and variables checked against the programs)"
(cd internal/tools/compose && go test -count=1 ./...)

echo "== benchmarks/ (its own module, with the peers): vet, benchtable's tests, one pass of every peer comparison (their setups check each picker)"
(
  cd benchmarks
  go vet ./...
  go test -count=1 ./cmd/...
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  if ! go test -count=1 -run='^$' -bench='RoundRobin|LeastRequest|P2C|Weighted|Breaker|Rebuild|Floor' -benchtime=1x . >"$out" 2>&1; then
    cat "$out"; exit 1
  fi
  echo "ok  	benchmarks: $(grep -c '^Benchmark' "$out") benchmarks ran once each"
)
