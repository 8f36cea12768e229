# Included by the main Makefile.
CARGO ?= cargo

.PHONY: crds
## crds: regenerate crds/ from the Rust types in operator/src/api
crds:
	$(CARGO) run --quiet -p cellplane --example gen_crds -- crds
