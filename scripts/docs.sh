#!/usr/bin/env bash
# The documentation book under docs/ (mdBook).
#   scripts/docs.sh install   install mdbook, cached under ~/.cache/woodpecker-testbed/mdbook-<version>
#   scripts/docs.sh build     build the book into docs/book (installs first)
#   scripts/docs.sh check     build, then check every relative link and #anchor of the built book
# The generated references (docs/src/reference/*.md) are checked by `cargo test` (see docs/src/reference/docs.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MDBOOK_VERSION=0.5.4
MDBOOK_ROOT="${HOME}/.cache/woodpecker-testbed/mdbook-${MDBOOK_VERSION}"
MDBOOK="${MDBOOK_ROOT}/bin/mdbook"

installed() { [ -x "$MDBOOK" ] && "$MDBOOK" --version | grep -q "v${MDBOOK_VERSION}\$"; }

install() {
  if installed; then
    return 0
  fi
  # Parallel callers build once: the second waits for the first, then finds it installed.
  mkdir -p "$(dirname "$MDBOOK_ROOT")"
  exec 9>"${MDBOOK_ROOT}.lock"
  flock 9
  if installed; then
    return 0
  fi
  # Only the `build` command is needed: no `serve`/`watch` (they pull in tokio, axum and notify).
  # Without CARGO_TARGET_DIR, cargo install builds in a temporary directory that it removes.
  env -u CARGO_TARGET_DIR nice cargo install --locked mdbook \
    --version "$MDBOOK_VERSION" --no-default-features --features search --root "$MDBOOK_ROOT"
  "$MDBOOK" --version
}

build() {
  install
  "$MDBOOK" build docs
}

check() {
  build
  python3 scripts/check-doc-links.py docs/book docs/src
}

case "${1:-}" in
  install) install ;;
  build) build ;;
  check) check ;;
  *) echo "usage: $0 install|build|check" >&2; exit 2 ;;
esac
