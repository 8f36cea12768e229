# Included by the main Makefile.

.PHONY: chart chart-crds
## chart: lint, render and validate the Helm chart offline (installs helm & co. on first use)
chart:
	bash scripts/chart-check.sh

## chart-crds: copy crds/ into the chart's templates/crds/ (after `make crds`)
chart-crds:
	bash scripts/sync-chart-crds.sh
