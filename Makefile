# Flotilla: `make run` starts a demo fleet, `make test` is what CI runs.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin
TOOLS := $(CURDIR)/.bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION) -X github.com/flotilla-proxy/flotilla/agent.Version=$(VERSION)

# Pinned code generators and linters, installed into .bin with `go install`.
BUF_VERSION          := v1.73.0
PROTOC_GEN_GO_GRPC   := v1.5.1
# fuzz-smoke (part of make test) runs each target for a number of executions, not a
# duration: Go 1.26's fuzz coordinator can fail a duration run at its deadline with a bare
# "context deadline exceeded" on a loaded machine (golang/go#75804, fixed in Go 1.27); a
# count has no deadline to race. make fuzz runs each target for FUZZTIME instead.
FUZZTIME ?= 10000x

CMDS := controlplane/cmd/flotilla-controlplane agent/cmd/flotilla-agent cli/cmd/flotctl deploy/demo/echo-backend

.PHONY: all build run test test-deps test-go test-e2e check-proto lint vet fmt-check proto tools bench fuzz fuzz-smoke clean

all: build

## build: the three binaries (and the demo backend) into bin/, static.
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./,$(CMDS))

## run: control plane (embedded store), one agent, two demo backends, quickstart applied.
run: build
	@deploy/demo/run.sh

## test: everything CI checks: generated code fresh, buf lint, vet, gofmt, unit tests
## with -race, short fuzzing, and the end-to-end tests with the real binaries.
test: test-deps check-proto fmt-check vet test-go fuzz-smoke

## test-deps: the real peers e2e tests run (nginx, openssl), from Debian, when root.
test-deps:
	@deploy/ci/test-deps.sh

test-go:
	$(GO) test -race -count=1 -timeout 20m ./...

test-e2e:
	$(GO) test -race -count=1 -timeout 15m -v ./e2e/...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## tools: buf and the protoc plugins, pinned, into .bin/.
tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go: go.mod
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC)

## proto: regenerate Go code from proto/ (committed).
proto: tools
	PATH=$(TOOLS):$$PATH buf lint
	PATH=$(TOOLS):$$PATH buf generate

## check-proto: fail when buf lint complains or the committed generated code is stale.
check-proto: tools
	PATH=$(TOOLS):$$PATH buf lint
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	PATH=$(TOOLS):$$PATH buf generate --template buf.gen.yaml -o $$tmp; \
	stale=0; for f in $$(cd $$tmp && find . -name '*.go'); do \
	  if ! cmp -s $$tmp/$$f $$f; then echo "stale generated file: $$f (run make proto)"; stale=1; fi; done; \
	for f in $$(find proto -name '*.pb.go'); do \
	  [ -f $$tmp/$$f ] || { echo "generated file without a proto: $$f"; stale=1; }; done; \
	exit $$stale

## fuzz-smoke: every fuzz target for $(FUZZTIME) (make fuzz FUZZTIME=5m for longer).
fuzz-smoke:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$t for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x $$pkg; \
	  done; done

fuzz:
	$(MAKE) fuzz-smoke FUZZTIME=2m

## bench: Go benchmarks for compiling/snapshotting 1,000 listeners and for agent applies.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./controlplane/compiler ./controlplane/xds ./agent/runtime ./agent/proxy

clean:
	rm -rf $(BIN) $(TOOLS) .run

## bench-l4: the agent against nginx stream and HAProxy mode tcp on loopback, in one run
## (installs nginx, HAProxy, iperf3 and wrk from Debian when missing); writes BENCHMARKS.md.
.PHONY: bench-l4
bench-l4: build
	bash e2e/bench/bench-l4.sh

## bench-http: the agent against nginx http{} (upstream keep-alive) and HAProxy mode http on
## loopback, wrk keep-alive c=100 against a Go backend (installs nginx, HAProxy, wrk and curl
## from Debian when missing); writes its section of BENCHMARKS.md.
.PHONY: bench-http
bench-http: build
	bash e2e/bench/bench-http.sh

## bench-fleet: the control plane with 1,000, 5,000 and 10,000 simulated agents (real ADS
## streams over loopback from e2e/bench/fleetload): memory per idle agent, convergence of a
## push, a reconnect storm; writes its section of BENCHMARKS.md.
.PHONY: bench-fleet
bench-fleet: build
	bash e2e/bench/bench-fleet.sh
