#!/usr/bin/env bash
# A loopback cluster of Woodpecker LogStore servers for the service-mode acceptance test.
# The binary is upstream's v0.1.35 server by default and anything with the same command-line shape
# otherwise (our Rust `woodpecker server` takes the same flags: /work/shared/CONTRACT.md).
#
#   e2e/service/cluster.sh start N         # fresh cluster of N nodes node0..node<N-1>; waits until each is healthy
#                                          # and sees all N members in gossip
#   e2e/service/cluster.sh stop            # SIGTERM all, wait (bounded), SIGKILL stragglers; keeps dirs and logs
#   e2e/service/cluster.sh status          # one line per node; exit 1 unless every node is up and healthy
#   e2e/service/cluster.sh kill NAME [SIG] # signal one node (default KILL) and wait until it is gone
#   e2e/service/cluster.sh restart NAME    # start a stopped/killed node again (same ports, name, data dir), wait healthy
#   e2e/service/cluster.sh restart-all     # start every stopped/killed node again (all launched at once), wait until
#                                          # each is healthy and sees all N members; no-op when all run
#   e2e/service/cluster.sh wipe NAME       # delete a stopped node's data dir (data-loss scenarios)
#   e2e/service/cluster.sh seeds           # client seeds: comma list of 127.0.0.1:<servicePort>
#   e2e/service/cluster.sh env             # `export WP_SERVICE_SEEDS=...` etc., for eval
#   e2e/service/cluster.sh nodes           # names of all nodes, one a line
#   e2e/service/cluster.sh name-of HOST:PORT  # node name of a service endpoint (as stored in segment metadata)
#   e2e/service/cluster.sh rss             # JSON line per live node: pid, VmRSS and VmHWM in KiB
#
# Needs the test bed env (eval "$(scripts/testbed.sh env)"): WP_ETCD_ENDPOINTS, WP_MINIO_ENDPOINT,
# WP_MINIO_ACCESS_KEY, WP_MINIO_SECRET_KEY, WP_MINIO_BUCKET, WP_MINIO_REGION.
# Other env (defaults in brackets):
#   WP_SERVER_BIN        [upstream's, built by upstream-server.sh]  server binary; run as `$WP_SERVER_BIN server <flags>`
#   WP_CLUSTER_DIR       [/tmp/wp-service-cluster]  state: <node>/{data/,woodpecker.yaml,node.log,pid}, cluster.env
#   WP_CLUSTER_BASE_PORT [18180]  node i: service port BASE+i, gossip BASE+100+i, admin HTTP (METRICS_PORT) BASE+200+i
#   WP_CLUSTER_WAIT_SECS [90]     bound for every readiness / exit wait
#   WP_CLUSTER_NAME      [wp-e2e] --cluster
#   WP_SERVER_LOG_LEVEL  [info]   log.level in the servers' woodpecker.yaml
#   WP_SERVER_EXTRA_ARGS []       appended to every server command line
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${WP_CLUSTER_DIR:-/tmp/wp-service-cluster}"
WAIT_SECS="${WP_CLUSTER_WAIT_SECS:-90}"
STATE="$DIR/cluster.env"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

need_bed_env() {
  local v
  for v in WP_ETCD_ENDPOINTS WP_MINIO_ENDPOINT WP_MINIO_ACCESS_KEY WP_MINIO_SECRET_KEY WP_MINIO_BUCKET; do
    [[ -n "${!v:-}" ]] || die "$v is not set: eval \"\$(scripts/testbed.sh env)\" first"
  done
}

load_state() {
  [[ -f "$STATE" ]] || die "no cluster in $DIR (run: $0 start N)"
  # shellcheck disable=SC1090
  source "$STATE"
}

node_index() { # node_index NAME -> i
  [[ "$1" =~ ^node([0-9]+)$ ]] || die "bad node name '$1' (want node<i>)"
  local i="${BASH_REMATCH[1]}"
  (( i < NODES )) || die "no node $1 in a cluster of $NODES"
  echo "$i"
}
svc_port() { echo $((BASE_PORT + $1)); }
gossip_port() { echo $((BASE_PORT + 100 + $1)); }
admin_port() { echo $((BASE_PORT + 200 + $1)); }

