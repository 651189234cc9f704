#!/usr/bin/env bash
# Builds and checks the container image (the top-level Dockerfile) where there is no Docker engine and no
# registry: buildah (vfs storage, chroot isolation) on a runtime base made locally with debootstrap, with
# binaries that were already compiled (CI's), then smoke runs inside the image as uid 65532.
#
#   scripts/image.sh install          # apt: buildah, debootstrap (only what is missing)
#   scripts/image.sh base             # the runtime base: Debian 12 minbase + ca-certificates + user nonroot
#                                     # (65532); rootfs tarball cached by BASE_KEY, imported into buildah once
#   scripts/image.sh build [BIN_DIR]  # the image from the Dockerfile's runtime stage (BINARIES=prebuilt) with
#                                     # BIN_DIR/woodpecker and BIN_DIR/woodpecker-operator [target/debug]
#   scripts/image.sh smoke            # inside the image as 65532: `woodpecker --version` (= the version label),
#                                     # `woodpecker server --help`, `woodpecker-operator --help`; then the server
#                                     # on a read-only root with only its data dir writable, until /readyz is 200,
#                                     # and a SIGTERM that ends it cleanly (needs the etcd + MinIO test bed env)
#   scripts/image.sh all [BIN_DIR]    # install, base, build, smoke
#   scripts/image.sh clean            # remove the built image (the base stays cached)
#
# Environment (defaults in brackets):
#   WP_TESTBED_CACHE  [~/.cache/woodpecker-testbed]  rootfs tarball: $WP_TESTBED_CACHE/image-base-$BASE_KEY/
#   WP_IMAGE_STORAGE  [$WP_TESTBED_CACHE/buildah-vfs] buildah's image storage (outside the checkout; the
#                                                    base is kept there between runs, built images are not)
#   WP_IMAGE_TAG      [localhost/woodpecker-rs:<workspace version>]
#   WP_DEBIAN_MIRROR  [http://deb.debian.org/debian]  debootstrap's mirror
#   WP_ETCD_ENDPOINTS, WP_MINIO_*                    the test bed (`eval "$(scripts/testbed.sh env)"`), for smoke
set -euo pipefail

# Bump when the recipe of the base changes: the cached tarball and the imported image follow the key.
BASE_KEY="bookworm-minbase-ca-nonroot-1"
SUITE=bookworm
MIRROR="${WP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
APT_PACKAGES=(buildah debootstrap)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WP_TESTBED_CACHE:-${HOME:-/root}/.cache/woodpecker-testbed}"
BASE_DIR="$CACHE/image-base-$BASE_KEY"
BASE_TAR="$BASE_DIR/rootfs.tar"
BASE_IMAGE="localhost/woodpecker-testbed-base:$BASE_KEY"
STORAGE="${WP_IMAGE_STORAGE:-$CACHE/buildah-vfs}"
RUNROOT="${TMPDIR:-/tmp}/woodpecker-buildah-run-$(id -u)"
VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")"
IMAGE="${WP_IMAGE_TAG:-localhost/woodpecker-rs:$VERSION}"
NONROOT=65532

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }
[[ -n "$VERSION" ]] || die "no version under [workspace.package] in $REPO_ROOT/Cargo.toml"

bah() { buildah --root "$STORAGE" --runroot "$RUNROOT" --storage-driver vfs "$@"; }

# Removed on exit, whichever way the script ends: working containers, then scratch directories.
CLEANUP_CTRS=()
CLEANUP_DIRS=()
cleanup() {
  local c d
  for c in "${CLEANUP_CTRS[@]+"${CLEANUP_CTRS[@]}"}"; do bah umount "$c" >/dev/null 2>&1 || true; bah rm "$c" >/dev/null 2>&1 || true; done
  for d in "${CLEANUP_DIRS[@]+"${CLEANUP_DIRS[@]}"}"; do rm -rf "$d"; done
}
trap cleanup EXIT

cmd_install() {
  local p missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then log "apt packages present: ${APT_PACKAGES[*]}"; return 0; fi
  [[ "$(id -u)" == 0 ]] || die "need root to apt-get install: ${missing[*]}"
  log "apt-get install ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=120 \
      "${missing[@]}" </dev/null >&2; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -o DPkg::Lock::Timeout=120 </dev/null >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=120 \
      "${missing[@]}" </dev/null >&2 || die "apt-get install ${missing[*]} failed"
  fi
}

