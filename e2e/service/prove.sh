#!/usr/bin/env bash
# The service-mode acceptance run: upstream's Go client (wp-service) against a loopback LogStore cluster
# (upstream's server by default; WP_SERVER_BIN=... for ours). Needs the test bed up and its env exported:
#   scripts/testbed.sh install && scripts/testbed.sh start && eval "$(scripts/testbed.sh env)"
#   e2e/service/prove.sh [STEP...]
# Sets: no STEP = the default set below (write-read tail kill recover bench es5 rust-client); `cases` = every upstream
# failover/chaos case step (CASE_STEPS below, one 5-node cluster, es=3); `all` = default set then cases.
# Steps of the default set:
#   write-read   4 servers, es=3: 100,000 entries x 1 KiB written, read back from earliest, >= 3 segments
#   tail         reader tailing while a writer writes, opened at earliest and at latest (20,000 entries each)
#   kill         write --until-killed; kill -9 a node of the current segment's ensemble; writes must continue
#                in a later segment; SIGTERM the writer; verify every acknowledged entry; restart the node
#   recover      write --until-killed; kill -9 the WRITER; a new writer fences/recovers and appends; verify
#   bench        async appends: 1 KiB x 256 in flight, 64 KiB x 32 in flight (WP_PROVE_BENCH_SECS, default 20 s
#                each), and 1 KiB one at a time for the latency floor (half as long)
#   es5          6 servers, es=5: write-read 100,000 x 1 KiB, then the kill step with es=5
#   rust-client  our Rust client (WP_PROVE_EMBEDDED_BIN, default WP_SERVER_BIN) and the Go client on one cluster:
#                each reads the other's 3,000 entries (skipped when the binary has no client commands)
# Case steps (wp-service case, cases.go; each named after the upstream test it reproduces, 5 nodes, es=3; after
# each, cluster.sh restart-all brings killed/stopped nodes back; each bounded by WP_PROVE_CASE_SECS, default 240):
#   sealed                        TestDirectRead_SealedSegments_AfterClusterStop (+ our embedded `log read`)
#   case3-node-restart-rolls      Failover_Case3_NodeRestartTriggersSegmentRolling
#   case4-non-quorum-node-down    Failover_Case4_NonQuorumNodeFailure
#   case5-quorum-loss-recovery    Failover_Case5_QuorumLossAndRecovery
#   case6-full-cluster-restart    Failover_Case6_FullClusterRestartDurability
#   case7-rolling-restart         Failover_Case7_RollingRestart
#   case8-sequential-rolls        Failover_Case8_MultipleSequentialRollings
#   case9-reader-node-failover    Failover_Case9_ReaderNodeFailover
#   case10-partial-replication    Failover_Case10_PartialReplicationDuringCrash
#   case11-fence-empty-node       Failover_Case11_FenceWithEmptyNode
#   case12-fence-wiped-and-dead   Failover_Case12_LACMiscalculationAfterNodeSwap
#   case13-fence-dead-then-wiped  Failover_Case13_EOFOnNonFirstNodeAfterDeadSkip
#   case14-reader-wiped-replica   Failover_Case14_ReaderFallbackAfterEOF
#   case15-restart-data-loss      Failover_Case15_ClusterRestartWithDataLoss
#   case16-two-replicas-lost      Failover_Case16_ReadAfterTwoReplicasLost (+ compaction from the survivor)
#   chaos-competing-writers       Chaos_CompetingWritersFencing (+ a third writer taking over from a live one)
#   chaos-concurrent-writers      Chaos_ConcurrentWriterAttempts
#   chaos-fencing-node-failure    Chaos_FencingDuringNodeFailure
#   chaos-restart-fence-lost      Chaos_AllNodesRestartFenceMarksLost_ConcurrentWriters
#   chaos-finalized-survives      Chaos_FinalizedSegmentSurvivesRestart_OldWriterRejected
# The sealed step also reads with our embedded client: WP_PROVE_EMBEDDED_BIN (default WP_SERVER_BIN when it has
# `log read`, i.e. ours; skipped for upstream's server).
# Results: $WP_PROVE_OUT (default /tmp/wp-service-prove/<run>): <step>.json (wp-service summaries), .err, RSS.
# Prints "PASS <step>" / "FAIL <step>: why" on stderr, then one line on stdout: "service: N passed, M failed".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER="$HERE/cluster.sh"
RUN="p$(date +%s)"
OUT="${WP_PROVE_OUT:-/tmp/wp-service-prove/$RUN}"
BENCH_SECS="${WP_PROVE_BENCH_SECS:-20}"
ENTRIES="${WP_PROVE_ENTRIES:-100000}"
WAIT="${WP_PROVE_WAIT_SECS:-120}"
mkdir -p "$OUT"
export WP_SERVICE_ETCD_ROOT="wps-$RUN" WP_SERVICE_MINIO_ROOT="wps-$RUN"
export WP_CLUSTER_DIR="${WP_CLUSTER_DIR:-/tmp/wp-service-cluster}"

