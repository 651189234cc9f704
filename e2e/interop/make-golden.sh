#!/usr/bin/env bash
# Regenerates e2e/interop/golden/ from upstream Woodpecker (v0.1.35, embedded client, minio storage)
# against a PRIVATE test bed (own ports, own state dir), so it never disturbs a shared one.
#
#   e2e/interop/make-golden.sh [case...]   # default: all of small n1000 crashed open compacted shapes
#
# Each case: write N entries with wp-interop, read them back (--verify), dump every etcd key and
# every object the run created. Values that embed time, UUIDs or leases differ between runs;
# the structure and codecs do not.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
TB="$REPO_ROOT/scripts/testbed.sh"
OUT="${GOLDEN_OUT:-$HERE/golden}"

export TESTBED_DIR="${GOLDEN_TESTBED_DIR:-/tmp/woodpecker-golden-testbed}"
export WP_TESTBED_DATA="${GOLDEN_TESTBED_DATA:-/dev/shm/woodpecker-golden-testbed}"
export WP_TESTBED_ETCD_PORT="${GOLDEN_ETCD_PORT:-27390}"
export WP_TESTBED_ETCD_PEER_PORT="${GOLDEN_ETCD_PEER_PORT:-27391}"
export WP_TESTBED_MINIO_PORT="${GOLDEN_MINIO_PORT:-27392}"
export WP_TESTBED_MINIO_CONSOLE_PORT="${GOLDEN_MINIO_CONSOLE_PORT:-27393}"
export WP_TESTBED_BUCKET=woodpecker

log() { printf '[make-golden] %s\n' "$*" >&2; }
die() { printf '[make-golden] ERROR: %s\n' "$*" >&2; exit 1; }
command -v xxd >/dev/null || die "xxd not found (Debian package xxd)"

"$TB" install
BIN="$("$TB" interop-bin)"
trap '"$TB" stop || true' EXIT

hex200() { xxd -l 200 "$1" >"$2"; }

fresh_bed() { "$TB" stop >/dev/null; "$TB" start; }

# dump_case DIR LOGNAME: every etcd key + object of the bed into DIR, plus convenience copies
dump_case() {
  local dir="$1" name="$2" tmp
  tmp="$(mktemp -d)"
  "$BIN" dump --config "$dir/config.yaml" --out "$tmp" 2>/dev/null || die "dump into $dir failed"
  mv "$tmp/etcd-keys.txt" "$tmp/objects.txt" "$dir/"
  mv "$tmp/etcd" "$dir/etcd"; mv "$tmp/objects" "$dir/objects"; rmdir "$tmp"
  local seg="$dir/objects/golden/1/0" e="$dir/etcd/golden__woodpecker"
  cp "${e}__logs__${name}.bin" "$dir/LogMeta.pb"
  cp "${e}__logs__${name}.json" "$dir/LogMeta.json"
  cp "${e}__logs__${name}__segments__0.bin" "$dir/SegmentMetadata.pb"
  cp "${e}__logs__${name}__segments__0.json" "$dir/SegmentMetadata.json"
  cp "${e}__version.bin" "$dir/Version.pb"
  xxd "$dir/LogMeta.pb" >"$dir/LogMeta.pb.hex"
  xxd "$dir/SegmentMetadata.pb" >"$dir/SegmentMetadata.pb.hex"
  if [[ -f "$seg/0.blk" ]]; then hex200 "$seg/0.blk" "$dir/0.blk.hex200"; fi
  if [[ -f "$seg/m_0.blk" ]]; then hex200 "$seg/m_0.blk" "$dir/m_0.blk.hex200"; fi
  if [[ -f "$seg/footer.blk" ]]; then hex200 "$seg/footer.blk" "$dir/footer.blk.hex200"; fi
  log "$dir: $(wc -l <"$dir/etcd-keys.txt") etcd keys, $(wc -l <"$dir/objects.txt") objects"
}

wp() { # wp OUTFILE SUBCOMMAND ARGS... (stderr kept in OUTFILE.stderr on failure)
  local out="$1"; shift
  "$BIN" "$@" >"$out" 2>"$out.stderr" || { tail -20 "$out.stderr" >&2; die "wp-interop $* failed"; }
  rm -f "$out.stderr"
}

run_case() { # run_case NAME COUNT PAYLOAD_SIZE WINDOW
  local name="$1" count="$2" size="$3" window="$4" dir="$OUT/$1"
  log "case $name: $count entries, payload-size $size, window $window"
  rm -rf "$dir"; mkdir -p "$dir"
  fresh_bed  # log id 1, segment 0, nothing else in etcd or the bucket
  "$TB" render-config "$dir/config.yaml" golden golden
  wp "$dir/write.jsonl" write --config "$dir/config.yaml" --log "$name" --count "$count" --payload-size "$size" --window "$window"
  wp "$dir/read.jsonl" read --config "$dir/config.yaml" --log "$name" --count "$count" --verify
  cmp -s "$dir/write.jsonl" "$dir/read.jsonl" || die "case $name: read-back differs from what was written"
  dump_case "$dir" "$name"
}

