#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml) into the Helm chart as templates
# (charts/cellplane/templates/crds/), wrapped in `crds.install` and given the chart's
# labels and annotations (helm.sh/resource-policy: keep when crds.keep).
#
#   scripts/sync-chart-crds.sh          rewrite the chart's copies
#   scripts/sync-chart-crds.sh --check  exit 1 when they differ from crds/ (for CI)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/crds"
dest="$root/charts/cellplane/templates/crds"

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  -h | --help)
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

# render SRC: prints the chart template for one CRD file.
render() {
  local file="$1" name
  name="$(basename "$file")"
  # The copy must stay a verbatim copy: template syntax in a description would be
  # executed by Helm, and metadata the generator adds would clash with the include.
  if grep -q '{{' "$file"; then
    echo "sync-chart-crds: crds/$name contains '{{', which Helm would evaluate; escape it in the generator" >&2
    return 1
  fi
  printf '{{- /* Copied from crds/%s by scripts/sync-chart-crds.sh (make chart-crds). Do not edit. */}}\n' "$name"
  printf '{{- if .Values.crds.install }}\n'
  awk -v name="$name" '
    /^metadata:$/ { in_meta = 1; print; next }
    in_meta && /^  name: / {
      print
      print "  {{- include \"cellplane.crdMetadata\" . | nindent 2 }}"
      done = 1
      next
    }
    in_meta && /^  (labels|annotations):/ {
      print "sync-chart-crds: crds/" name " has metadata." substr($1, 1, length($1) - 1) "; extend cellplane.crdMetadata to merge it" > "/dev/stderr"
      exit 1
    }
    /^[^ ]/ { in_meta = 0 }
    { print }
    END {
      if (!done) {
        print "sync-chart-crds: crds/" name " has no metadata.name line" > "/dev/stderr"
        exit 1
      }
    }
  ' "$file"
  printf '{{- end }}\n'
}

shopt -s nullglob
sources=("$src"/*.yaml)
if ((${#sources[@]} == 0)); then
  echo "sync-chart-crds: no CRDs under crds/; run make crds first" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for file in "${sources[@]}"; do
  render "$file" >"$work/$(basename "$file")"
done

if ! $check; then
  mkdir -p "$dest"
  rm -f "$dest"/*.yaml
  cp "$work"/*.yaml "$dest"/
  echo "sync-chart-crds: wrote ${#sources[@]} CRD templates to charts/cellplane/templates/crds/"
  exit 0
fi

stale=()
for file in "$work"/*.yaml; do
  name="$(basename "$file")"
  if [[ ! -f "$dest/$name" ]]; then
    stale+=("charts/cellplane/templates/crds/$name is missing")
  elif ! cmp -s "$file" "$dest/$name"; then
    stale+=("charts/cellplane/templates/crds/$name differs from crds/$name")
  fi
done
for file in "$dest"/*.yaml; do
  name="$(basename "$file")"
  [[ -f "$work/$name" ]] || stale+=("charts/cellplane/templates/crds/$name has no source in crds/")
done

if ((${#stale[@]} > 0)); then
  printf 'sync-chart-crds: %s\n' "${stale[@]}" >&2
  echo "sync-chart-crds: the chart's CRDs are out of date; run scripts/sync-chart-crds.sh (make chart-crds) and commit the result" >&2
  exit 1
fi
echo "sync-chart-crds: charts/cellplane/templates/crds/ matches crds/ (${#sources[@]} CRDs)"
