#!/usr/bin/env bash
# Runs every cargo-fuzz target of logstore/fuzz for a short bounded time, one at a time, from its checked-in
# seeds (logstore/fuzz/corpus/<target>/, never written to: new inputs go to a scratch corpus). Fails when a
# target crashes, panics, leaks past the RSS limit or hangs; the input is kept in logstore/fuzz/artifacts/<target>/.
#
#   scripts/fuzz-smoke.sh                 # FUZZ_SECONDS (default 20) per target
#   FUZZ_SECONDS=300 scripts/fuzz-smoke.sh local_scan
#
# Needs a nightly toolchain (`cargo +nightly`). Installs cargo-fuzz if missing, cached by version under
# ~/.cache/woodpecker-testbed/cargo-fuzz-<version>.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
FUZZ_DIR=logstore/fuzz
# Safe Rust: the sanitizer adds little but build and run time; debug assertions catch arithmetic overflow.
BUILD_FLAGS=(--fuzz-dir "$FUZZ_DIR" --sanitizer none --debug-assertions)

root="$HOME/.cache/woodpecker-testbed/cargo-fuzz-$CARGO_FUZZ_VERSION"
export PATH="$root/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -qF "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION into $root"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$root"
fi
if ! cargo +"$TOOLCHAIN" --version >/dev/null 2>&1; then
  echo "error: cargo-fuzz needs the $TOOLCHAIN toolchain (set FUZZ_TOOLCHAIN to another nightly)" >&2
  exit 1
fi

# The instrumented build lives outside the checkout, keyed by the nightly it was built with, so a later
# run (CI on the same machine) reuses it.
nightly_id=$(cargo +"$TOOLCHAIN" --version | tr -c 'A-Za-z0-9.\n' '-' | tr -d '\n')
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/woodpecker-testbed/fuzz-target-$nightly_id}"

if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list --fuzz-dir "$FUZZ_DIR"); fi
scratch="$(mktemp -d "${TMPDIR:-/tmp}/woodpecker-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

echo "==> building the fuzz targets"
cargo +"$TOOLCHAIN" fuzz build "${BUILD_FLAGS[@]}"
for t in "${targets[@]}"; do
  echo "==> fuzzing $t for ${FUZZ_SECONDS}s"
  mkdir -p "$scratch/$t"
  if ! cargo +"$TOOLCHAIN" fuzz run "${BUILD_FLAGS[@]}" "$t" "$scratch/$t" "$FUZZ_DIR/corpus/$t" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
    echo "error: fuzz target $t failed; its input is in $FUZZ_DIR/artifacts/$t/" >&2
    exit 1
  fi
done
echo "==> ${#targets[@]} fuzz targets ran ${FUZZ_SECONDS}s each without a crash"
