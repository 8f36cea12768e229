#!/usr/bin/env bash
# A current Kubernetes control plane on loopback for the tests, built from the Go modules that
# testcluster/ pins: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and KWOK
# with a few fake nodes, so that pods are scheduled and become Running and Ready.
#
#   scripts/testcluster.sh build [VERSION]      build once; cached in $CELLPLANE_CACHE/testcluster
#   scripts/testcluster.sh start DIR [VERSION]  start it with certificates of its own under DIR;
#                                               writes DIR/kubeconfig and DIR/pids, prints the
#                                               kubeconfig's path
#   scripts/testcluster.sh stop DIR             stop what `start DIR` started
#   scripts/testcluster.sh versions             the versions it can build, newest first
#
# VERSION is a Kubernetes minor version with a module file in testcluster/: 1.37 (go.mod, the
# default: the whole control plane) or 1.34 (go1.34.mod: the oldest version the chart promises;
# its API server and controller manager, with etcd and KWOK from the default version's build).
# The cache ($CELLPLANE_CACHE, default ~/.cache/cellplane) lives outside the work tree and is
# keyed by the module file's checksum, so a clean clone reuses a build and a change of pins
# builds again. Go comes from PATH (1.26 builds 1.34 to 1.37).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=$ROOT/testcluster
CACHE=${CELLPLANE_CACHE:-$HOME/.cache/cellplane}/testcluster
DEFAULT_VERSION=1.37
# The fake nodes KWOK keeps Ready; pods are scheduled onto them.
NODES=${CELLPLANE_TEST_NODES:-3}

log() { echo "testcluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }

modfile_of() {
  case "$1" in
    "$DEFAULT_VERSION") echo go.mod ;;
    *) [ -f "$MODULE/go$1.mod" ] || die "no module file for Kubernetes $1 (have: $(versions | paste -sd' '))"; echo "go$1.mod" ;;
  esac
}

versions() {
  echo "$DEFAULT_VERSION"
  (cd "$MODULE" && ls go1.*.mod 2>/dev/null | sed 's/^go//; s/\.mod$//' | sort -rV)
}

# The exact release a module file pins, e.g. v1.37.2.
release_of() {
  awk '$1 == "k8s.io/kubernetes" { print $2 }' "$MODULE/$(modfile_of "$1")" | head -1
}

bin_of() {
  local modfile sum
  modfile=$(modfile_of "$1")
  sum=$(cat "$MODULE/$modfile" "$MODULE/${modfile%.mod}.sum" | sha256sum | cut -c1-12)
  echo "$CACHE/$1-$sum/bin"
}