all_seeds() { # all_seeds service|gossip
  local i out=()
  for ((i = 0; i < NODES; i++)); do
    if [[ "$1" == service ]]; then out+=("127.0.0.1:$(svc_port "$i")"); else out+=("127.0.0.1:$(gossip_port "$i")"); fi
  done
  local IFS=,; echo "${out[*]}"
}

# live_pid NAME -> prints the pid if the recorded process is alive and is that node's server
live_pid() {
  local f="$DIR/$1/pid" pid cmd
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmd" == *" server "*"--node-name $1 "* ]] || return 1
  echo "$pid"
}

port_in_use() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

# Upstream's node YAML: the shared template with this bed's etcd/MinIO and the node's data dir.
render_node_config() { # render_node_config OUT DATA_DIR
  local hostport="${WP_MINIO_ENDPOINT#*://}" etcd
  etcd="$(echo "$WP_ETCD_ENDPOINTS" | sed 's/,/, /g')"
  sed -e "s|@ETCD_ENDPOINTS@|$etcd|g" -e "s|@ETCD_ROOT@|wp-service-server|g" \
      -e "s|@MINIO_HOST@|${hostport%:*}|g" -e "s|@MINIO_PORT@|${hostport##*:}|g" \
      -e "s|@MINIO_ACCESS_KEY@|$WP_MINIO_ACCESS_KEY|g" -e "s|@MINIO_SECRET_KEY@|$WP_MINIO_SECRET_KEY|g" \
      -e "s|@MINIO_BUCKET@|$WP_MINIO_BUCKET|g" -e "s|@MINIO_ROOT@|wp-service|g" \
      -e "s|@MINIO_REGION@|${WP_MINIO_REGION:-us-east-1}|g" \
      -e "s|@SERVICE_SEEDS@|$(all_seeds service | sed 's/,/, /g')|g" -e "s|@REPLICAS@|3|g" \
      -e "s|@ROLL_MAX_BYTES@|256000000|g" -e "s|@DATA_DIR@|$2|g" \
      -e "s|@LOG_LEVEL@|${WP_SERVER_LOG_LEVEL:-info}|g" \
      "$HERE/woodpecker.yaml.tmpl" >"$1.tmp.$$"
  mv -f "$1.tmp.$$" "$1"
}

launch() { # launch I
  local i="$1" name="node$1" nd="$DIR/node$1"
  local sp gp ap
  sp="$(svc_port "$i")"; gp="$(gossip_port "$i")"; ap="$(admin_port "$i")"
  for p in "$sp" "$gp" "$ap"; do port_in_use "$p" && die "port $p (for $name) is busy; stop whatever holds it or set WP_CLUSTER_BASE_PORT"; done
  mkdir -p "$nd/data"
  # rendered once by `start`; a restart reuses it (and so needs no test bed env)
  [[ -f "$nd/woodpecker.yaml" ]] || { need_bed_env; render_node_config "$nd/woodpecker.yaml" "$nd/data"; }
  local -a args=(server
    --service-port "$sp" --gossip-port "$gp" --node-name "$name"
    --data-dir "$nd/data" --config "$nd/woodpecker.yaml"
    --seeds "$(all_seeds gossip)"
    --advertise-gossip-addr "127.0.0.1:$gp" --advertise-service-addr "127.0.0.1:$sp"
    --cluster "$CLUSTER_NAME" --region local --availability-zone "az-$i" --resource-group "rg-$i")
  # shellcheck disable=SC2206
  [[ -n "${EXTRA_ARGS:-}" ]] && args+=($EXTRA_ARGS)
  printf '%q ' "METRICS_PORT=$ap" "$SERVER_BIN" "${args[@]}" >"$nd/cmdline"; echo >>"$nd/cmdline"
  echo "=== $(date -u +%FT%TZ) start: $(cat "$nd/cmdline")" >>"$nd/node.log"
  METRICS_PORT="$ap" setsid "$SERVER_BIN" "${args[@]}" </dev/null >>"$nd/node.log" 2>&1 &
  echo $! >"$nd/pid"
  log "$name: pid $! service 127.0.0.1:$sp gossip :$gp admin :$ap (log $nd/node.log)"
}

member_count() { # member_count I -> members this node sees (from GET /admin/node/status), or nothing
  curl -sf -m 2 "http://127.0.0.1:$(admin_port "$1")/admin/node/status" 2>/dev/null \
    | grep -o '"member_count": *[0-9]*' | grep -o '[0-9]*$' || true
}

