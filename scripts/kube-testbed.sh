#!/usr/bin/env bash
# Real kube-apiserver + kube-controller-manager (+ etcd) on loopback for the operator's
# integration tests. No kubelet runs: pods are created by the StatefulSet controller but never
# start; tests set pod status themselves.
#
#   scripts/kube-testbed.sh install   build the binaries (cached by version) and helm; install etcd
#   scripts/kube-testbed.sh start     start etcd, kube-apiserver, kube-controller-manager; wait ready
#   scripts/kube-testbed.sh stop      stop everything (SIGTERM, then SIGKILL after a timeout)
#   scripts/kube-testbed.sh env       print the exports the tests need
#   scripts/kube-testbed.sh status    say whether the test bed is up
#
# Environment overrides: WP_TESTBED_CACHE (default ~/.cache/woodpecker-testbed),
# WP_KUBE_TESTBED_RUN (default /dev/shm/woodpecker-kube-testbed-$UID), WP_KUBE_TESTBED_PORT_BASE (default 36440).
set -euo pipefail

KUBE_VERSION="v1.34.4"
HELM_VERSION="v3.19.0"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTBED_MODULE="$REPO_ROOT/e2e/testbed"
CACHE="${WP_TESTBED_CACHE:-$HOME/.cache/woodpecker-testbed}"
KUBE_BIN="$CACHE/kubernetes-$KUBE_VERSION/bin"
HELM_BIN="$CACHE/helm-$HELM_VERSION/bin"
RUN="${WP_KUBE_TESTBED_RUN:-/dev/shm/woodpecker-kube-testbed-$(id -u)}"
PORT_BASE="${WP_KUBE_TESTBED_PORT_BASE:-36440}"
ETCD_CLIENT_PORT=$((PORT_BASE + 0))
ETCD_PEER_PORT=$((PORT_BASE + 1))
APISERVER_PORT=$((PORT_BASE + 2))
KCM_PORT=$((PORT_BASE + 3))
KUBECONFIG_PATH="$RUN/admin.kubeconfig"
ADMIN_TOKEN_FILE="$RUN/admin.token"
READY_TIMEOUT="${WP_KUBE_TESTBED_READY_TIMEOUT:-90}"
STOP_TIMEOUT=15