build() {
  local version=${1:-$DEFAULT_VERSION} bin modfile release
  bin=$(bin_of "$version")
  [ -f "$bin/.complete" ] && return 0
  command -v go >/dev/null || die "Go is not installed (the control plane is built from Go modules; Go 1.26 builds them)"
  modfile=$(modfile_of "$version")
  release=$(release_of "$version")
  [ -n "$release" ] || die "$modfile pins no k8s.io/kubernetes"
  local minor=${release#v1.}; minor=${minor%%.*}
  # The API server reports this version (kubectl, Helm's kubeVersion and the tests read it).
  local v=k8s.io/component-base/version
  local ldflags="-s -w -X $v.gitVersion=$release -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  log "building Kubernetes $release's control plane from $modfile into $bin (about 10 minutes on 2 cores, once)"
  local work
  work=$(mktemp -d "$CACHE.build.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$CACHE")"; mktemp -d "$CACHE.build.XXXXXX"; })
  local started=$SECONDS
  if ! (cd "$MODULE" && go build -modfile="$modfile" -trimpath -ldflags "$ldflags" -o "$work/" tool) >"$work.log" 2>&1; then
    log "the build failed: (cd testcluster && go build -modfile=$modfile -trimpath -o DIR/ tool); its output:"
    tail -40 "$work.log" >&2
    rm -rf "$work"
    exit 1
  fi
  rm -f "$work.log"
  # etcd's main package is go.etcd.io/etcd/server/v3, so Go names the binary after "server".
  [ -x "$work/server" ] && mv "$work/server" "$work/etcd"
  mkdir -p "$(dirname "$bin")"
  rm -rf "$bin"
  mv "$work" "$bin"
  touch "$bin/.complete"
  log "built $(ls "$bin" | paste -sd' ') in $((SECONDS - started)) s"
}

# Where KWOK's own stages are: its module in Go's module cache (downloaded by the build).
kwok_stages() {
  local dir
  dir=$(cd "$MODULE" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  [ -d "$dir/kustomize/stage" ] || die "KWOK's module is not in Go's module cache (run: $0 build)"
  local stage=$dir/kustomize/stage
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "--config=$stage/$f"
  done
  echo "--config=$MODULE/kwok-stages.yaml"
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

# Fails, with the logs, when a started process has exited.
check_alive() {
  local dir=$1
  while read -r pid name; do
    kill -0 "$pid" 2>/dev/null || { log "$name exited; its log ($dir/$name.log):"; tail -30 "$dir/$name.log" >&2; return 1; }
  done <"$dir/pids"
}

# Waits (up to 120 s) until `curl` of an admin URL succeeds.
wait_url() {
  local dir=$1 url=$2 what=$3 deadline=$((SECONDS + 120))
  until curl -sf --cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key" "$url" >/dev/null 2>&1; do
    [ $SECONDS -gt $deadline ] && { log "$what within 120 s: no"; tail -20 "$dir"/*.log >&2; return 1; }
    check_alive "$dir"
    sleep 0.3
  done
}

launch() {
  local dir=$1 name=$2; shift 2
  "$@" >"$dir/$name.log" 2>&1 &
  echo "$! $name" >>"$dir/pids"
}

# Fake nodes for KWOK (it manages the nodes with its annotation and keeps them Ready).
create_nodes() {
  local dir=$1 api=$2 i
  for i in $(seq 1 "$NODES"); do
    curl -sf --cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key" -H 'Content-Type: application/json' \
      -X POST "$api/api/v1/nodes" -d @- >/dev/null <<EOF || { log "could not create node kwok-node-$i"; return 1; }
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "kwok-node-$i", "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
   "labels": {"kubernetes.io/hostname": "kwok-node-$i", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"}},
 "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "250"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "250"}}}
EOF
  done
}

start() {
  local dir=${1:?usage: $0 start DIR [VERSION]} version=${2:-$DEFAULT_VERSION}
  build "$DEFAULT_VERSION"
  build "$version"
  local bin base
  bin=$(bin_of "$version")
  base=$(bin_of "$DEFAULT_VERSION")
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/pids" ] && stop "$dir"
  make_certs "$dir"
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  # etcd's data on tmpfs when there is one: the tests write much and keep nothing.
  local data=$dir/etcd-data-dir
  [ -d /dev/shm ] && data=$(mktemp -d /dev/shm/cellplane-etcd.XXXXXX)
  echo "$data" >"$dir/etcd-data"
  : >"$dir/pids"
  launch "$dir" etcd "$base/etcd" --name default --data-dir "$data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" --log-level warn --quota-backend-bytes 8589934592
  # Authorization, admission and CEL as any cluster of the version has them.
  launch "$dir" kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$dir/apiserver.crt" --tls-private-key-file "$dir/apiserver.key" --client-ca-file "$dir/ca.crt" \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.96.0.0/16 \
    --endpoint-reconciler-type none --authorization-mode Node,RBAC --max-requests-inflight 1000 --max-mutating-requests-inflight 500
  write_kubeconfig "$dir" "$api_port"
  local api=https://127.0.0.1:$api_port
  wait_url "$dir" "$api/readyz" "the API server ready"
  launch "$dir" kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$dir/kubeconfig" \
    --authentication-kubeconfig "$dir/kubeconfig" --authorization-kubeconfig "$dir/kubeconfig" \
    --controllers garbage-collector-controller,namespace-controller,deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,job-controller,cronjob-controller,ttl-after-finished-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,endpointslice-controller,disruption-controller,node-lifecycle-controller,resourcequota-controller \
    --service-account-private-key-file "$dir/sa.key" --root-ca-file "$dir/ca.crt" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$(free_port)" --concurrent-gc-syncs 5
  if [ -x "$bin/kube-scheduler" ]; then
    launch "$dir" kube-scheduler "$bin/kube-scheduler" --kubeconfig "$dir/kubeconfig" \
      --authentication-kubeconfig "$dir/kubeconfig" --authorization-kubeconfig "$dir/kubeconfig" \
      --leader-elect=false --bind-address 127.0.0.1 --secure-port "$(free_port)"
    local stages
    mapfile -t stages < <(kwok_stages)
    launch "$dir" kwok "$base/kwok" --kubeconfig "$dir/kubeconfig" "${stages[@]}" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
      --cidr 10.244.0.1/16 --node-ip 10.0.0.1 --node-lease-duration-seconds 40 --server-address ""
    create_nodes "$dir" "$api"
  fi
  check_alive "$dir"
  echo "$dir/kubeconfig"
}

stop() {
  local dir=${1:?usage: $0 stop DIR}
  [ -f "$dir/pids" ] || return 0
  # Reverse order: KWOK, the scheduler, the controller manager, the API server, then etcd.
  local pid _
  while read -r pid _; do kill "$pid" 2>/dev/null || true; done < <(tac "$dir/pids")
  while read -r pid _; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done <"$dir/pids"
  rm -f "$dir/pids"
  [ -f "$dir/etcd-data" ] && rm -rf "$(cat "$dir/etcd-data")" "$dir/etcd-data"
  return 0
}

case "${1:-}" in
  build) build "${2:-$DEFAULT_VERSION}" ;;
  start) start "${2:-}" "${3:-$DEFAULT_VERSION}" ;;
  stop) stop "${2:-}" ;;
  versions) versions ;;
  *) echo "usage: $0 build [VERSION] | start DIR [VERSION] | stop DIR | versions" >&2; exit 2 ;;
esac
