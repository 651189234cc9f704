#!/usr/bin/env bash
# Runs the README's first command as a newcomer would on a machine with Rust alone: a fresh target
# directory, no `protoc` on PATH and no PROTOC, no Go, in an empty working directory. Fails unless the
# build succeeds and the quickstart prints its summary. Used by scripts/test-all.sh (and so by CI).
#
#   scripts/check-fresh-build.sh            # builds into a temporary target dir, removed on exit
#   FRESH_BUILD_KEEP=1 scripts/check-fresh-build.sh   # keep it (its path is printed) for a look
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The README's first command, word for word (checked against README.md below).
README_COMMAND='cargo run --release -p woodpecker-cli -- quickstart'
grep -qF "$README_COMMAND" "$REPO_ROOT/README.md" || {
  echo "check-fresh-build: README.md no longer contains: $README_COMMAND (update this script with it)" >&2
  exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/woodpecker-fresh.XXXXXX")"
if [ -z "${FRESH_BUILD_KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "kept: $work" >&2; fi

# PATH without any directory that holds protoc or go: the build must not find either.
clean_path=""
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] || continue
  if [ -e "$d/protoc" ] || [ -e "$d/go" ]; then continue; fi
  clean_path="${clean_path:+$clean_path:}$d"
done
cargo_bin="$(command -v cargo)"
case ":$clean_path:" in *":$(dirname "$cargo_bin"):"*) ;; *) echo "check-fresh-build: cargo's directory also holds protoc or go" >&2; exit 1 ;; esac

mkdir -p "$work/cwd"
out="$work/quickstart.out"
echo "check-fresh-build: $README_COMMAND (fresh target dir, no protoc, no go)" >&2
# The command runs from the checkout, as the README says, with its data directed to the scratch dir
# so the checkout stays clean.
if ! (cd "$REPO_ROOT" && env -u PROTOC -u PROTOC_INCLUDE -u GOROOT PATH="$clean_path" \
      CARGO_TARGET_DIR="$work/target" WOODPECKER_DATA_DIR="$work/cwd/woodpecker-data" \
      $README_COMMAND) >"$out" 2>"$work/build.err"; then
  tail -n 40 "$work/build.err" >&2
  echo "check-fresh-build: FAILED: the README's first command did not succeed" >&2
  exit 1
fi
cat "$out"
grep -q '^Woodpecker quickstart' "$out" && grep -q 'wrote .* entries' "$out" || {
  echo "check-fresh-build: FAILED: the quickstart did not print its summary" >&2
  exit 1
}
echo "check-fresh-build: passed" >&2
