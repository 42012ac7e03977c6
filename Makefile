# dialtone: the two commands a newcomer needs are `make demo` and `make test`.
.PHONY: demo test bench consul fuzz

# One command, no external services: embedded etcd, echo backends, a client
# under load, scripted faults, a live view, a summary and an SVG chart.
demo:
	GOTOOLCHAIN=local go run ./examples/demo

# Builds the Consul agent once (cached in ~/.cache/dialtone), then runs every
# test with -race against real Consul and etcd.
test:
	./scripts/test.sh

# Discovery propagation latency against real registries, printed as tables.
bench:
	GOTOOLCHAIN=local DIALTONE_CONSUL_BIN=$$(./scripts/consul.sh) go test -run='^$$' -bench=Propagation -benchtime=100x ./discovery/...

consul:
	./scripts/consul.sh

# Fuzzes target parsing, etcd values and Consul answers, 30 s each (make test runs their seeds).
fuzz:
	GOTOOLCHAIN=local go test -run='^$$' -fuzz=FuzzParseTarget -fuzztime=30s ./discovery/
	GOTOOLCHAIN=local go test -run='^$$' -fuzz=FuzzParseValue -fuzztime=30s ./discovery/etcd/
	GOTOOLCHAIN=local go test -run='^$$' -fuzz=FuzzApply -fuzztime=30s ./discovery/consul/
