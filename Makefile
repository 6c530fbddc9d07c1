# meshd — see README.md. Targets per ../shared/CONTRACTS.md.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
LDFLAGS := -s -w -X github.com/meshd/meshd/internal/version.Version=$(VERSION)
STATICCHECK := $(shell go env GOPATH)/bin/staticcheck
# Integration tests share 2 cores with ZooKeeper JVMs and meshd processes;
# running test binaries one package at a time keeps their timing honest.
TEST_FLAGS ?= -count=1 -p 1 -timeout 20m

.PHONY: all build test test-unit lint demo demo-down faults bench bench-quick bench-restart bench-control-plane clean

all: build

# BINARY_BUDGET is the most either binary may weigh. A running meshd keeps
# the pages of its binary that it touches resident, and they were a third
# of its memory at 10 000 hosts; a stray interface conversion of the EC2
# client once made meshd 50 MB instead of 20 (internal/ec2/client.go).
BINARY_BUDGET := 26214400

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/meshd ./cmd/meshd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/meshctl ./cmd/meshctl
	@for b in bin/meshd bin/meshctl; do s=$$(stat -c %s $$b); \
		if [ $$s -gt $(BINARY_BUDGET) ]; then \
			echo "$$b is $$s bytes, over its budget of $(BINARY_BUDGET) (Makefile BINARY_BUDGET; see internal/ec2/client.go)" >&2; exit 1; \
		fi; done

# Unit and integration tests. As root (the README's way) it first installs
# what the tests need, as make demo does, and then requires the integration
# tests: a skip fails the run. Without root they skip, each saying SKIP-ROOT,
# and scripts/gotest.sh says how many did. Any failed test fails the target.
test: build
	@if [ "$$(id -u)" = 0 ]; then scripts/install-deps.sh; fi
	MESHD_BIN=$(CURDIR)/bin MESHD_REQUIRE_INTEGRATION=$${MESHD_REQUIRE_INTEGRATION:-$$([ "$$(id -u)" = 0 ] && echo 1 || echo 0)} \
		scripts/gotest.sh $(TEST_FLAGS) ./...
	$(GO) test -run='^$$' -fuzz=FuzzDecodeHost -fuzztime=100000x ./registry

# Unit tests only: quick, no root needed.
test-unit:
	$(GO) test -count=1 -short ./...

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

# The namespace testbed with ZooKeeper and three meshd hosts; needs root.
demo: build
	@[ "$$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces)"; exit 1; }
	scripts/install-deps.sh
	$(GO) run ./internal/testbed/demo

demo-down:
	$(GO) run ./internal/testbed/demo down

# The fault and security suite (all of it also runs in make test): registry
# outages, leader loss, expiry, mass removal, poison input, intruders.
faults: build
	MESHD_FAULT_OUTAGE=60s MESHD_BIN=$(CURDIR)/bin scripts/gotest.sh -count=1 -p 1 -timeout 20m \
		-run 'TestRegistryOutage|TestBreaker|TestPoison|TestNoPrivateKey|TestFirewall|TestSessionExpiry|TestLeaderKilled|TestOutage|TestDigestACL|TestTLS' \
		./internal/e2e ./registry

# The benchmark suite (root: the namespace testbed). Rewrites bench/RESULTS.md,
# bench/results.json and bench/throughput.png; about 20 minutes. Its load
# generators and servers (iperf3, memcached, memcslap, sockperf) come from
# Debian through scripts/install-deps.sh, like the tests' tools.
# Nebula, the peer comparison in make bench: built from its module at this
# tag into bench/out (outside the source tree; not a dependency of meshd).
NEBULA_VERSION := v1.9.7

bench: build
	scripts/install-deps.sh
	@mkdir -p bench/out
	$(GO) run ./bench/zkwatch -n 100,1000,5000 -watchers 10 -changes 150 -json bench/out/zkwatch.json
	$(GO) build -o bench/out/meshd-bench ./bench/cmd/meshd-bench
	GOBIN=$(CURDIR)/bench/out/nebula $(GO) install github.com/slackhq/nebula/cmd/nebula@$(NEBULA_VERSION) github.com/slackhq/nebula/cmd/nebula-cert@$(NEBULA_VERSION)
	bench/out/meshd-bench -bin bin -nebula bench/out/nebula -nebula-version $(NEBULA_VERSION) -json bench/out/dataplane.json
	$(GO) run ./bench/cmd/report -command "make bench"

# The restart gap alone (about a minute): five restarts of a receiving
# meshd, each mid-flow; its figures replace the restart section of
# bench/RESULTS.md and bench/results.json, the rest keeps its make bench run.
bench-restart: build
	@mkdir -p bench/out
	$(GO) build -o bench/out/meshd-bench ./bench/cmd/meshd-bench
	bench/out/meshd-bench -only restart -bin bin -json bench/out/restart.json
	$(GO) run ./bench/cmd/report -dataplane bench/out/restart.json -merge bench/results.json -command "make bench-restart"

# The control plane alone (a few minutes): zkwatch's figures replace the
# control-plane section of bench/RESULTS.md and bench/results.json, the rest
# keeps its make bench run.
bench-control-plane: build
	@mkdir -p bench/out
	$(GO) run ./bench/zkwatch -n 100,1000,5000 -watchers 10 -changes 150 -json bench/out/zkwatch.json
	$(GO) run ./bench/cmd/report -dataplane '' -zkwatch bench/out/zkwatch.json -merge bench/results.json -control-plane -command "make bench-control-plane"

# A smoke test of the suite (CI): short runs, figures to bench/out only.
bench-quick: build
	@mkdir -p bench/out
	$(GO) run ./bench/zkwatch -n 100 -watchers 3 -changes 12 -json bench/out/zkwatch.json
	$(GO) build -o bench/out/meshd-bench ./bench/cmd/meshd-bench
	bench/out/meshd-bench -quick -bin bin -json bench/out/dataplane.json
	$(GO) run ./bench/cmd/report -command "make bench-quick" -out bench/out

clean:
	rm -rf bin dist
-include packaging/package.mk