# A writer that dies without closing (crashed/), then a new writer that recovers the log and
# appends 10 more entries (recovered/).
run_crash_case() {
  local name=crash c="$OUT/crashed" r="$OUT/recovered"
  log "case crashed/recovered: 250 entries, writer exits without close; then 10 more by a new writer"
  rm -rf "$c" "$r"; mkdir -p "$c" "$r"
  fresh_bed
  "$TB" render-config "$c/config.yaml" golden golden
  wp "$c/write.jsonl" write --config "$c/config.yaml" --log "$name" --count 250 --window 50 --crash
  dump_case "$c" "$name"
  cp "$c/config.yaml" "$r/config.yaml"
  wp "$r/read-before-recovery.jsonl" read --config "$r/config.yaml" --log "$name" --count 250 --verify --timeout 60s
  cmp -s "$c/write.jsonl" "$r/read-before-recovery.jsonl" || die "crashed log: read-back differs"
  wp "$r/write.jsonl" write --config "$r/config.yaml" --log "$name" --start 250 --count 10 --window 10
  wp "$r/read.jsonl" read --config "$r/config.yaml" --log "$name" --count 260 --verify --timeout 60s
  cat "$c/write.jsonl" "$r/write.jsonl" | cmp -s - "$r/read.jsonl" || die "recovered log: read-back differs"
  dump_case "$r" "$name"
}

# conditionWrite: disable => the etcd-lock writer. Dumps taken while the writer (writer-open/) and
# then a reader (reader-open/) are still open show the lock key, the reader key and an Active segment.
run_open_case() {
  local name=open dir="$OUT/open"
  log "case open: lock writer (conditionWrite disable), dumps while writer / reader are open"
  rm -rf "$dir"; mkdir -p "$dir"
  fresh_bed
  "$TB" render-config "$dir/config.yaml" golden golden
  sed -i 's/conditionWrite: auto /conditionWrite: disable /' "$dir/config.yaml"
  grep -q 'conditionWrite: disable' "$dir/config.yaml" || die "could not set conditionWrite: disable"
  wp "$dir/write.jsonl" write --config "$dir/config.yaml" --log "$name" --count 120 --window 40 --dump-before-close "$dir/writer-open"
  wp "$dir/read.jsonl" read --config "$dir/config.yaml" --log "$name" --count 120 --verify --dump-before-close "$dir/reader-open"
  cmp -s "$dir/write.jsonl" "$dir/read.jsonl" || die "case open: read-back differs"
  log "$dir: writer-open $(wc -l <"$dir/writer-open/etcd-keys.txt") keys, reader-open $(wc -l <"$dir/reader-open/etcd-keys.txt") keys"
}

# Auditor compaction: segment 0 (300 entries, 6 blocks) is closed; a second writer keeps segment 1
# open for 8 s with auditor.maxInterval 2 s and compaction maxBytes 8000, so segment 0 is merged
# into m_<n>.blk, its footer rewritten with the compacted flag, and its meta set to Sealed.
run_compact_case() {
  local name=compact dir="$OUT/compacted"
  log "case compacted: auditor compaction of a completed segment"
  rm -rf "$dir"; mkdir -p "$dir"
  fresh_bed
  "$TB" render-config "$dir/config.yaml" golden golden
  sed -i -e 's/maxInterval: 10 /maxInterval: 2 /' -e 's/maxBytes: 2000000$/maxBytes: 8000/' "$dir/config.yaml"
  grep -q 'maxInterval: 2 ' "$dir/config.yaml" && grep -q 'maxBytes: 8000' "$dir/config.yaml" || die "could not adjust auditor/compaction config"
  wp "$dir/write-1.jsonl" write --config "$dir/config.yaml" --log "$name" --count 300 --payload-size 32 --window 50
  wp "$dir/write-2.jsonl" write --config "$dir/config.yaml" --log "$name" --start 300 --count 5 --payload-size 32 --window 5 --hold 8s
  wp "$dir/read.jsonl" read --config "$dir/config.yaml" --log "$name" --count 305 --verify
  cat "$dir/write-1.jsonl" "$dir/write-2.jsonl" | cmp -s - "$dir/read.jsonl" || die "case compacted: read-back differs"
  dump_case "$dir" "$name"
  grep -q '"state": "Sealed"' "$dir/SegmentMetadata.json" || log "WARNING: segment 0 not Sealed (auditor did not compact in time)"
}

# LogMessageLayout edge cases (wp-interop write --shapes): no properties, empty payload, all 256
# byte values, non-ASCII / empty property strings, empty map. One block.
run_shapes_case() {
  local name=shapes dir="$OUT/shapes"
  log "case shapes: LogMessageLayout edge cases"
  rm -rf "$dir"; mkdir -p "$dir"
  fresh_bed
  "$TB" render-config "$dir/config.yaml" golden golden
  wp "$dir/write.jsonl" write --config "$dir/config.yaml" --log "$name" --shapes
  wp "$dir/read.jsonl" read --config "$dir/config.yaml" --log "$name" --count "$(wc -l <"$dir/write.jsonl")"
  cmp -s "$dir/write.jsonl" "$dir/read.jsonl" || die "case shapes: read-back differs"
  dump_case "$dir" "$name"
}

cases=("$@")
(( ${#cases[@]} )) || cases=(small n1000 crashed open compacted shapes)
for c in "${cases[@]}"; do
  case "$c" in
    small) run_case small 5 0 5 ;;
    n1000) run_case n1000 1000 32 100 ;;
    crashed|recovered) run_crash_case ;;
    open) run_open_case ;;
    compacted) run_compact_case ;;
    shapes) run_shapes_case ;;
    *) die "unknown case $c (small n1000 crashed open compacted shapes)" ;;
  esac
done
log "golden fixtures in $OUT"
