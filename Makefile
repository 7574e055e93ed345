# Kiln — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:/root/.cargo/bin:$(PATH)
VENV ?= .venv
PYTHON ?= python3

.PHONY: deps build release run run-vm test lint test-swift test-python test-contract bench fuzz clean

deps:
	@scripts/install-deps.sh test

build: deps
	swift build
	scripts/stamp-source.sh .build/debug

release: deps
	swift build -c release
	scripts/stamp-source.sh .build/release

## Build in release mode and start a local farm (state under .state/).
run: release
	scripts/run-local.sh

## The same farm building every job in a fresh VM (KVM where it works, else TCG, said at start): docs/vm-workers.md.
run-vm: release
	cluster/vm-farm.sh

## Install what the tests need, then run every test (Swift unit + black-box, then the Python verifier).
test: deps lint $(VENV)/.installed test-swift test-python test-contract

## Formatting and lint rules (.swift-format); `swift format format -i -r Sources Tests bench fuzz` fixes most findings.
lint:
	swift format lint --strict -r Sources Tests bench fuzz Package.swift
	KILN_BENCH=1 python3 scripts/check-package-deps.py
	python3 scripts/check-try.py

## Two runs (#27): every suite but the VM one, then the VM suite alone. The VM suite builds images and
## boots emulated guests that take both cores for minutes; timing-sensitive suites never run beside it.
test-swift:
	swift build --build-tests
	scripts/stamp-source.sh .build/debug
	SWIFTNIO_STRICT=1 scripts/with-nix-daemon.sh swift test --skip-build --skip WorkerVMTests
	SWIFTNIO_STRICT=1 scripts/with-nix-daemon.sh swift test --skip-build --filter WorkerVMTests

test-python: $(VENV)/.installed
	KILN_BIN_DIR=$(CURDIR)/.build/debug $(VENV)/bin/python -m pytest -q Tests/python

## The HTTP API against docs/openapi.yaml: schemathesis on a real gateway, broker and pool.
test-contract: $(VENV)/.installed
	scripts/with-nix-daemon.sh scripts/contract-test.sh

$(VENV)/.installed: Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "securesystemslib[crypto]==1.6.0" in-toto-attestation==0.9.3 pytest schemathesis==4.32.5 selenium==4.51.0
	touch $@

## Fuzz the bus frame decoder and the gateway's bus-message handling with libFuzzer (FUZZ_SECONDS each, default 60).
fuzz:
	scripts/fuzz.sh

## Benchmarks (release build), one JSON line per case, peers side by side.
## Every benchmark, then one table of Kiln against its peer in the same run (bench/summary.py). Each
## case's JSON lines also go to $(BENCH_RESULTS); a case that fails fails the run.
BENCH_RESULTS ?= .build/bench-results.jsonl
BENCH_CASE = bash -o pipefail -c '"$$0" "$$@" | tee -a $(BENCH_RESULTS)'
bench: export KILN_BENCH = 1
bench:
	@scripts/install-deps.sh bench
	swift build -c release
	mkdir -p $(dir $(BENCH_RESULTS)) && : > $(BENCH_RESULTS)
	$(BENCH_CASE) bash bench/bus.sh
	$(BENCH_CASE) bash bench/attest.sh
	$(BENCH_CASE) scripts/with-nix-daemon.sh bash bench/worker.sh
	$(BENCH_CASE) bash bench/vm.sh
	$(BENCH_CASE) scripts/with-nix-daemon.sh bash bench/fetch.sh
	$(BENCH_CASE) bash bench/depcache.sh
	$(BENCH_CASE) scripts/with-nix-daemon.sh bash bench/gateway.sh
	$(BENCH_CASE) scripts/with-nix-daemon.sh bash bench/farm.sh
	$(BENCH_CASE) bash bench/scale.sh
	$(BENCH_CASE) scripts/with-nix-daemon.sh bash bench/hostile.sh
	python3 bench/summary.py $(BENCH_RESULTS)

clean:
	rm -rf .build $(VENV)
