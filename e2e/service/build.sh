#!/usr/bin/env bash
# Builds wp-service (the upstream-Go-client driver in this directory) and caches it under
#   ~/.cache/woodpecker-testbed/wp-service-v0.1.35-<sha256 of go.mod, go.sum, *.go, woodpecker.yaml.tmpl>/bin/wp-service
#
#   e2e/service/build.sh install   # build if not cached (~2 min cold on 2 cores, seconds when only main.go changed)
#   e2e/service/build.sh path      # install if needed, then print the binary's path
#
# Env: WP_TESTBED_CACHE [~/.cache/woodpecker-testbed], WP_TESTBED_BUILD_WAIT_SECS [1800] (bound on the build lock).
set -euo pipefail

WOODPECKER_VERSION="v0.1.35"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${WP_TESTBED_CACHE:-${HOME:-/root}/.cache/woodpecker-testbed}"
BUILD_WAIT_SECS="${WP_TESTBED_BUILD_WAIT_SECS:-1800}"

log() { printf '[wp-service-build] %s\n' "$*" >&2; }
die() { printf '[wp-service-build] ERROR: %s\n' "$*" >&2; exit 1; }

src_hash() { ( cd "$SRC" && cat go.mod go.sum $(LC_ALL=C ls -1 ./*.go) woodpecker.yaml.tmpl ) | sha256sum | cut -c1-12; }
bin_path() { echo "$CACHE/wp-service-$WOODPECKER_VERSION-$(src_hash)/bin/wp-service"; }

install() {
  local bin dir
  bin="$(bin_path)"; dir="$(dirname "$(dirname "$bin")")"
  if [[ -x "$bin" ]]; then log "cached: $bin"; return 0; fi
  command -v go >/dev/null || die "go not found"
  mkdir -p "$dir/bin"
  exec 9>"$dir/.lock"
  flock -w "$BUILD_WAIT_SECS" 9 || die "timed out after ${BUILD_WAIT_SECS}s waiting for the build lock $dir/.lock"
  if [[ -x "$bin" ]]; then log "cached: $bin"; exec 9>&-; return 0; fi
  local start=$SECONDS
  log "building wp-service (woodpecker $WOODPECKER_VERSION, go build -p 1; log: $dir/build.log) -> $bin"
  # v0.1.35 and the memberlist fork are not reachable in the checksum DB; the committed go.sum pins them.
  if ! ( cd "$SRC" && GOFLAGS="-p=1" GONOSUMDB="github.com/zilliztech/woodpecker,github.com/tinswzy/memberlist" \
        go build -p 1 -mod=readonly -buildvcs=false -trimpath -o "$bin.tmp" . ) >"$dir/build.log" 2>&1; then
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