log() { echo "kube-testbed: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- install
install_etcd() {
  if command -v etcd >/dev/null 2>&1; then return; fi
  log "installing etcd-server (Debian)"
  apt-get install -y -o DPkg::Lock::Timeout=120 etcd-server >/dev/null ||
    { apt-get update -o DPkg::Lock::Timeout=120 >/dev/null &&
      apt-get install -y -o DPkg::Lock::Timeout=120 etcd-server >/dev/null; }
}

build_kube() {
  local missing=()
  for b in kube-apiserver kube-controller-manager; do
    [[ -x "$KUBE_BIN/$b" ]] || missing+=("$b")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "kubernetes $KUBE_VERSION binaries cached in $KUBE_BIN"
    return
  fi
  command -v go >/dev/null 2>&1 || die "go is required to build ${missing[*]}"
  mkdir -p "$KUBE_BIN"
  local major minor ldflags
  major="${KUBE_VERSION#v}"; major="${major%%.*}"
  minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${missing[@]}"; do
    log "building $b $KUBE_VERSION (several minutes cold) -> $KUBE_BIN"
    local start=$SECONDS
    (cd "$TESTBED_MODULE" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
      -o "$KUBE_BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$KUBE_BIN/$b.tmp" "$KUBE_BIN/$b"
    log "built $b in $((SECONDS - start)) s"
  done
}

install_helm() {
  if [[ -x "$HELM_BIN/helm" ]]; then return; fi
  command -v go >/dev/null 2>&1 || { log "go missing: skipping helm"; return; }
  log "building helm $HELM_VERSION -> $HELM_BIN"
  mkdir -p "$HELM_BIN"
  # helm's go.mod pins its own dependencies; GOFLAGS=-mod=mod keeps the build outside our module.
  (cd /tmp && GOBIN="$HELM_BIN" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") || log "warning: helm build failed; RBAC tests fall back to static templates"
}

cmd_install() {
  install_etcd
  build_kube
  install_helm
  log "install done"
}

# ---------------------------------------------------------------- start
pid_alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

wait_for() { # name timeout command...
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "$name not ready after ${timeout}s; see $RUN/$name.log"
    fi
    sleep 0.3
  done
}

write_kubeconfig() { # path user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: woodpecker-testbed
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $RUN/certs/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: woodpecker-testbed
  context: { cluster: woodpecker-testbed, user: $2 }
current-context: woodpecker-testbed
EOF
}

make_certs() {
  mkdir -p "$RUN/certs"
  local c="$RUN/certs"
  # A CA plus a serving cert signed by it: rustls (kube-rs) refuses a CA certificate used as the
  # server's own certificate, so the serving cert cannot simply be self-signed.
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=woodpecker-testbed-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$c/apiserver.key" -out "$c/apiserver.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc" \
    "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" >"$c/apiserver.ext"
  openssl x509 -req -in "$c/apiserver.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
    -days 30 -extfile "$c/apiserver.ext" -out "$c/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$c/sa.key" 2048 2>/dev/null
  openssl rsa -in "$c/sa.key" -pubout -out "$c/sa.pub" 2>/dev/null
}

cmd_start() {
  [[ -x "$KUBE_BIN/kube-apiserver" && -x "$KUBE_BIN/kube-controller-manager" ]] ||
    die "binaries missing in $KUBE_BIN; run: $0 install"
  command -v etcd >/dev/null 2>&1 || die "etcd missing; run: $0 install"
  if pid_alive kube-apiserver; then
    log "already running"; cmd_env; return
  fi
  cmd_stop >/dev/null 2>&1 || true
  rm -rf "$RUN"; mkdir -p "$RUN"
  make_certs
  local admin_token kcm_token
  admin_token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  kcm_token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  echo "$admin_token" >"$ADMIN_TOKEN_FILE"
  # token,user,uid,"groups"
  # The controller manager runs as system:masters: the test bed has no per-controller
  # ServiceAccount credentials (--use-service-account-credentials=false).
  cat >"$RUN/tokens.csv" <<EOF
$admin_token,woodpecker-admin,woodpecker-admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager,"system:masters"
EOF

  log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
  etcd --name testbed --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "testbed=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes 2147483648 \
    >"$RUN/etcd.log" 2>&1 &
  echo $! >"$RUN/etcd.pid"
  wait_for etcd 20 curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  log "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
  "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --cert-dir "$RUN/certs" \
    --tls-cert-file "$RUN/certs/apiserver.crt" --tls-private-key-file "$RUN/certs/apiserver.key" \
    --token-auth-file "$RUN/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer "https://kubernetes.default.svc" \
    --service-account-key-file "$RUN/certs/sa.pub" \
    --service-account-signing-key-file "$RUN/certs/sa.key" \
    --api-audiences "https://kubernetes.default.svc" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --disable-admission-plugins ServiceAccount \
    --profiling=false \
    >"$RUN/kube-apiserver.log" 2>&1 &
  echo $! >"$RUN/kube-apiserver.pid"
  write_kubeconfig "$KUBECONFIG_PATH" woodpecker-admin "$admin_token"
  write_kubeconfig "$RUN/kcm.kubeconfig" system:kube-controller-manager "$kcm_token"
  wait_for kube-apiserver "$READY_TIMEOUT" curl -sf --cacert "$RUN/certs/ca.crt" \
    -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$APISERVER_PORT/readyz"

  log "starting kube-controller-manager"
  # The StatefulSet, garbage-collector, ServiceAccount-token, namespace and PDB (disruption)
  # controllers are what the operator's tests rely on.
  "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$RUN/kcm.kubeconfig" \
    --authentication-kubeconfig "$RUN/kcm.kubeconfig" \
    --authorization-kubeconfig "$RUN/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$RUN/kcm-certs" \
    --controllers "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route,-ttl,-bootstrapsigner,-tokencleaner,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-ephemeral-volume" \
    --service-account-private-key-file "$RUN/certs/sa.key" \
    --root-ca-file "$RUN/certs/ca.crt" \
    --use-service-account-credentials=false \
    --leader-elect=false \
    --concurrent-statefulset-syncs 5 --concurrent-gc-syncs 10 \
    --profiling=false \
    >"$RUN/kube-controller-manager.log" 2>&1 &
  echo $! >"$RUN/kube-controller-manager.pid"
  wait_for kube-controller-manager "$READY_TIMEOUT" curl -sfk "https://127.0.0.1:$KCM_PORT/healthz"
  # The default ServiceAccount appears once the serviceaccount controller ran; tests create pods.
  wait_for default-serviceaccount "$READY_TIMEOUT" curl -sf --cacert "$RUN/certs/ca.crt" \
    -H "Authorization: Bearer $admin_token" \
    "https://127.0.0.1:$APISERVER_PORT/api/v1/namespaces/default/serviceaccounts/default"
  log "ready"
  cmd_env
  log "use it: eval \"\$($0 env)\"; kubectl get ns; cargo test -p woodpecker-operator"
}

# ---------------------------------------------------------------- stop
stop_one() {
  local name="$1" pidfile="$RUN/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not exit in ${STOP_TIMEOUT}s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

cmd_stop() {
  stop_one kube-controller-manager
  stop_one kube-apiserver
  stop_one etcd
  # Free the etcd data on /dev/shm; keep logs and certs for post-mortems (start wipes them).
  rm -rf "$RUN/etcd"
  log "stopped"
}

cmd_env() {
  echo "export WOODPECKER_TESTBED_KUBECONFIG=$KUBECONFIG_PATH"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  [[ -x "$HELM_BIN/helm" ]] && echo "export WOODPECKER_TESTBED_HELM=$HELM_BIN/helm"
  return 0
}

cmd_status() {
  local up=0
  for n in etcd kube-apiserver kube-controller-manager; do
    if pid_alive "$n"; then log "$n: running (pid $(cat "$RUN/$n.pid"))"; else log "$n: stopped"; up=1; fi
  done
  return $up
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) echo "usage: $0 {install|start|stop|env|status}" >&2; exit 2 ;;
esac
