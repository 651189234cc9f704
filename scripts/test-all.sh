#!/usr/bin/env bash
# Runs every test of the repository on a fresh machine: formatting, lints, unit tests, and the
# integration tests against a real etcd, a real MinIO, a real kube-apiserver (+ controller-manager)
# and the upstream Go client, and builds and smoke-runs the container image with buildah
# (scripts/image.sh). Installs what is missing (cached under ~/.cache/woodpecker-testbed,
# keyed by version), starts the servers on loopback, and stops them on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

# A one-shot CI build gains nothing from incremental state (it doubled the target directory).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
# The Go tools of the test bed are cached as binaries; their build cache is only scratch space, so it
# lives in a temporary directory that is removed on exit instead of growing ~/.cache/go-build by GBs.
GOCACHE="$(mktemp -d "${TMPDIR:-/tmp}/woodpecker-gocache.XXXXXX")"
export GOCACHE
# A clean debug build of the workspace needs ~6 GB; say so up front rather than fail in the linker.
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kb / 1024)) MiB free on $(df -P . | awk 'NR == 2 { print $6 }'); a cold build needs ~8 GiB" >&2
fi

cleanup() {
  scripts/testbed.sh stop >/dev/null 2>&1 || true
  scripts/kube-testbed.sh stop >/dev/null 2>&1 || true
  rm -rf "$GOCACHE"
}
trap cleanup EXIT

step "install test bed: etcd, MinIO, upstream interop client"
scripts/testbed.sh install
step "install kube test bed: kube-apiserver, kube-controller-manager, helm"
scripts/kube-testbed.sh install
step "install image tools: buildah, debootstrap; the image's local runtime base (cached) (scripts/image.sh)"
scripts/image.sh install
scripts/image.sh base

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "docs: mdbook (cached), book build, internal links and anchors; rustdoc of woodpecker-client without warnings"
scripts/docs.sh check
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p woodpecker-client

step "start etcd + MinIO"
scripts/testbed.sh start
eval "$(scripts/testbed.sh env)"
step "start kube-apiserver + kube-controller-manager"
scripts/kube-testbed.sh start
eval "$(scripts/kube-testbed.sh env)"

# The pod tier (operator/tests/pod_tier) runs the operator's pods as processes of this binary, and
# e2e/service below runs it too: build it once, up front, rather than from inside a test.
# `cargo test --no-run` builds exactly what the test run uses (with the workspace's unified features), the
# binaries included, so nothing is compiled twice.
step "cargo test --workspace --no-run (also builds woodpecker, the server binary of the pod tier and of e2e/service)"
cargo test --workspace --no-run
export WOODPECKER_SERVER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/woodpecker"

step "cargo test --workspace"
cargo test --workspace --no-fail-fast

step "service mode: upstream's Go client (v0.1.35) against our woodpecker server processes (e2e/service/prove.sh)"
WP_SERVER_BIN="$WOODPECKER_SERVER_BIN" WP_CLUSTER_DIR="${TMPDIR:-/tmp}/wp-ci-service-cluster" \
  e2e/service/prove.sh write-read tail kill recover es5 rust-client cases

step "container image: the Dockerfile built by buildah with the debug binaries above; smoke runs as uid 65532, the server on a read-only root (scripts/image.sh)"
# No cargo build here: `cargo test --workspace` left both binaries in target/debug (the packages have
# integration tests), and another build with a different package set could re-resolve features and recompile.
scripts/image.sh build "$PWD/target/debug"
scripts/image.sh smoke
scripts/image.sh clean

step "fuzz targets, 15 s each (scripts/fuzz-smoke.sh)"
FUZZ_SECONDS=15 scripts/fuzz-smoke.sh

step "README command 1 on a fresh build: no protoc, no Go, fresh target dir"
scripts/check-fresh-build.sh
