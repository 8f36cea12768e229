#!/usr/bin/env bash
# Runs a command with E2E_KUBECONFIG naming a real kube-apiserver on loopback: the one already
# named, else one started by scripts/kube-apiserver.sh (built once, cached) and stopped after.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${E2E_KUBECONFIG:-}" ]; then
  echo "with-kube-apiserver: using E2E_KUBECONFIG=$E2E_KUBECONFIG" >&2
  exec "$@"
fi
dir=${CELLPLANE_KUBE_DIR:-$PWD/target/kube-apiserver}
kubeconfig=$(scripts/kube-apiserver.sh start "$dir")
trap 'scripts/kube-apiserver.sh stop "$dir"' EXIT
echo "with-kube-apiserver: a real kube-apiserver 1.20 at $(grep -m1 server: "$kubeconfig" | awk '{print $2}') (logs in $dir)" >&2
E2E_KUBECONFIG=$kubeconfig "$@"
