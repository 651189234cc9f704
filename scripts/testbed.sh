#!/usr/bin/env bash
# Test bed for Woodpecker-in-Rust: a real etcd node and a real MinIO server on loopback,
# plus the upstream-Go interop program (e2e/interop) used for byte-compatibility checks.
#
#   scripts/testbed.sh install   # idempotent; tools cached under ~/.cache/woodpecker-testbed/<tool>-<version>/
#   scripts/testbed.sh start     # start etcd + MinIO (installs the servers if missing); safe to call twice
#   scripts/testbed.sh env       # print `export WP_...=...` lines:  eval "$(scripts/testbed.sh env)"
#   scripts/testbed.sh status    # show what runs; exit 1 unless both servers are healthy
#   scripts/testbed.sh stop      # SIGTERM, bounded wait, SIGKILL; removes the data
#
# Everything can be overridden by environment variables (defaults in brackets):
#   WP_TESTBED_CACHE [~/.cache/woodpecker-testbed]   build/tool cache, outside the checkout
#   TESTBED_DIR      [/tmp/woodpecker-testbed]       state: pid files, logs, env file, rendered config
#   WP_TESTBED_DATA  [/dev/shm/woodpecker-testbed]   server data (removed by stop)
#   WP_TESTBED_ETCD_PORT [23790]  WP_TESTBED_ETCD_PEER_PORT [23800]
#   WP_TESTBED_MINIO_PORT [9900]  WP_TESTBED_MINIO_CONSOLE_PORT [9901]
#   WP_TESTBED_BUCKET [woodpecker]
#   WP_TESTBED_WAIT_SECS [60]     bound for every readiness wait
#   WP_TESTBED_BUILD_WAIT_SECS [1800]  bound for waiting on another process's MinIO build
set -euo pipefail

MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
WOODPECKER_VERSION="v0.1.35"
APT_PACKAGES=(etcd-server etcd-client)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WP_TESTBED_CACHE:-${HOME:-/root}/.cache/woodpecker-testbed}"
TESTBED_DIR="${TESTBED_DIR:-/tmp/woodpecker-testbed}"
if [[ -z "${WP_TESTBED_DATA:-}" ]]; then
  if [[ -d /dev/shm && -w /dev/shm ]]; then WP_TESTBED_DATA=/dev/shm/woodpecker-testbed; else WP_TESTBED_DATA="$TESTBED_DIR/data"; fi
fi
DATA="$WP_TESTBED_DATA"
ETCD_PORT="${WP_TESTBED_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${WP_TESTBED_ETCD_PEER_PORT:-23800}"
MINIO_PORT="${WP_TESTBED_MINIO_PORT:-9900}"
MINIO_CONSOLE_PORT="${WP_TESTBED_MINIO_CONSOLE_PORT:-9901}"
BUCKET="${WP_TESTBED_BUCKET:-woodpecker}"
WAIT_SECS="${WP_TESTBED_WAIT_SECS:-60}"
BUILD_WAIT_SECS="${WP_TESTBED_BUILD_WAIT_SECS:-1800}"
MINIO_USER=minioadmin
MINIO_PASSWORD=minioadmin

MINIO_DIR="$CACHE/minio-$MINIO_VERSION"
MINIO_BIN="$MINIO_DIR/bin/minio"
INTEROP_SRC="$REPO_ROOT/e2e/interop"
ENV_FILE="$TESTBED_DIR/env"

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------

apt_missing() {
  local p missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  echo "${missing[@]+"${missing[@]}"}"
}

install_apt() {
  local missing
  missing="$(apt_missing)"
  if [[ -z "$missing" ]]; then
    log "apt packages present: ${APT_PACKAGES[*]}"
    return 0
  fi
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install: $missing"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null || die "apt-get not found; install by hand: $missing"
  log "apt-get install $missing"
  # shellcheck disable=SC2086
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -o DPkg::Lock::Timeout=120 $missing </dev/null >&2; then
    log "apt-get install failed; running apt-get update and retrying"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -o DPkg::Lock::Timeout=120 </dev/null >&2 || die "apt-get update failed"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -o DPkg::Lock::Timeout=120 $missing </dev/null >&2 \
      || die "apt-get install $missing failed"
  fi
  missing="$(apt_missing)"
  [[ -z "$missing" ]] || die "still missing after apt-get install: $missing"
}