log() { printf '[prove] %s\n' "$*" >&2; }
die() { printf '[prove] ERROR: %s\n' "$*" >&2; exit 1; }
PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); log "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); log "FAIL $1"; }

for v in WP_ETCD_ENDPOINTS WP_MINIO_ENDPOINT; do
  [[ -n "${!v:-}" ]] || die "$v is not set: eval \"\$(scripts/testbed.sh env)\" first"
done
WPS="$("$HERE/build.sh" path)"
if [[ -z "${WP_SERVER_BIN:-}" ]]; then WP_SERVER_BIN="$("$HERE/upstream-server.sh" path)"; export WP_SERVER_BIN; fi
log "run $RUN: server $WP_SERVER_BIN, driver $WPS, results in $OUT"

json_ok() { [[ -s "$1" ]] && grep -q '"ok":true' "$1"; }
json_get() { # json_get FILE EXPR  (python expression over d)
  python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(eval(sys.argv[2]))' "$1" "$2"
}

# wps NAME ARGS... : run a wp-service subcommand, summary in $OUT/NAME.json, stderr in $OUT/NAME.err
wps() {
  local name="$1"; shift
  log "wp-service $*"
  "$WPS" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" || true
  if json_ok "$OUT/$name.json"; then return 0; fi
  tail -5 "$OUT/$name.err" >&2 || true
  cat "$OUT/$name.json" >&2 || true
  return 1
}

cluster_up() { # cluster_up N
  "$CLUSTER" stop >/dev/null 2>&1 || true
  "$CLUSTER" start "$1"
  eval "$("$CLUSTER" env)"
}

rss_snapshot() { "$CLUSTER" rss >"$OUT/rss-$1.jsonl" || true; }

lines() { if [[ -f "$1" ]]; then wc -l <"$1"; else echo 0; fi; }
# acks recorded in segments > SEG
acks_after_seg() { [[ -f "$1" ]] || { echo 0; return; }; awk -v s="$2" 'match($0, /"seg":[0-9]+/) { if (substr($0, RSTART + 6, RLENGTH - 6) + 0 > s) n++ } END { print n + 0 }' "$1"; }
last_seg() { tail -n1 "$1" | sed -E 's/.*"seg":([0-9]+).*/\1/'; }

wait_until() { # wait_until DESC SECS CMD... (polls CMD every 0.2 s)
  local desc="$1" secs="$2" deadline; shift 2
  deadline=$((SECONDS + secs))
  until "$@"; do
    (( SECONDS < deadline )) || { log "timed out after ${secs}s waiting for: $desc"; return 1; }
    sleep 0.2
  done
}
have_lines() { (( $(lines "$1") >= $2 )); }
have_acks_after() { (( $(acks_after_seg "$1" "$2") >= $3 )); }

stop_writer() { # stop_writer PID NAME: SIGTERM, bounded wait; returns the writer's exit status
  kill -TERM "$1" 2>/dev/null || true
  local deadline=$((SECONDS + WAIT))
  while kill -0 "$1" 2>/dev/null; do
    if (( SECONDS >= deadline )); then log "$2 did not exit ${WAIT}s after SIGTERM; killing it"; kill -KILL "$1" 2>/dev/null || true; fi
    sleep 0.2
  done
  wait "$1" 2>/dev/null
}

step_write_read() { # step_write_read NAME REPLICAS
  local name; name="$(uniq_name "$1")"
  if wps "$name" write-read --log "wr-$name-$RUN" --entries "$ENTRIES" --payload-bytes 1024 --replicas "$2"; then
    pass "$name: $(json_get "$OUT/$name.json" '"%d entries in %d segments, write %.1f MiB/s (%d entries/s, p50 %.1f ms, p99 %.1f ms), read %.1f MiB/s" % (d["acked"], len(d["segments"]), d["write_mib_s"], d["write_entries_s"], d["append_latency_ms"]["p50"], d["append_latency_ms"]["p99"], d["read_mib_s"])')"
  else fail "$1"; fi
}

