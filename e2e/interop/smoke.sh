#!/usr/bin/env bash
# Interop smoke test against the shared test bed: upstream Go writes N entries, reads them back,
# and every stored object is decoded and CRC-checked by decode_golden.py. Leaves the bed running.
#   e2e/interop/smoke.sh [N]      (default 1000)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TB="$HERE/../../scripts/testbed.sh"
N="${1:-1000}"
die() { printf '[interop-smoke] ERROR: %s\n' "$*" >&2; echo "interop: 0 passed, 1 failed"; exit 1; }

"$TB" install
"$TB" start
BIN="$("$TB" interop-bin)"
run="smoke-$(date +%s)-$$"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$TB" render-config "$work/wp.yaml" "$run" "$run"
"$BIN" write --config "$work/wp.yaml" --log smoke --count "$N" --payload-size 48 >"$work/w.jsonl" 2>"$work/w.err" \
  || { tail -20 "$work/w.err" >&2; die "write failed"; }
"$BIN" read --config "$work/wp.yaml" --log smoke --count "$N" --verify >"$work/r.jsonl" 2>"$work/r.err" \
  || { tail -20 "$work/r.err" >&2; die "read failed"; }
cmp -s "$work/w.jsonl" "$work/r.jsonl" || die "read-back differs from what was written"
[[ "$(wc -l <"$work/r.jsonl")" == "$N" ]] || die "expected $N entries"
"$BIN" dump --config "$work/wp.yaml" --out "$work/dump" 2>/dev/null || die "dump failed"
python3 "$HERE/decode_golden.py" "$work/dump" >"$work/decode.txt" || { tail "$work/decode.txt" >&2; die "object decode/CRC check failed"; }
echo "[interop-smoke] $N entries written and read back by upstream v0.1.35 (etcd root / object root: $run)" >&2
echo "interop: 1 passed, 0 failed"