healthz_ok() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$(admin_port "$1")/healthz"; }
service_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$(svc_port "$1")") 2>/dev/null; }

wait_healthy() { # wait_healthy I MIN_MEMBERS
  local i="$1" want="$2" name="node$1" deadline=$((SECONDS + WAIT_SECS)) stage="process" m
  while :; do
    if ! live_pid "$name" >/dev/null; then
      log "last lines of $DIR/$name/node.log:"; tail -25 "$DIR/$name/node.log" >&2 || true
      die "$name exited during startup"
    fi
    if healthz_ok "$i"; then
      stage="service port"
      if service_listening "$i"; then
        stage="gossip (want >= $want members)"
        m="$(member_count "$i")"
        if [[ -n "$m" ]] && (( m >= want )); then return 0; fi
        [[ -n "$m" ]] && stage="gossip ($m of >= $want members)"
      fi
    else
      stage="GET /healthz"
    fi
    if (( SECONDS >= deadline )); then
      log "last lines of $DIR/$name/node.log:"; tail -25 "$DIR/$name/node.log" >&2 || true
      die "$name not ready after ${WAIT_SECS}s (waiting for: $stage)"
    fi
    sleep 0.2
  done
}

live_count() {
  local i n=0
  for ((i = 0; i < NODES; i++)); do live_pid "node$i" >/dev/null && n=$((n + 1)); done
  echo "$n"
}

wait_gone() { # wait_gone NAME PID
  local deadline=$((SECONDS + WAIT_SECS))
  while kill -0 "$2" 2>/dev/null; do
    # a zombie (our own child) is gone for our purposes
    [[ "$(awk '{print $3}' "/proc/$2/stat" 2>/dev/null)" == Z ]] && break
    (( SECONDS < deadline )) || return 1
    sleep 0.1
  done
}

cmd_start() {
  local n="${1:-}"
  [[ "$n" =~ ^[0-9]+$ ]] && (( n >= 1 )) || die "usage: $0 start N"
  need_bed_env
  if [[ -f "$STATE" ]]; then
    # shellcheck disable=SC1090
    source "$STATE"
    (( $(live_count) == 0 )) || die "a cluster is running in $DIR ($(live_count) nodes); run: $0 stop"
  fi
  local bin="${WP_SERVER_BIN:-}"
  if [[ -z "$bin" ]]; then bin="$("$HERE/upstream-server.sh" path)"; fi
  [[ -x "$bin" ]] || die "server binary $bin is not executable"
  rm -rf "$DIR"; mkdir -p "$DIR"
  {
    printf 'NODES=%q\n' "$n"
    printf 'BASE_PORT=%q\n' "${WP_CLUSTER_BASE_PORT:-18180}"
    printf 'SERVER_BIN=%q\n' "$bin"
    printf 'CLUSTER_NAME=%q\n' "${WP_CLUSTER_NAME:-wp-e2e}"
    printf 'EXTRA_ARGS=%q\n' "${WP_SERVER_EXTRA_ARGS:-}"
  } >"$STATE"
  load_state
  log "starting $n nodes of $SERVER_BIN in $DIR"
  local i t0=$SECONDS
  for ((i = 0; i < n; i++)); do launch "$i"; done
  for ((i = 0; i < n; i++)); do wait_healthy "$i" "$n"; done
  log "cluster up: $n nodes healthy, each sees $n members ($((SECONDS - t0))s); client seeds: $(all_seeds service)"
}

cmd_stop() {
  [[ -f "$STATE" ]] || { log "no cluster in $DIR"; return 0; }
  load_state
  local i pid pids=() names=()
  for ((i = 0; i < NODES; i++)); do
    if pid="$(live_pid "node$i")"; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); names+=("node$i"); fi
  done
  for i in "${!pids[@]}"; do
    if ! wait_gone "${names[$i]}" "${pids[$i]}"; then
      log "${names[$i]} (pid ${pids[$i]}) did not exit within ${WAIT_SECS}s of SIGTERM; sending SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
      wait_gone "${names[$i]}" "${pids[$i]}" || die "${names[$i]} (pid ${pids[$i]}) survived SIGKILL"
    fi
    rm -f "$DIR/${names[$i]}/pid"
  done
  log "stopped ${#pids[@]} node(s); logs kept under $DIR/node*/node.log"
}