step_tail() {
  local from
  for from in earliest latest; do
    if wps "tail-$from" tail --log "tail-$from-$RUN" --entries 20000 --from "$from" --roll-bytes 1000000; then
      pass "tail-$from: $(json_get "$OUT/tail-$from.json" '"%d entries over %d segments, submit-to-read p50 %.1f ms p99 %.1f ms" % (d["read_entries"], len(d["segments"]), d["submit_to_read_ms"]["p50"], d["submit_to_read_ms"]["p99"])')"
    else fail "tail-$from"; fi
  done
}

# a step given twice (prove.sh kill kill) gets NAME, NAME-2, ...: its own log and files
uniq_name() { local n="$1" k=2; while [[ -e "$OUT/$n.json" || -e "$OUT/$n.acked" ]]; do n="$1-$k"; k=$((k + 1)); done; echo "$n"; }

step_kill() { # step_kill NAME REPLICAS
  local name rep="$2" lg acked wpid cur ep victim
  name="$(uniq_name "$1")"; lg="$name-$RUN"; acked="$OUT/$name.acked"
  log "$name: writer until killed (es=$rep)"
  "$WPS" write --log "$lg" --until-killed --acked "$acked" --payload-bytes 512 --roll-bytes 4000000 --replicas "$rep" \
    >"$OUT/$name-write.json" 2>"$OUT/$name-write.err" &
  wpid=$!
  if ! wait_until "5000 acknowledged entries" "$WAIT" have_lines "$acked" 5000; then
    stop_writer "$wpid" writer || true; fail "$name: writer made no progress"; return
  fi
  cur="$(last_seg "$acked")"
  "$WPS" segments --log "$lg" >"$OUT/$name-segments-before.json" 2>/dev/null || true
  ep="$(json_get "$OUT/$name-segments-before.json" "[s for s in d['segments'] if s['seg'] == $cur][0]['nodes'][0]")"
  victim="$("$CLUSTER" name-of "$ep")"
  log "$name: kill -9 $victim ($ep), a node of segment $cur's ensemble, at $(lines "$acked") acks"
  "$CLUSTER" kill "$victim"
  if ! wait_until "5000 acks in a segment after $cur" "$WAIT" have_acks_after "$acked" "$cur" 5000; then
    stop_writer "$wpid" writer || true; "$CLUSTER" restart "$victim" || true
    fail "$name: writes did not continue after killing $victim"; return
  fi
  local rc=0
  stop_writer "$wpid" writer || rc=$?
  "$WPS" segments --log "$lg" >"$OUT/$name-segments-after.json" 2>/dev/null || true
  if (( rc != 0 )) || ! json_ok "$OUT/$name-write.json"; then
    tail -5 "$OUT/$name-write.err" >&2; fail "$name: writer exited $rc"; "$CLUSTER" restart "$victim" || true; return
  fi
  if wps "$name-verify" verify --log "$lg" --acked "$acked" --replicas "$rep"; then
    pass "$name: killed $victim in segment $cur; $(json_get "$OUT/$name-write.json" '"%d acked (%d failed, %d of them 1201 segment rolling; %d writer reopens) over %d segments, max ack gap %d ms" % (d["acked"], d["failed"], d["failed_segment_rolling"], d["reopens"], len(d["segments"]), d["max_ack_gap_ms"])'); verify read $(json_get "$OUT/$name-verify.json" 'd["read_entries"]') entries, all acknowledged ones in order"
  else fail "$name: verify"; fi
  "$CLUSTER" restart "$victim"
}

step_recover() {
  local name acked lg wpid
  name="$(uniq_name recover)"; acked="$OUT/$name.acked"; lg="$name-$RUN"
  "$WPS" write --log "$lg" --until-killed --acked "$acked" --payload-bytes 512 --roll-bytes 4000000 \
    >"$OUT/$name-write.json" 2>"$OUT/$name-write.err" &
  wpid=$!
  if ! wait_until "20000 acknowledged entries" "$WAIT" have_lines "$acked" 20000; then
    stop_writer "$wpid" writer || true; fail "$name: writer made no progress"; return
  fi
  kill -KILL "$wpid"; wait "$wpid" 2>/dev/null || true
  log "$name: writer killed with SIGKILL at $(lines "$acked") recorded acks"
  if wps "$name" recover --log "$lg" --acked "$acked" --entries 1000; then
    pass "$name: $(json_get "$OUT/$name.json" '"states before %s -> after opening the new writer %s; %d new entries in segments %s; verify found all %d acknowledged (+%d unrecorded)" % (d["segment_states_before"], d["segment_states_after_open"], d["new_acked"], d["new_segments"], d["acked_found"], d["unacked_present"])')"
  else fail "$name"; fi
}

