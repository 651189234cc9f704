#!/usr/bin/env bash
# Builds upstream Woodpecker's LogStore server (`woodpecker server ...`, github.com/zilliztech/woodpecker/cmd
# at v0.1.35) from the wrapper module in e2e/service/upstream-server/ and caches the binary under
#   ~/.cache/woodpecker-testbed/upstream-server-v0.1.35-<sha256 of the wrapper's go.mod + go.sum>/bin/woodpecker
#
#   e2e/service/upstream-server.sh install   # build if not cached (~3-5 min cold on 2 cores); prints nothing on stdout
#   e2e/service/upstream-server.sh path      # install if needed, then print the binary's path
#
# Env: WP_TESTBED_CACHE [~/.cache/woodpecker-testbed], WP_TESTBED_BUILD_WAIT_SECS [1800] (bound on the build lock).
set -euo pipefail

WOODPECKER_VERSION="v0.1.35"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/upstream-server"
CACHE="${WP_TESTBED_CACHE:-${HOME:-/root}/.cache/woodpecker-testbed}"
BUILD_WAIT_SECS="${WP_TESTBED_BUILD_WAIT_SECS:-1800}"

log() { printf '[upstream-server] %s\n' "$*" >&2; }
die() { printf '[upstream-server] ERROR: %s\n' "$*" >&2; exit 1; }

wrapper_hash() { ( cd "$SRC" && cat go.mod go.sum ) | sha256sum | cut -c1-12; }
bin_path() { echo "$CACHE/upstream-server-$WOODPECKER_VERSION-$(wrapper_hash)/bin/woodpecker"; }

install() {
  [[ -f "$SRC/go.mod" && -f "$SRC/go.sum" ]] || die "missing $SRC/go.mod or go.sum"
  local bin dir
  bin="$(bin_path)"; dir="$(dirname "$(dirname "$bin")")"
  if [[ -x "$bin" ]]; then log "cached: $bin"; return 0; fi
  command -v go >/dev/null || die "go not found (needed to build upstream's server from the Go module proxy)"
  mkdir -p "$dir/bin"
  exec 9>"$dir/.lock"
  flock -w "$BUILD_WAIT_SECS" 9 || die "timed out after ${BUILD_WAIT_SECS}s waiting for the build lock $dir/.lock"
  if [[ -x "$bin" ]]; then log "cached: $bin"; exec 9>&-; return 0; fi
  local start=$SECONDS
  log "building upstream woodpecker server $WOODPECKER_VERSION (go build -p 1; log: $dir/build.log) -> $bin"
  # v0.1.35 and the memberlist fork are not reachable in the checksum DB; the committed go.sum pins them.
  if ! ( cd "$SRC" && GOFLAGS="-p=1" GONOSUMDB="github.com/zilliztech/woodpecker,github.com/tinswzy/memberlist" \
        go build -p 1 -mod=readonly -buildvcs=false -trimpath -o "$bin.tmp" github.com/zilliztech/woodpecker/cmd ) \
        >"$dir/build.log" 2>&1; then
    tail -30 "$dir/build.log" >&2
    die "build failed (full log: $dir/build.log)"
  fi
  mv -f "$bin.tmp" "$bin"
  log "built in $((SECONDS - start))s"
  exec 9>&-
}

case "${1:-}" in
  install) install ;;
  path) install; bin_path ;;
  *) die "usage: $0 {install|path}" ;;
esac