# The rootfs: what gcr.io/distroless/cc-debian12:nonroot gives (glibc, libgcc, ca-certificates, a
# nonroot user 65532 with home /home/nonroot), on a debootstrap minbase (which adds apt, dpkg and a
# shell; harmless for a CI stand-in, and `buildah run` needs nothing of them).
make_rootfs_tar() {
  [[ "$(id -u)" == 0 ]] || die "debootstrap needs root"
  mkdir -p "$BASE_DIR"
  local work
  work="$(mktemp -d "$BASE_DIR/build.XXXXXX")"
  CLEANUP_DIRS+=("$work")
  log "debootstrap --variant=minbase $SUITE (with ca-certificates) from $MIRROR"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$work/rootfs" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  local r="$work/rootfs"
  grep -q ":$NONROOT:" "$r/etc/passwd" ||
    echo "nonroot:x:$NONROOT:$NONROOT:nonroot:/home/nonroot:/sbin/nologin" >>"$r/etc/passwd"
  grep -q ":$NONROOT:" "$r/etc/group" || echo "nonroot:x:$NONROOT:" >>"$r/etc/group"
  grep -q '^nonroot:' "$r/etc/shadow" || echo "nonroot:!:19000::::::" >>"$r/etc/shadow"
  install -d -m 0700 -o "$NONROOT" -g "$NONROOT" "$r/home/nonroot"
  rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"* "$r/usr/share/doc" "$r/usr/share/man" \
    "$r/usr/share/locale"
  tar --numeric-owner -C "$r" -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$BASE_TAR"
  log "cached $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
}