cmd_status() {
  load_state
  local i pid ok=0 m h rss
  for ((i = 0; i < NODES; i++)); do
    if pid="$(live_pid "node$i")"; then
      if healthz_ok "$i"; then h=healthy; else h=UNHEALTHY; ok=1; fi
      m="$(member_count "$i")"
      rss="$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || true)"
      log "node$i pid $pid service 127.0.0.1:$(svc_port "$i") $h members=${m:-?} rss=${rss:-?}KiB"
    else
      log "node$i not running"; ok=1
    fi
  done
  return "$ok"
}

cmd_kill() {
  load_state
  local name="${1:-}" sig="${2:-KILL}" pid
  [[ -n "$name" ]] || die "usage: $0 kill NAME [SIGNAL]"
  node_index "$name" >/dev/null
  pid="$(live_pid "$name")" || die "$name is not running"
  kill -"$sig" "$pid" || die "kill -$sig $pid failed"
  wait_gone "$name" "$pid" || die "$name (pid $pid) still alive ${WAIT_SECS}s after SIG$sig"
  rm -f "$DIR/$name/pid"
  echo "=== $(date -u +%FT%TZ) killed with SIG$sig by cluster.sh" >>"$DIR/$name/node.log"
  log "$name (pid $pid) gone after SIG$sig"
}

cmd_restart() {
  load_state
  local name="${1:-}" i
  [[ -n "$name" ]] || die "usage: $0 restart NAME"
  i="$(node_index "$name")"
  live_pid "$name" >/dev/null && die "$name is running (kill it first)"
  launch "$i"
  wait_healthy "$i" "$(live_count)"
  log "$name back: healthy, sees $(member_count "$i") members"
}

cmd_restart_all() {
  load_state
  local i started=()
  for ((i = 0; i < NODES; i++)); do
    live_pid "node$i" >/dev/null && continue
    launch "$i"; started+=("$i")
  done
  for ((i = 0; i < NODES; i++)); do wait_healthy "$i" "$NODES"; done
  log "restart-all: started ${#started[@]} node(s) (${started[*]:-none}); all $NODES healthy, each sees $NODES members"
}

cmd_wipe() {
  load_state
  local name="${1:-}"
  [[ -n "$name" ]] || die "usage: $0 wipe NAME"
  node_index "$name" >/dev/null
  live_pid "$name" >/dev/null && die "$name is running (kill it first)"
  rm -rf "$DIR/$name/data"
  log "$name: data dir wiped"
}

cmd_rss() {
  load_state
  local i pid rss hwm
  for ((i = 0; i < NODES; i++)); do
    pid="$(live_pid "node$i")" || continue
    rss="$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")"; hwm="$(awk '/^VmHWM/{print $2}' "/proc/$pid/status")"
    printf '{"node":"node%d","pid":%d,"rss_kib":%d,"hwm_kib":%d}\n' "$i" "$pid" "$rss" "$hwm"
  done
}

case "${1:-}" in
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill) cmd_kill "${2:-}" "${3:-KILL}" ;;
  restart) cmd_restart "${2:-}" ;;
  restart-all) cmd_restart_all ;;
  wipe) cmd_wipe "${2:-}" ;;
  seeds) load_state; all_seeds service ;;
  env) load_state; printf 'export WP_SERVICE_SEEDS=%s\nexport WP_CLUSTER_DIR=%s\n' "$(all_seeds service)" "$DIR" ;;
  nodes) load_state; for ((i = 0; i < NODES; i++)); do echo "node$i"; done ;;
  rss) cmd_rss ;;
  name-of)
    load_state
    p="${2:-}"; p="${p##*:}"
    [[ "$p" =~ ^[0-9]+$ ]] && (( p >= BASE_PORT && p < BASE_PORT + NODES )) || die "no node has service endpoint '${2:-}'"
    echo "node$((p - BASE_PORT))" ;;
  *) die "usage: $0 {start N|stop|status|kill NAME [SIG]|restart NAME|restart-all|wipe NAME|seeds|env|nodes|rss|name-of HOST:PORT}" ;;
esac
