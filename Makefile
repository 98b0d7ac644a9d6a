# jetqa — make run: install what is missing, build, run the demo VM test.
#         make test: the whole test suite.

GO      ?= go
DATA    ?= data
TESTOS  ?= deploy/testos/out
# Screenshots of the web UI's tests (stages/api/browser), which CI keeps.
ARTIFACTS ?= artifacts
# Two cores: keep the race-enabled test build and the VMs from starving.
TESTFLAGS ?= -race -p 2 -timeout 45m

export CGO_ENABLED = 1
export JETQA_TESTOS = $(abspath $(TESTOS))
export JETQA_ARTIFACTS = $(abspath $(ARTIFACTS))

.PHONY: all deps test-deps build testos run test vet bench fuzz soak clean

all: build

deps:
	@bash deploy/install-deps.sh

build: deps
	$(GO) build -o bin/jetqa ./cmd/jetqa

testos: deps
	@bash deploy/testos/build.sh $(TESTOS)
	@bash deploy/testos/make-repo.sh $(TESTOS)/testos-tests

run: build testos
	@bash deploy/demo.sh bin/jetqa $(DATA) $(TESTOS)

STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
# The S3 server the tests store results in (Apache-2.0).
VERSITYGW := $(shell $(GO) env GOPATH)/bin/versitygw

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet: $(STATICCHECK)
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test-deps:
	@bash deploy/install-deps.sh test
	@bash deploy/check-os-autoinst.sh
	@test -x $(VERSITYGW) || CGO_ENABLED=0 $(GO) install github.com/versity/versitygw/cmd/versitygw@v1.8.0

test: test-deps testos vet
	@bash deploy/check-units.sh
	$(GO) test $(TESTFLAGS) ./...
	JETQA_CLUSTER_TEST=1 $(GO) test -count=1 -timeout 20m -run TestClusterLosesNodesAndWorkersAtRandomPoints ./cmd/jetqa
	JETQA_LOAD_TEST=1 $(GO) test -count=1 -timeout 40m -run 'TestFleetUnderLoad|TestFaultsAtRandomPoints' ./cmd/jetqa
	$(GO) test -tags matprofile -count=1 -run TestNoMatLeaks ./stages/match/needle/
	FUZZTIME=$(FUZZTIME) bash deploy/fuzz.sh

# Every fuzz target, for FUZZTIME each (make test: 10 s; make soak: 5 min).
FUZZTIME ?= 10s
fuzz:
	FUZZTIME=$(FUZZTIME) bash deploy/fuzz.sh

# The long mode of the reliability suite: five times the load of make
# test, 15 minutes of kills at random points (90 s in make test), and
# every fuzz target for 5 minutes.
soak: test-deps testos
	JETQA_LOAD_TEST=1 JETQA_LOAD_JOBS=50000 JETQA_CHAOS_TIME=15m $(GO) test -count=1 -timeout 120m -v -run 'TestFleetUnderLoad|TestFaultsAtRandomPoints' ./cmd/jetqa
	FUZZTIME=5m bash deploy/fuzz.sh

# test-deps: the needle benchmark compares with os-autoinst.
bench: test-deps testos
	$(GO) test -run '^$$' -bench . -skip SyncPolicy -benchtime 20000x ./streams
	$(GO) test -run '^$$' -bench SyncPolicy -benchtime 3000x ./streams
	$(GO) test -run '^$$' -bench . -skip Fleet -benchtime 10000x ./stages/schedule
	JETQA_FLEET_WORKERS=1000 $(GO) test -run '^$$' -bench Fleet -benchtime 20000x -timeout 60m ./stages/schedule
	$(GO) test -run '^$$' -bench . -benchtime 1x ./stages/api
	$(GO) test -run '^$$' -bench Upload -benchtime 1x ./stages/upload
	$(GO) test -run '^$$' -bench . -skip AgainstTinycv -benchtime 20x ./stages/match/needle
	$(GO) test -run '^$$' -bench AgainstTinycv -benchtime 1x ./stages/match/needle
	$(GO) test -run '^$$' -bench RequestLatency -benchtime 200x ./stages/match
	$(GO) test -run '^$$' -bench MatcherProcesses -benchtime 1x ./cmd/jetqa
	$(GO) test -run '^$$' -bench DemoAgainstIsotovideo -benchtime 3x -timeout 30m ./cmd/jetqa
	$(GO) test -run '^$$' -bench PerlJobAgainstStarlarkJob -benchtime 3x -timeout 30m ./cmd/jetqa
	$(GO) test -run '^$$' -bench . -benchtime 1x ./stages/fetch/cache
	$(GO) test -run '^$$' -bench . -benchtime 10x ./stages/fetch/gitmirror

clean:
	rm -rf bin $(TESTOS) $(ARTIFACTS)