# Waits (bounded) for another process's `go install github.com/minio/minio@<version>` to finish.
wait_foreign_minio_build() {
  local waited=0
  while pgrep -f "go install github.com/minio/minio@$MINIO_VERSION" >/dev/null 2>&1; do
    if (( waited == 0 )); then log "another process is building MinIO $MINIO_VERSION; waiting for it (max ${BUILD_WAIT_SECS}s)"; fi
    (( waited < BUILD_WAIT_SECS )) || die "gave up after ${BUILD_WAIT_SECS}s waiting for the running MinIO build"
    sleep 5; waited=$((waited + 5))
  done
}

install_minio() {
  if [[ -x "$MINIO_BIN" ]]; then log "minio cached: $MINIO_BIN"; return 0; fi
  command -v go >/dev/null || die "go not found (needed to build MinIO from the Go module proxy)"
  mkdir -p "$MINIO_DIR"
  exec 8>"$MINIO_DIR/.lock"
  flock -w "$BUILD_WAIT_SECS" 8 || die "timed out waiting for the MinIO build lock $MINIO_DIR/.lock"
  wait_foreign_minio_build
  if [[ -x "$MINIO_BIN" ]]; then log "minio cached: $MINIO_BIN"; exec 8>&-; return 0; fi
  local tmp="$MINIO_DIR/bin.tmp.$$" start=$SECONDS
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building MinIO $MINIO_VERSION with go install (several minutes cold; log: $MINIO_DIR/build.log)"
  if ! GOBIN="$tmp" go install "github.com/minio/minio@$MINIO_VERSION" >"$MINIO_DIR/build.log" 2>&1; then
    tail -20 "$MINIO_DIR/build.log" >&2
    rm -rf "$tmp"
    die "MinIO build failed (full log: $MINIO_DIR/build.log)"
  fi
  mkdir -p "$MINIO_DIR/bin"
  mv -f "$tmp/minio" "$MINIO_BIN"; rm -rf "$tmp"
  log "built $MINIO_BIN in $((SECONDS - start))s"
  exec 8>&-
}

