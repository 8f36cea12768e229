#!/usr/bin/env bash
# A real kube-apiserver (and kube-controller-manager, for owner-reference garbage collection)
# on loopback, built from Debian bookworm's source package `kubernetes` (1.20.2) with Debian's
# Go 1.19, stored by Debian's etcd 3.4.
#
#   scripts/kube-apiserver.sh build        fetch and build once; cached in $CELLPLANE_CACHE
#   scripts/kube-apiserver.sh start DIR    start etcd, the API server and the controller
#                                          manager with certificates of their own under DIR;
#                                          writes DIR/kubeconfig and DIR/pids, prints the kubeconfig path
#   scripts/kube-apiserver.sh stop DIR     stop what `start DIR` started
#
# The cache ($CELLPLANE_CACHE, default ~/.cache/cellplane) lives outside the work tree, so a
# clean clone reuses a build (about two minutes on 2 cores, cold). Needs root for apt-get when
# the Debian packages are missing.
set -euo pipefail

VERSION=1.20.2
CACHE=${CELLPLANE_CACHE:-$HOME/.cache/cellplane}
KUBE=$CACHE/kubernetes-$VERSION
BIN=$KUBE/bin
GO=/usr/lib/go-1.19/bin/go

log() { echo "kube-apiserver.sh: $*" >&2; }

need_packages() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { log "missing Debian packages (install them as root): ${missing[*]}"; exit 1; }
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

fetch_source() {
  local work=$1
  if ! apt-get source --print-uris -qq kubernetes >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { log "no deb-src entry for bookworm (add one as root)"; exit 1; }
    log "adding a deb-src entry for bookworm"
    cat >/etc/apt/sources.list.d/cellplane-kubernetes-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq
  fi
  (cd "$work" && apt-get source -qq --download-only kubernetes 2>/dev/null)
  (cd "$work" && dpkg-source -x --skip-debianization kubernetes_*.dsc src >/dev/null)
}

# Go 1.19 is newer than the Go that 1.20 was written for; three things in its vendor tree need
# mending (see the README's "Testing").
patch_vendor() {
  local src=$1
  # modern-go/reflect2 1.0.1 crashes under Go 1.18+; Debian's 1.0.2 is a drop-in replacement.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
  # Go 1.16+ makes kube-openapi's zero-value check refuse `default: ''` (kubernetes#99804):
  # only nil is "no value", as upstream kube-openapi#230 does.
  sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' \
    "$src/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go"
  grep -q 'if data == nil {' "$src/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go"
}

