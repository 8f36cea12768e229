# The commands a person types. `make run` shows the whole system converge; `make test` is what CI runs.
CARGO ?= cargo
JOURNAL ?= sqlite://$(CURDIR)/target/bench-journal.db

.PHONY: build test lint fmt run bench bench-fleet e2e crds histories help

## build: compile the workspace
build:
	$(CARGO) build --workspace

## test: every test, against PostgreSQL (found or started by scripts/with-postgres.sh), SQLite and
##       real Kubernetes 1.37 and 1.34 control planes with KWOK nodes (built once from Go modules
##       and started by scripts/with-testcluster.sh), and the previous release's binary for the
##       upgrade-in-place test (built once from its commit by scripts/previous-release.sh)
test:
	@scripts/previous-release.sh >/dev/null
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  scripts/with-postgres.sh scripts/with-testcluster.sh scripts/with-browser.sh $(CARGO) nextest run --workspace --no-fail-fast && \
	  $(CARGO) test --workspace --doc; \
	else \
	  echo "cargo-nextest not installed: using cargo test"; \
	  scripts/with-postgres.sh scripts/with-testcluster.sh scripts/with-browser.sh $(CARGO) test --workspace --no-fail-fast; \
	fi

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## run: the sandbox: controllers, engine and simulated cloud on an in-memory API, applying examples/,
##      with the web console on loopback (it prints the URL; Ctrl-C stops); built unoptimised and
##      without the AWS and GCP providers, which the sandbox does not use (profile `sandbox`)
CONSOLE_ADDR ?= 127.0.0.1:8090
run:
	$(CARGO) run --profile sandbox -p cellplane --no-default-features -- sandbox examples --console-addr $(CONSOLE_ADDR)

## bench: the engine benchmarks of the README, against PostgreSQL and SQLite
bench:
	$(CARGO) build --release -p cellplane
	scripts/with-postgres.sh sh -c '\
	  set -e; B=target/release/cellplane; \
	  $$B bench engine --journal "$$DATABASE_URL" --journal-schema bench --workflows 1000 --steps 10 --concurrency 32; \
	  $$B bench engine --journal "$$DATABASE_URL" --journal-schema bench --workflows 200 --steps 10 --concurrency 1; \
	  $$B bench recovery --journal "$$DATABASE_URL" --journal-schema bench --workflows 10000; \
	  $$B bench sleepers --journal "$$DATABASE_URL" --journal-schema bench --workflows 10000; \
	  rm -f target/bench-journal.db*; \
	  $$B bench engine --journal "$(JOURNAL)" --workflows 1000 --steps 10 --concurrency 32'

## bench-fleet: 200 cells and 10,000 namespaces on the in-memory API until all are Ready
bench-fleet:
	$(CARGO) run --release --quiet -p cellplane -- bench fleet --cells 200 --namespaces 10000

## e2e: the end-to-end scenarios against the cluster named by E2E_KUBECONFIG
e2e:
	$(CARGO) test -p cellplane-e2e -- --nocapture

## histories: record this release's workflow histories from real test runs into
##             operator/tests/histories/VERSION (the replay suite of `make test` replays them)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
HISTORY_TESTS := --test rings --test bake --test provisioning --test fleet --test rollout
histories:
	rm -rf operator/tests/histories/$(VERSION)
	CELLPLANE_RECORD_HISTORIES=$(CURDIR)/operator/tests/histories/$(VERSION) scripts/with-postgres.sh \
	  scripts/with-testcluster.sh scripts/with-browser.sh $(CARGO) test -p cellplane $(HISTORY_TESTS)
	@ls operator/tests/histories/$(VERSION) | sed 's/-[0-9a-f]*\.json//' | sort | uniq -c

## crds: regenerate crds/ from the Rust types, and the chart's copy
crds:
	$(CARGO) run --quiet -p cellplane -- crds --dir crds
	bash scripts/sync-chart-crds.sh

include chart.mk

help:
	@grep -E '^## ' Makefile | sed 's/^## /  /'