interop_hash() {
  ( cd "$INTEROP_SRC" && cat go.mod go.sum $(LC_ALL=C ls -1 ./*.go) ) | sha256sum | cut -c1-12
}
interop_bin() { echo "$CACHE/wp-interop-$WOODPECKER_VERSION-$(interop_hash)/bin/wp-interop"; }

install_interop() {
  [[ -f "$INTEROP_SRC/go.mod" ]] || die "missing $INTEROP_SRC/go.mod"
  local bin dir
  bin="$(interop_bin)"; dir="$(dirname "$(dirname "$bin")")"
  if [[ -x "$bin" ]]; then log "wp-interop cached: $bin"; return 0; fi
  command -v go >/dev/null || die "go not found (needed to build e2e/interop)"
  mkdir -p "$dir/bin"
  exec 9>"$dir/.lock"
  flock -w "$BUILD_WAIT_SECS" 9 || die "timed out waiting for the wp-interop build lock"
  if [[ -x "$bin" ]]; then log "wp-interop cached: $bin"; exec 9>&-; return 0; fi
  local start=$SECONDS
  log "building wp-interop (woodpecker $WOODPECKER_VERSION; ~2 min cold) -> $bin"
  # v0.1.35 and upstream's memberlist fork are not in the public checksum DB; go.sum (committed,
  # identical to upstream's own go.sum lines) pins their hashes instead.
  if ! ( cd "$INTEROP_SRC" && GONOSUMDB="github.com/zilliztech/woodpecker,github.com/tinswzy/memberlist" \
        go build -mod=readonly -buildvcs=false -trimpath -o "$bin.tmp" . ) >"$dir/build.log" 2>&1; then
    tail -30 "$dir/build.log" >&2
    die "wp-interop build failed (full log: $dir/build.log)"
  fi
  mv -f "$bin.tmp" "$bin"
  log "built wp-interop in $((SECONDS - start))s"
  exec 9>&-
}

cmd_install() {
  install_apt
  install_minio
  install_interop
}

# ---------------------------------------------------------------------------------------------
# start / stop / status
# ---------------------------------------------------------------------------------------------

# pid_alive NAME EXPECTED_EXE_SUBSTRING -> prints pid if the recorded process is alive and is ours
pid_alive() {
  local f="$TESTBED_DIR/$1.pid" pid cmd
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmd" == *"$2"* ]] || return 1
  echo "$pid"
}

port_in_use() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

etcd_healthy() {
  ETCDCTL_API=3 timeout 5 etcdctl --endpoints="127.0.0.1:$ETCD_PORT" --dial-timeout=2s --command-timeout=3s \
    endpoint health >/dev/null 2>&1
}
minio_healthy() { curl -sf -m 3 -o /dev/null "http://127.0.0.1:$MINIO_PORT/minio/health/live"; }

wait_until() { # wait_until DESCRIPTION LOGFILE CHECK_FN
  local desc="$1" logf="$2" fn="$3" deadline=$((SECONDS + WAIT_SECS))
  until "$fn"; do
    if (( SECONDS >= deadline )); then
      log "last lines of $logf:"; tail -20 "$logf" >&2 || true
      die "$desc not healthy after ${WAIT_SECS}s"
    fi
    sleep 0.3
  done
}

start_etcd() {
  if pid_alive etcd "etcd" >/dev/null; then log "etcd already running (pid $(pid_alive etcd etcd))"; return 0; fi
  port_in_use "$ETCD_PORT" && die "port 127.0.0.1:$ETCD_PORT busy but not by our etcd (pid file $TESTBED_DIR/etcd.pid); stop it or set WP_TESTBED_ETCD_PORT"
  port_in_use "$ETCD_PEER_PORT" && die "etcd peer port $ETCD_PEER_PORT busy; set WP_TESTBED_ETCD_PEER_PORT"
  rm -rf "$DATA/etcd"; mkdir -p "$DATA/etcd"
  log "starting etcd on 127.0.0.1:$ETCD_PORT (data $DATA/etcd)"
  setsid etcd --name wp-testbed --data-dir "$DATA/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "wp-testbed=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --initial-cluster-token wp-testbed \
    </dev/null >"$TESTBED_DIR/etcd.log" 2>&1 7>&- 8>&- 9>&- &
  echo $! >"$TESTBED_DIR/etcd.pid"
  wait_until etcd "$TESTBED_DIR/etcd.log" etcd_healthy
  log "etcd healthy"
}

start_minio() {
  [[ -x "$MINIO_BIN" ]] || die "MinIO not installed at $MINIO_BIN (run: $0 install)"
  if pid_alive minio "minio" >/dev/null; then log "minio already running (pid $(pid_alive minio minio))"; return 0; fi
  port_in_use "$MINIO_PORT" && die "port 127.0.0.1:$MINIO_PORT busy but not by our MinIO; stop it or set WP_TESTBED_MINIO_PORT"
  port_in_use "$MINIO_CONSOLE_PORT" && die "MinIO console port $MINIO_CONSOLE_PORT busy; set WP_TESTBED_MINIO_CONSOLE_PORT"
  rm -rf "$DATA/minio"; mkdir -p "$DATA/minio"
  log "starting MinIO on 127.0.0.1:$MINIO_PORT (console :$MINIO_CONSOLE_PORT, data $DATA/minio)"
  MINIO_ROOT_USER="$MINIO_USER" MINIO_ROOT_PASSWORD="$MINIO_PASSWORD" MINIO_UPDATE=off \
    setsid "$MINIO_BIN" server "$DATA/minio" --address "127.0.0.1:$MINIO_PORT" \
    --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" --quiet \
    </dev/null >"$TESTBED_DIR/minio.log" 2>&1 7>&- 8>&- 9>&- &
  echo $! >"$TESTBED_DIR/minio.pid"
  wait_until minio "$TESTBED_DIR/minio.log" minio_healthy
  log "minio healthy"
  start_trash_cleaner
}

# MinIO renames deleted objects into .minio.sys/tmp/.trash and empties it slowly (every 5 minutes, with
# throttled deletes). The data lives in memory (/dev/shm), so tests and benches that write and delete
# gigabytes piled up to 17 GB of RAM there, and the memory pressure slowed everything on the machine.
# Trash holds only objects MinIO already deleted, so emptying it from outside is safe.
start_trash_cleaner() {
  if pid_alive minio-trash minio-trash-cleaner >/dev/null; then return 0; fi
  local trash="$DATA/minio/.minio.sys/tmp/.trash"
  setsid bash -c 'while sleep 5; do
      [[ -d "$1" ]] || [[ -d "$(dirname "$1")" ]] || exit 0
      find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null
    done' minio-trash-cleaner "$trash" </dev/null >/dev/null 2>&1 7>&- 8>&- 9>&- &
  echo $! >"$TESTBED_DIR/minio-trash.pid"
}

# PUT /<bucket> signed with SigV4 by curl; 200 = created, 409 = already exists (ours).
create_bucket() {
  local code
  code="$(curl -s -m 10 -o "$TESTBED_DIR/bucket.out" -w '%{http_code}' -X PUT \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$MINIO_USER:$MINIO_PASSWORD" \
    "http://127.0.0.1:$MINIO_PORT/$BUCKET")" || die "creating bucket $BUCKET: curl failed"
  case "$code" in
    200) log "bucket $BUCKET created" ;;
    409) log "bucket $BUCKET exists" ;;
    *) cat "$TESTBED_DIR/bucket.out" >&2 || true; die "creating bucket $BUCKET: HTTP $code" ;;
  esac
}

write_env() {
  local tmp="$ENV_FILE.tmp.$$" bin
  bin="$(interop_bin 2>/dev/null || true)"
  {
    echo "WP_ETCD_ENDPOINTS=127.0.0.1:$ETCD_PORT"
    echo "WP_MINIO_ENDPOINT=http://127.0.0.1:$MINIO_PORT"
    echo "WP_MINIO_ACCESS_KEY=$MINIO_USER"
    echo "WP_MINIO_SECRET_KEY=$MINIO_PASSWORD"
    echo "WP_MINIO_BUCKET=$BUCKET"
    echo "WP_MINIO_REGION=us-east-1"
    echo "WP_TESTBED_DIR=$TESTBED_DIR"
    echo "WP_INTEROP_CONFIG=$TESTBED_DIR/interop.yaml"
    if [[ -n "$bin" && -x "$bin" ]]; then echo "WP_INTEROP_BIN=$bin"; fi
    # Server binaries, for tests that start their own etcd or MinIO (TLS, auth) beside the shared ones.
    if command -v etcd >/dev/null; then echo "WP_ETCD_BIN=$(command -v etcd)"; fi
    echo "WP_MINIO_BIN=$MINIO_BIN"
  } >"$tmp"
  mv -f "$tmp" "$ENV_FILE"
  render_config "$TESTBED_DIR/interop.yaml"
}

# Renders e2e/interop/interop.yaml.tmpl for this test bed. Optional second/third args override
# etcd.rootPath and minio.rootPath (to isolate runs).
render_config() {
  local out="$1" etcd_root="${2:-wp-interop}" minio_root="${3:-wp-interop}"
  sed -e "s|@ETCD_ENDPOINT@|127.0.0.1:$ETCD_PORT|g" \
      -e "s|@MINIO_HOST@|127.0.0.1|g" -e "s|@MINIO_PORT@|$MINIO_PORT|g" \
      -e "s|@MINIO_ACCESS_KEY@|$MINIO_USER|g" -e "s|@MINIO_SECRET_KEY@|$MINIO_PASSWORD|g" \
      -e "s|@MINIO_BUCKET@|$BUCKET|g" -e "s|@ETCD_ROOT@|$etcd_root|g" -e "s|@MINIO_ROOT@|$minio_root|g" \
      "$INTEROP_SRC/interop.yaml.tmpl" >"$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"
}

with_state_lock() {
  mkdir -p "$TESTBED_DIR"
  exec 7>"$TESTBED_DIR/.lock"
  flock -w "$WAIT_SECS" 7 || die "another testbed.sh start/stop holds $TESTBED_DIR/.lock"
}

cmd_start() {
  with_state_lock
  install_apt
  install_minio
  command -v etcd >/dev/null && command -v etcdctl >/dev/null || die "etcd/etcdctl not on PATH after install"
  mkdir -p "$DATA"
  start_etcd
  start_minio
  create_bucket
  write_env
  log "test bed up; env file: $ENV_FILE  (eval \"\$($0 env)\")"
}

stop_one() { # stop_one NAME EXE_SUBSTRING
  local name="$1" pid waited=0
  if pid="$(pid_alive "$name" "$2")"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && (( waited < 150 )); do sleep 0.1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not exit within 15s of SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      waited=0
      while kill -0 "$pid" 2>/dev/null && (( waited < 50 )); do sleep 0.1; waited=$((waited + 1)); done
      kill -0 "$pid" 2>/dev/null && die "$name (pid $pid) survived SIGKILL"
    fi
  fi
  rm -f "$TESTBED_DIR/$name.pid"
}

cmd_stop() {
  with_state_lock
  stop_one minio-trash minio-trash-cleaner
  stop_one minio minio
  stop_one etcd etcd
  rm -rf "$DATA/etcd" "$DATA/minio"
  rmdir "$DATA" 2>/dev/null || true
  rm -f "$ENV_FILE"
  log "test bed stopped, data removed"
}

cmd_status() {
  local ok=0 pid
  if pid="$(pid_alive etcd etcd)"; then
    if etcd_healthy; then log "etcd  pid $pid  127.0.0.1:$ETCD_PORT  healthy"; else log "etcd  pid $pid  UNHEALTHY"; ok=1; fi
  else log "etcd  not running"; ok=1; fi
  if pid="$(pid_alive minio minio)"; then
    if minio_healthy; then log "minio pid $pid  127.0.0.1:$MINIO_PORT  healthy"; else log "minio pid $pid  UNHEALTHY"; ok=1; fi
  else log "minio not running"; ok=1; fi
  [[ -f "$ENV_FILE" ]] && log "env file: $ENV_FILE"
  return "$ok"
}

cmd_env() {
  [[ -f "$ENV_FILE" ]] || die "no env file at $ENV_FILE: run '$0 start' first"
  local line bin
  while IFS= read -r line; do
    [[ -z "$line" || "$line" == WP_INTEROP_BIN=* ]] && continue
    printf 'export %s\n' "$line"
  done <"$ENV_FILE"
  # looked up now, so an `install` after `start` is picked up
  bin="$(interop_bin 2>/dev/null || true)"
  if [[ -n "$bin" && -x "$bin" ]]; then printf 'export WP_INTEROP_BIN=%s\n' "$bin"; fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status) cmd_status ;;
  render-config)
    # render-config OUT [ETCD_ROOT] [MINIO_ROOT]: write a woodpecker.yaml for this test bed
    [[ -n "${2:-}" ]] || die "usage: $0 render-config OUT.yaml [ETCD_ROOT] [MINIO_ROOT]"
    render_config "$2" "${3:-}" "${4:-}" ;;
  interop-bin) install_interop; interop_bin ;;
  *) die "usage: $0 {install|start|stop|env|status|render-config OUT [ETCD_ROOT] [MINIO_ROOT]|interop-bin}" ;;
esac