cmd_base() {
  command -v buildah >/dev/null || die "buildah is missing: scripts/image.sh install"
  if bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then log "base present: $BASE_IMAGE"; return 0; fi
  if [[ ! -f "$BASE_TAR" ]]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing: scripts/image.sh install"
    make_rootfs_tar
  fi
  log "import $BASE_TAR as $BASE_IMAGE"
  local ctr
  ctr="$(bah from scratch)"
  CLEANUP_CTRS+=("$ctr")
  bah add "$ctr" "$BASE_TAR" / >/dev/null
  bah config --user "$NONROOT:$NONROOT" --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  bah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

cmd_build() {
  local bin_dir="${1:-$REPO_ROOT/target/debug}" ctx b
  cmd_base
  ctx="$(mktemp -d "${TMPDIR:-/tmp}/woodpecker-image-ctx.XXXXXX")"
  CLEANUP_DIRS+=("$ctx")
  for b in woodpecker woodpecker-operator; do
    [[ -x "$bin_dir/$b" ]] || die "$bin_dir/$b is missing (cargo build -p woodpecker-cli -p woodpecker-operator)"
    cp "$bin_dir/$b" "$ctx/$b"
  done
  # A rebuild replaces the image instead of leaving the old one dangling in the cached storage.
  bah rmi "$IMAGE" >/dev/null 2>&1 || true
  log "buildah bud -f Dockerfile (BINARIES=prebuilt, RUNTIME_BASE=$BASE_IMAGE) with $bin_dir -> $IMAGE"
  # buildah 1.28 leaves working containers behind: of the alias stage (`FROM binaries-... AS binaries`)
  # always, of every stage on a failure (its --force-rm trips over the alias: "identifier is not an
  # image"), and with them the stages' untagged images. What this build added is removed.
  local before dangling rc=0 c
  before="$(bah containers -q --notruncate)"
  dangling="$(bah images -q --no-trunc --filter dangling=true)"
  bah bud --isolation chroot --layers=false --pull-never -f "$REPO_ROOT/Dockerfile" \
    --build-arg BINARIES=prebuilt --build-arg RUNTIME_BASE="$BASE_IMAGE" --build-arg VERSION="$VERSION" \
    --build-arg GIT_COMMIT="$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null || true)" \
    -t "$IMAGE" "$ctx" >&2 || rc=$?
  for c in $(bah containers -q --notruncate); do
    grep -qx "$c" <<<"$before" || bah rm "$c" >/dev/null 2>&1 || true
  done
  for c in $(bah images -q --no-trunc --filter dangling=true); do
    grep -qx "$c" <<<"$dangling" || bah rmi "$c" >/dev/null 2>&1 || true
  done
  ((rc == 0)) || die "buildah bud failed ($rc)"
  log "built $IMAGE"
}

# run_in CTR CMD...: runs CMD in the image's working container CTR as 65532; prints its stdout.
run_in() {
  local ctr=$1
  shift
  bah run --isolation chroot --user "$NONROOT:$NONROOT" "$ctr" -- "$@"
}

free_port() {
  python3 -c 'import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        t.close(); u.close()'
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1$2" || true; }

# The server from the image's filesystem as a pod runs it: the root filesystem read-only (the image's
# rootfs bound onto itself and remounted read-only in a private mount namespace), the config read-only at
# /woodpecker/configs/woodpecker.yaml, only /woodpecker/data writable (no writable /tmp either), uid and
# gid 65532 with no capabilities; the host's network, where the test bed's etcd and MinIO listen.
# `buildah run` has no read-only root, hence unshare + chroot on the mounted image.
smoke_server() {
  local ctr=$1 name
  for name in WP_ETCD_ENDPOINTS WP_MINIO_ENDPOINT WP_MINIO_ACCESS_KEY WP_MINIO_SECRET_KEY WP_MINIO_BUCKET; do
    [[ -n "${!name:-}" ]] || die "$name is not set: smoke runs the server against the test bed; run \
scripts/testbed.sh start && eval \"\$(scripts/testbed.sh env)\""
  done
  local work mnt hostport svc gossip admin pid code status deadline rc=0
  work="$(mktemp -d "${TMPDIR:-/tmp}/woodpecker-image-smoke.XXXXXX")"
  CLEANUP_DIRS+=("$work")
  mnt="$(bah mount "$ctr")"
  hostport="${WP_MINIO_ENDPOINT#http://}"
  mkdir -p "$work/data" "$work/configs"
  chown "$NONROOT:$NONROOT" "$work/data"
  cat >"$work/configs/woodpecker.yaml" <<EOF
woodpecker:
  meta:
    type: etcd
  storage:
    type: service
  client:
    quorum:
      quorumBufferPools:
        - name: default
          seeds: [placeholder:1]
etcd:
  endpoints: [${WP_ETCD_ENDPOINTS}]
  rootPath: image-smoke-$$
minio:
  address: ${hostport%:*}
  port: ${hostport##*:}
  accessKeyID: ${WP_MINIO_ACCESS_KEY}
  secretAccessKey: ${WP_MINIO_SECRET_KEY}
  bucketName: ${WP_MINIO_BUCKET}
EOF
  svc="$(free_port)"; gossip="$(free_port)"; admin="$(free_port)"
  # Mount points are made in the container's own layer before the root goes read-only, as a container
  # runtime does; the image itself ships none of them.
  mkdir -p "$mnt/woodpecker/data" "$mnt/woodpecker/configs" "$mnt/proc" "$mnt/dev"
  # shellcheck disable=SC2016  # $root etc. expand in the inner shell
  unshare --mount --propagation private -- sh -euc '
    root=$1; data=$2; cfg=$3; shift 3
    mount --bind "$root" "$root"
    mount --bind "$data" "$root/woodpecker/data"
    mount --bind "$cfg" "$root/woodpecker/configs"
    mount -o remount,bind,ro "$root/woodpecker/configs"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -o remount,bind,ro "$root"
    if touch "$root/.rw-probe" 2>/dev/null; then echo "the root filesystem is still writable" >&2; exit 97; fi
    exec "$@"
  ' sh "$mnt" "$work/data" "$work/configs" \
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/home/nonroot METRICS_PORT="$admin" \
    "$(command -v chroot)" --userspec="$NONROOT:$NONROOT" --groups="$NONROOT" "$mnt" \
    /usr/local/bin/woodpecker server --config=/woodpecker/configs/woodpecker.yaml --data-dir=/woodpecker/data \
    --node-name image-smoke --service-port "$svc" --gossip-port "$gossip" \
    --advertise-service-addr "127.0.0.1:$svc" --advertise-gossip-addr "127.0.0.1:$gossip" \
    >"$work/server.log" 2>&1 &
  pid=$!
  log "server (pid $pid) from the image on a read-only root, admin port $admin: waiting for /readyz"
  deadline=$((SECONDS + 60))
  while :; do
    code="$(http_code "$admin" /readyz)"
    [[ "$code" == 200 ]] && break
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      tail -n 40 "$work/server.log" >&2
      rc=1
      log "FAILED: the server did not become ready (last /readyz: $code)"
      break
    fi
    sleep 0.2
  done
  if ((rc == 0)); then
    status="$(cat "/proc/$pid/status")"
    if ! grep -Eq "^Uid:[[:space:]]+${NONROOT}[[:space:]]+${NONROOT}[[:space:]]+${NONROOT}[[:space:]]+${NONROOT}\$" <<<"$status" ||
       ! grep -Eq '^CapEff:[[:space:]]+0+$' <<<"$status"; then
      rc=1; log "FAILED: the server does not run as $NONROOT without capabilities: $(grep -E '^(Uid|CapEff)' <<<"$status")"
    fi
    # A write the server must persist under its data dir: the decommission state; then back to active.
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "http://127.0.0.1:$admin/admin/node/decommission")"
    if [[ "$code" != 200 ]] || ! grep -q decommissioning "$work/data/node_state.json" 2>/dev/null; then
      rc=1; log "FAILED: decommission answered $code and left no state under the data dir"
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "http://127.0.0.1:$admin/admin/node/decommission/cancel")"
    [[ "$code" == 200 ]] || { rc=1; log "FAILED: decommission/cancel answered $code"; }
    kill -TERM "$pid"
    deadline=$((SECONDS + 35))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid"; rc=1; log "FAILED: the server did not stop within 35 s of SIGTERM"
    fi
    wait "$pid" || { rc=1; log "FAILED: the server exited with $? after SIGTERM"; tail -n 20 "$work/server.log" >&2; }
  fi
  ((rc == 0)) || die "the server in the image failed on a read-only root"
  log "server ran from the image as $NONROOT on a read-only root, writing only its data dir: ready, then SIGTERM, exit 0"
}

cmd_smoke() {
  bah inspect --type image "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: scripts/image.sh build"
  local label out ctr
  label="$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}' "$IMAGE")"
  [[ "$label" == "$VERSION" ]] || die "version label '$label' != workspace version $VERSION"
  # One working container for every check: with vfs each `buildah from` copies the whole image.
  ctr="$(bah from --pull-never "$IMAGE")"
  CLEANUP_CTRS+=("$ctr")
  out="$(run_in "$ctr" /usr/local/bin/woodpecker --version)" || die "woodpecker --version failed in the image"
  log "woodpecker --version: $out"
  [[ "$out" == *" $VERSION "* || "$out" == *" $VERSION" ]] ||
    die "woodpecker --version says '$out', the image is labelled $VERSION"
  run_in "$ctr" /usr/local/bin/woodpecker server --help >/dev/null || die "woodpecker server --help failed in the image"
  run_in "$ctr" /usr/local/bin/woodpecker-operator --help >/dev/null ||
    die "woodpecker-operator --help failed in the image"
  # The base made here has coreutils (distroless has none): the uid the commands above ran as.
  out="$(run_in "$ctr" /usr/bin/id -u):$(run_in "$ctr" /usr/bin/id -g)"
  [[ "$out" == "$NONROOT:$NONROOT" ]] || die "commands ran as uid:gid '$out', not $NONROOT:$NONROOT"
  log "ran as $NONROOT:$NONROOT: woodpecker --version, woodpecker server --help, woodpecker-operator --help"
  smoke_server "$ctr"
}

cmd_clean() {
  bah rmi "$IMAGE" >/dev/null 2>&1 || true
  log "removed $IMAGE (the base $BASE_IMAGE stays)"
}

case "${1:-}" in
  install) cmd_install ;;
  base) cmd_base ;;
  build) shift; cmd_build "$@" ;;
  smoke) cmd_smoke ;;
  all) shift; cmd_install; cmd_base; cmd_build "$@"; cmd_smoke ;;
  clean) cmd_clean ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
