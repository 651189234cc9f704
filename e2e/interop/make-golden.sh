#!/usr/bin/env bash
# Regenerates e2e/interop/golden/ from upstream Woodpecker (v0.1.35, embedded client, minio storage)
# against a PRIVATE test bed (own ports, own state dir), so it never disturbs a shared one.
#
#   e2e/interop/make-golden.sh            # writes e2e/interop/golden/{small,n1000}/
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
export WP_TESTBED_ETCD_PORT="${GOLDEN_ETCD_PORT:-23890}"
export WP_TESTBED_ETCD_PEER_PORT="${GOLDEN_ETCD_PEER_PORT:-23900}"
export WP_TESTBED_MINIO_PORT="${GOLDEN_MINIO_PORT:-9910}"
export WP_TESTBED_MINIO_CONSOLE_PORT="${GOLDEN_MINIO_CONSOLE_PORT:-9911}"
export WP_TESTBED_BUCKET=woodpecker

log() { printf '[make-golden] %s\n' "$*" >&2; }
die() { printf '[make-golden] ERROR: %s\n' "$*" >&2; exit 1; }
command -v xxd >/dev/null || die "xxd not found (Debian package xxd)"

"$TB" install
BIN="$("$TB" interop-bin)"
trap '"$TB" stop || true' EXIT

hex200() { xxd -l 200 "$1" >"$2"; }

run_case() { # run_case NAME COUNT PAYLOAD_SIZE WINDOW
  local name="$1" count="$2" size="$3" window="$4" dir="$OUT/$1"
  log "case $name: $count entries, payload-size $size, window $window"
  rm -rf "$dir"; mkdir -p "$dir"
  # a fresh bed per case: log id 1, segment 0, nothing else in etcd or the bucket
  "$TB" stop >/dev/null; "$TB" start
  "$TB" render-config "$dir/config.yaml" golden golden
  # the rendered config names this private bed's ports; keep it as documentation
  "$BIN" write --config "$dir/config.yaml" --log "$name" --count "$count" --payload-size "$size" \
    --window "$window" >"$dir/write.jsonl" 2>"$dir/write.stderr.log" || { tail "$dir/write.stderr.log" >&2; die "write $name failed"; }
  "$BIN" read --config "$dir/config.yaml" --log "$name" --count "$count" --verify \
    >"$dir/read.jsonl" 2>"$dir/read.stderr.log" || { tail "$dir/read.stderr.log" >&2; die "read $name failed"; }
  cmp -s "$dir/write.jsonl" "$dir/read.jsonl" || die "case $name: read-back differs from what was written"
  local tmp; tmp="$(mktemp -d)"
  "$BIN" dump --config "$dir/config.yaml" --out "$tmp" 2>>"$dir/dump.stderr.log"
  mv "$tmp/etcd-keys.txt" "$tmp/objects.txt" "$dir/"
  mv "$tmp/etcd" "$dir/etcd"; mv "$tmp/objects" "$dir/objects"; rmdir "$tmp"
  # convenience copies of the values the Rust codec tests need most
  local seg="$dir/objects/golden/1/0"
  cp "$dir/etcd/golden__woodpecker__logs__${name}.bin" "$dir/LogMeta.pb"
  cp "$dir/etcd/golden__woodpecker__logs__${name}.json" "$dir/LogMeta.json"
  cp "$dir/etcd/golden__woodpecker__logs__${name}__segments__0.bin" "$dir/SegmentMetadata.pb"
  cp "$dir/etcd/golden__woodpecker__logs__${name}__segments__0.json" "$dir/SegmentMetadata.json"
  cp "$dir/etcd/golden__woodpecker__version.bin" "$dir/Version.pb"
  xxd "$dir/LogMeta.pb" >"$dir/LogMeta.pb.hex"
  xxd "$dir/SegmentMetadata.pb" >"$dir/SegmentMetadata.pb.hex"
  hex200 "$seg/0.blk" "$dir/0.blk.hex200"
  hex200 "$seg/footer.blk" "$dir/footer.blk.hex200"
  rm -f "$dir"/*.stderr.log
  log "case $name done: $(wc -l <"$dir/etcd-keys.txt") etcd keys, $(wc -l <"$dir/objects.txt") objects"
}

run_case small 5 0 5
run_case n1000 1000 32 100
log "golden fixtures in $OUT"