step_bench() {
  local spec name size inflight secs
  # NAME:PAYLOAD:INFLIGHT:SECS -- throughput at 1 KiB and 64 KiB, and the latency floor of one append at a time
  for spec in "bench-1024:1024:256:$BENCH_SECS" "bench-65536:65536:32:$BENCH_SECS" "bench-1024-serial:1024:1:$(( (BENCH_SECS + 1) / 2 ))"; do
    IFS=: read -r name size inflight secs <<<"$spec"
    name="$(uniq_name "$name")"
    if wps "$name" bench --payload-bytes "$size" --inflight "$inflight" --duration "${secs}s"; then
      pass "$name: $(json_get "$OUT/$name.json" '"%.1f MiB/s, %d entries/s, append latency p50 %.1f ms p99 %.1f ms (inflight %d)" % (d["mib_s"], d["entries_s"], d["append_latency_ms"]["p50"], d["append_latency_ms"]["p99"], d["inflight"])')"
    else fail "$name"; fi
    rss_snapshot "after-$name"
  done
}

# Our Rust client and upstream's Go client on one cluster, with the same woodpecker.yaml: each reads what the
# other wrote, every entry in order with its payload and properties (issue 12).
step_rust_client() {
  local bin="${WP_PROVE_EMBEDDED_BIN:-$WP_SERVER_BIN}" cfg="$OUT/rust-client.yaml" n=3000 go2rs rs2go
  if ! "$bin" log --help >/dev/null 2>&1; then log "SKIP rust-client: $bin has no client commands"; return; fi
  go2rs="go2rs-$RUN"; rs2go="rs2go-$RUN"
  wps rust-client-config render-config --out "$cfg" || { fail "rust-client: render-config"; return; }
  if ! wps rust-client-go-write write --log "$go2rs" --entries "$n" --acked "$OUT/go2rs.acked" --payload-bytes 300; then
    fail "rust-client: the Go client's writes"; return
  fi
  if ! "$bin" --config "$cfg" log read "$go2rs" --format json >"$OUT/go2rs.jsonl" 2>"$OUT/go2rs.err"; then
    tail -5 "$OUT/go2rs.err" >&2; fail "rust-client: our client reading the Go client's log"; return
  fi
  if ! python3 - "$OUT/go2rs.acked" "$OUT/go2rs.jsonl" >"$OUT/go2rs.check" 2>&1 <<'PY'
import base64, json, sys
acked = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
read = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
assert len(read) == len(acked), f"read {len(read)} entries, the Go client acknowledged {len(acked)}"
for a, r in zip(acked, read):
    where = f"entry k={a['i']} acknowledged at {a['seg']}/{a['entry']}"
    assert (r["segment"], r["entry"]) == (a["seg"], a["entry"]), f"{where} read at {r['segment']}/{r['entry']}"
    assert r["properties"] == {"k": str(a["i"]), "src": "wp-service"}, f"{where}: properties {r['properties']}"
    p = r["payload"].encode() if r["payload_encoding"] == "utf8" else base64.b64decode(r["payload"])
    assert p.startswith(f"wps-{a['i']}|".encode()) and len(p) == 300, f"{where}: payload {p[:24]!r} ({len(p)} bytes)"
print(f"{len(read)} entries read in order with their payloads and properties")
PY
  then cat "$OUT/go2rs.check" >&2; fail "rust-client: the Go client's entries as our client read them"; return; fi
  if ! "$bin" --config "$cfg" log write "$rs2go" --create --count "$n" --payload-size 300 -p src=rust \
      >"$OUT/rs2go-write.txt" 2>"$OUT/rs2go-write.err"; then
    tail -5 "$OUT/rs2go-write.err" >&2; fail "rust-client: our client's writes"; return
  fi
  if wps rust-client-go-read read-foreign --log "$rs2go" --entries "$n" --payload-prefix entry-; then
    pass "rust-client: our client read the Go client's $n entries ($(cat "$OUT/go2rs.check")); the Go client read our $n entries in $(json_get "$OUT/rust-client-go-read.json" 'len(d["read_segments"])') segment(s)"
  else fail "rust-client: the Go client reading our client's log"; fi
}

