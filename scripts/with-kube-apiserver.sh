#!/usr/bin/env bash
# Runs a command with a real kube-apiserver and kubectl for the tests:
#   E2E_KUBECONFIG              the API server: the one already named, else one started by
#                               scripts/kube-apiserver.sh (built once, cached) and stopped after;
#   MEMAPI_REFERENCE_KUBECONFIG the same server, which memapi's fidelity tests compare against;
#   KUBECTL, MEMAPI_REQUIRE_KUBECTL  a kubectl 1.34 (installed by scripts/tools.sh), required.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
mkdir -p "$tools"
install_venv >&2
install_helm >&2
export KUBECTL="$tools/bin/kubectl" MEMAPI_REQUIRE_KUBECTL=1
if [ -n "${E2E_KUBECONFIG:-}" ]; then
  echo "with-kube-apiserver: using E2E_KUBECONFIG=$E2E_KUBECONFIG" >&2
  MEMAPI_REFERENCE_KUBECONFIG=${MEMAPI_REFERENCE_KUBECONFIG:-$E2E_KUBECONFIG} exec "$@"
fi
dir=${CELLPLANE_KUBE_DIR:-$PWD/target/kube-apiserver}
kubeconfig=$(scripts/kube-apiserver.sh start "$dir")
trap 'scripts/kube-apiserver.sh stop "$dir"' EXIT
echo "with-kube-apiserver: a real kube-apiserver 1.20 at $(grep -m1 server: "$kubeconfig" | awk '{print $2}') (logs in $dir)" >&2
E2E_KUBECONFIG=$kubeconfig MEMAPI_REFERENCE_KUBECONFIG=$kubeconfig "$@"