# pkg/generated/openapi is not in the tarball: generate it with the vendored openapi-gen over
# every package tagged +k8s:openapi-gen= (staging packages named by their vendor/ path).
generate_openapi() {
  local src=$1 gopath=$2
  (cd "$gopath/src/k8s.io/kubernetes" &&
    GOPATH=$gopath GO111MODULE=off GOFLAGS= "$GO" build -o "$gopath/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen)
  local dirs
  dirs=$(cd "$src" && find -H . \( -path ./vendor -o -path './_*' -o -path './.*' \) -prune -o -type f -name '*.go' -print |
    xargs grep -l '+k8s:openapi-gen=' | sed 's|/[^/]*$||; s|^\./||; s|^staging/src/|vendor/|' |
    grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' | LC_ALL=C sort -u |
    sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
  (cd "$gopath/src/k8s.io/kubernetes" &&
    GOPATH=$gopath GO111MODULE=off "$gopath/openapi-gen" --logtostderr -i "$dirs" \
      -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
      -h hack/boilerplate/boilerplate.generatego.txt -r /dev/null >/dev/null)
  test -s "$src/pkg/generated/openapi/zz_generated.openapi.go"
}

build() {
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then return 0; fi
  need_packages golang-1.19-go etcd-server golang-github-modern-go-reflect2-dev dpkg-dev openssl
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/cellplane-kube-build.XXXXXX")
  # A RETURN trap outlives its function: it removes itself, or every later return would run it.
  trap 'rm -rf "${work:-}"; trap - RETURN' RETURN
  log "fetching Debian's kubernetes $VERSION source into $work"
  fetch_source "$work"
  local src=$work/src gopath=$work/gopath
  mkdir -p "$gopath/src/k8s.io"
  ln -s "$src" "$gopath/src/k8s.io/kubernetes"
  patch_vendor "$src"
  log "generating pkg/generated/openapi"
  generate_openapi "$src" "$gopath"
  local V=k8s.io/kubernetes/vendor/k8s.io/component-base/version
  log "building kube-apiserver and kube-controller-manager (a few minutes on 2 cores)"
  mkdir -p "$work/bin"
  (cd "$gopath/src/k8s.io/kubernetes" &&
    GOPATH=$gopath GO111MODULE=off GOCACHE=$CACHE/go-build "$GO" build -tags providerless \
      -ldflags "-s -w -X $V.gitVersion=v$VERSION -X $V.gitMajor=1 -X $V.gitMinor=20" \
      -o "$work/bin/" ./cmd/kube-apiserver ./cmd/kube-controller-manager)
  mkdir -p "$KUBE"
  rm -rf "$BIN"
  mv "$work/bin" "$BIN"
  log "built into $BIN"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A CA, the API server's serving certificate, a service-account key pair and an admin client
# certificate (group system:masters), all for loopback.
make_certs() {
  local dir=$1
  (cd "$dir" &&
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=cellplane-test-ca 2>/dev/null &&
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >apiserver.ext &&
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile apiserver.ext -out apiserver.crt 2>/dev/null &&
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj '/O=system:masters/CN=cellplane-admin' 2>/dev/null &&
    printf 'extendedKeyUsage=clientAuth\n' >admin.ext &&
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile admin.ext -out admin.crt 2>/dev/null &&
    openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null)
}

write_kubeconfig() {
  local dir=$1 port=$2
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cellplane-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 <"$dir/ca.crt")
users:
- name: cellplane-admin
  user:
    client-certificate-data: $(base64 -w0 <"$dir/admin.crt")
    client-key-data: $(base64 -w0 <"$dir/admin.key")
contexts:
- name: cellplane-test
  context: {cluster: cellplane-test, user: cellplane-admin}
current-context: cellplane-test
EOF
}

wait_ready() {
  local dir=$1 port=$2 deadline=$((SECONDS + 120))
  until curl -sf --cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key" \
    "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    if [ $SECONDS -gt $deadline ]; then
      log "the API server did not become ready within 120 s; its log:"; tail -20 "$dir/kube-apiserver.log" >&2; return 1
    fi
    for pid in $(cat "$dir/pids"); do
      kill -0 "$pid" 2>/dev/null || { log "a process exited; logs in $dir"; tail -20 "$dir"/*.log >&2; return 1; }
    done
    sleep 0.5
  done
}

start() {
  local dir=${1:?usage: $0 start DIR}
  build
  need_packages etcd-server
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/pids" ] && stop "$dir"
  make_certs "$dir"
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  # etcd's data on tmpfs when there is one: the tests write much and keep nothing.
  local data=$dir/etcd
  [ -d /dev/shm ] && data=$(mktemp -d /dev/shm/cellplane-etcd.XXXXXX)
  echo "$data" >"$dir/etcd-data"
  : >"$dir/pids"
  etcd --name default --data-dir "$data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" --log-level warn >"$dir/etcd.log" 2>&1 &
  echo $! >>"$dir/pids"
  "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" --insecure-port 0 \
    --tls-cert-file "$dir/apiserver.crt" --tls-private-key-file "$dir/apiserver.key" --client-ca-file "$dir/ca.crt" \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode RBAC --enable-priority-and-fairness=false --max-requests-inflight 1000 \
    --max-mutating-requests-inflight 500 >"$dir/kube-apiserver.log" 2>&1 &
  echo $! >>"$dir/pids"
  write_kubeconfig "$dir" "$api_port"
  wait_ready "$dir" "$api_port"
  "$BIN/kube-controller-manager" --kubeconfig "$dir/kubeconfig" --controllers garbagecollector,namespace \
    --leader-elect=false --port 0 --secure-port 0 --concurrent-gc-syncs 5 >"$dir/kube-controller-manager.log" 2>&1 &
  echo $! >>"$dir/pids"
  echo "$dir/kubeconfig"
}

stop() {
  local dir=${1:?usage: $0 stop DIR}
  [ -f "$dir/pids" ] || return 0
  # Reverse order: the controller manager, the API server, then etcd.
  for pid in $(tac "$dir/pids"); do kill "$pid" 2>/dev/null || true; done
  for pid in $(cat "$dir/pids"); do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$dir/pids"
  [ -f "$dir/etcd-data" ] && rm -rf "$(cat "$dir/etcd-data")" "$dir/etcd-data"
  return 0
}

case "${1:-}" in
  build) build ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 build | start DIR | stop DIR" >&2; exit 2 ;;
esac