CASE_SECS="${WP_PROVE_CASE_SECS:-240}"
CASE_STEPS=(sealed case3-node-restart-rolls case4-non-quorum-node-down case5-quorum-loss-recovery
  case6-full-cluster-restart case7-rolling-restart case8-sequential-rolls case9-reader-node-failover
  case10-partial-replication case11-fence-empty-node case12-fence-wiped-and-dead case13-fence-dead-then-wiped
  case14-reader-wiped-replica case15-restart-data-loss case16-two-replicas-lost chaos-competing-writers
  chaos-concurrent-writers chaos-fencing-node-failure chaos-restart-fence-lost chaos-finalized-survives)
DEFAULT_STEPS=(write-read tail kill recover bench es5 rust-client)

if [[ -z "${WP_PROVE_EMBEDDED_BIN+x}" ]]; then
  WP_PROVE_EMBEDDED_BIN=""
  if "$WP_SERVER_BIN" log read --help >/dev/null 2>&1; then WP_PROVE_EMBEDDED_BIN="$WP_SERVER_BIN"; fi
fi

# step_case CASE [wp-service case flags]: one upstream case (cases.go) on the running cluster; afterwards every
# node it killed or stopped is started again, so the next case finds the whole cluster
step_case() {
  local cs="$1" name rc=0; shift
  name="$(uniq_name "$cs")"
  log "$name: wp-service case --name $cs $*"
  timeout -k 10 "$CASE_SECS" "$WPS" case --name "$cs" --cluster "$CLUSTER" --log "$name-$RUN" --timeout "${CASE_SECS}s" "$@" \
    >"$OUT/$name.json" 2>"$OUT/$name.err" || rc=$?
  if (( rc == 0 )) && json_ok "$OUT/$name.json"; then
    pass "$name: $(json_get "$OUT/$name.json" 'd["summary"]') ($(json_get "$OUT/$name.json" 'd["secs"]') s)"
  else
    tail -5 "$OUT/$name.err" >&2 || true
    if [[ -s "$OUT/$name.json" ]]; then
      fail "$name: $(json_get "$OUT/$name.json" '"; ".join(d.get("failures", []))[:1500]')"
    elif (( rc == 124 || rc == 137 )); then fail "$name: timed out after ${CASE_SECS}s"
    else fail "$name: wp-service exited $rc without a summary"; fi
  fi
  "$CLUSTER" restart-all >/dev/null 2>"$OUT/$name-restart-all.err" || { log "restart-all after $name failed:"; tail -5 "$OUT/$name-restart-all.err" >&2; cluster_up 5; }
  eval "$("$CLUSTER" env)"
}

run_case() {
  case "$1" in
    sealed)
      local emb=()
      [[ -n "$WP_PROVE_EMBEDDED_BIN" ]] && emb=(--embedded-bin "$WP_PROVE_EMBEDDED_BIN")
      step_case sealed --entries 1500 --payload-bytes 512 --roll-bytes 200000 "${emb[@]}" ;;
    case6-full-cluster-restart) step_case "$1" --entries 2000 --roll-bytes 300000 ;;
    case9-reader-node-failover) step_case "$1" --entries 2000 ;;
    case7-rolling-restart) step_case "$1" --entries 5 ;;
    *) step_case "$1" ;;
  esac
}

STEPS=()
for st in "$@"; do
  case "$st" in
    cases) STEPS+=("${CASE_STEPS[@]}") ;;
    all) STEPS+=("${DEFAULT_STEPS[@]}" "${CASE_STEPS[@]}") ;;
    *) STEPS+=("$st") ;;
  esac
done
(( ${#STEPS[@]} > 0 )) || STEPS=("${DEFAULT_STEPS[@]}")
up4=false up5=false
for st in "${STEPS[@]}"; do
  if [[ " ${CASE_STEPS[*]} " == *" $st "* ]]; then
    if ! $up5; then cluster_up 5; up5=true; up4=false; fi
    run_case "$st"
    continue
  fi
  up5=false
  case "$st" in
    write-read|tail|kill|recover|bench|rust-client)
      if ! $up4; then cluster_up 4; up4=true; fi
      case "$st" in
        write-read) step_write_read write-read 3; rss_snapshot after-write-read ;;
        rust-client) step_rust_client ;;
        tail) step_tail ;;
        kill) step_kill kill 3 ;;
        recover) step_recover ;;
        bench) step_bench ;;
      esac ;;
    es5)
      cluster_up 6; up4=false; up5=false
      step_write_read es5-write-read 5
      step_kill es5-kill 5
      rss_snapshot after-es5 ;;
    *) die "unknown step $st" ;;
  esac
done
"$CLUSTER" stop || true
log "results in $OUT"
echo "service: $PASSED passed, $FAILED failed"
(( FAILED == 0 ))
