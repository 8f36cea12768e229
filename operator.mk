# Operator targets; included by the main Makefile.
CARGO ?= cargo

.PHONY: run sandbox e2e bench-fleet
## run: the sandbox: the whole operator on an in-memory API and a simulated cloud, applying examples/
run: sandbox
sandbox:
	$(CARGO) run --quiet -p cellplane -- sandbox examples

## e2e: the scenarios against the cluster in E2E_KUBECONFIG (they say so when it is unset)
e2e:
	$(CARGO) test -p cellplane-e2e -- --nocapture

## bench-fleet: 200 cells and 10,000 namespaces until Ready (release build)
bench-fleet:
	$(CARGO) run --release --quiet -p cellplane -- bench fleet --cells 200 --namespaces 10000
