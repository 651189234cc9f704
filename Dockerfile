# The Woodpecker image, zilliztech/woodpecker-rs:<workspace version>: one image with both binaries,
# `woodpecker` (the CLI and the LogStore server, `woodpecker server`) and `woodpecker-operator`, at the
# absolute paths the operator renders (/usr/local/bin, see docs "Container image").
#
#   docker build -t zilliztech/woodpecker-rs:0.1.0 .
#
# Needs BuildKit (Docker's default builder since 23.0), which builds only the stages the image needs.
# With buildah, name the stage explicitly (buildah 1.28 picks stages from explicit build args only):
#   buildah bud --build-arg BINARIES=source -t zilliztech/woodpecker-rs:0.1.0 .
# CI builds the same file with buildah on a local base and the binaries it has already compiled
# (scripts/image.sh):
#   BINARIES=prebuilt  take `woodpecker` and `woodpecker-operator` from the build context's root
#                      instead of compiling them (`source`, the default)
#   RUNTIME_BASE       the runtime base image
#   RUST_IMAGE         the builder image (a Debian 12 one: the binaries link the runtime's glibc)
#   VERSION            the version label; equals the workspace version in Cargo.toml
#                      (checked by logstore/cli/tests/dockerfile.rs)
#   GIT_COMMIT         the commit `woodpecker --version` prints and the revision label (a build context
#                      has no .git):  --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD)

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
# Distroless cc: glibc, libgcc, ca-certificates, tzdata and /etc/passwd with nonroot (65532), and
# nothing else: no shell, no package manager, so there is nothing to patch but what we ship and
# nothing an intruder can run. Same Debian 12 as the builder. The binaries need only libc and libgcc
# (rustls, no OpenSSL); debian:bookworm-slim would add ~50 MB of userland nobody runs.
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=source

# --- binaries compiled from this checkout (the default) ---
FROM ${RUST_IMAGE} AS binaries-source
ARG GIT_COMMIT=""
WORKDIR /src
COPY . .
# No protoc or cmake needed (vendored protoc; aws-lc builds with cc); crates from crates.io, pinned by
# Cargo.lock.
RUN WOODPECKER_GIT_COMMIT="${GIT_COMMIT}" cargo build --release --locked -p woodpecker-cli -p woodpecker-operator \
 && mkdir -p /out \
 && cp target/release/woodpecker target/release/woodpecker-operator /out/

# --- binaries already built elsewhere (CI: scripts/image.sh build), from the context's root ---
FROM scratch AS binaries-prebuilt
COPY woodpecker woodpecker-operator /out/

FROM binaries-${BINARIES} AS binaries

# --- runtime ---
FROM ${RUNTIME_BASE}
ARG VERSION=0.1.0
# The project's home, as in charts/woodpecker-operator/Chart.yaml.
ARG SOURCE=https://github.com/zilliztech/woodpecker
ARG GIT_COMMIT=""
LABEL org.opencontainers.image.title="woodpecker-rs" \
      org.opencontainers.image.description="Woodpecker in Rust: a write-ahead log on object storage (woodpecker: CLI and LogStore server) and its Kubernetes operator (woodpecker-operator)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root-owned and not writable by the runtime user. Nothing else is added: the server writes only under
# its data dir (--data-dir / DATA_DIR, /woodpecker/data in pods) and reads its config from
# /woodpecker/configs/woodpecker.yaml, both mounted by the pod, so the root filesystem can be read-only.
COPY --from=binaries /out/woodpecker /out/woodpecker-operator /usr/local/bin/
USER 65532:65532
# gRPC LogStore service, gossip (TCP and UDP), admin HTTP (probes, admin API, /metrics).
EXPOSE 18080 17946/tcp 17946/udp 9091
ENTRYPOINT ["/usr/local/bin/woodpecker"]
CMD ["--help"]
