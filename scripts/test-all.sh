#!/usr/bin/env bash
# Runs every test of the repository on a fresh machine: formatting, lints, unit tests, and the
# integration tests against a real etcd, a real MinIO, a real kube-apiserver (+ controller-manager)
# and the upstream Go client. Installs what is missing (cached under ~/.cache/woodpecker-testbed,
# keyed by version), starts the servers on loopback, and stops them on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "install test bed: etcd, protoc, MinIO, upstream interop client"
scripts/testbed.sh install
step "install kube test bed: kube-apiserver, kube-controller-manager, helm"
scripts/kube-testbed.sh install

cleanup() {
  scripts/testbed.sh stop >/dev/null 2>&1 || true
  scripts/kube-testbed.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "start etcd + MinIO"
scripts/testbed.sh start
eval "$(scripts/testbed.sh env)"
step "start kube-apiserver + kube-controller-manager"
scripts/kube-testbed.sh start
eval "$(scripts/kube-testbed.sh env)"

step "cargo test --workspace"
cargo test --workspace --no-fail-fast
