# syntax=docker/dockerfile:1
#
# devenv-manager and the devenv CLI in a distroless image: no shell, no
# package manager, only the two binaries (and the glibc, libgcc and CA
# certificates the base image carries), running as uid 10001.
#
#   docker build -t registry.example.com/devenv-manager:0.1.0 \
#     --build-arg DEVENV_GIT_COMMIT=$(git rev-parse --short=12 HEAD) \
#     --build-arg DEVENV_BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#
# Not built in this repository's CI (there is no container engine there):
# see docs/install.md, "The image".

ARG RUST_VERSION=1.95

# --- build -------------------------------------------------------------
# Debian bookworm, the same glibc as the distroless runtime below.
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# `GET /api/v1/version` reports these (build.rs; there is no .git here).
ARG DEVENV_GIT_COMMIT=unknown
ARG DEVENV_BUILD_DATE=unknown
ENV DEVENV_GIT_COMMIT=${DEVENV_GIT_COMMIT} \
    DEVENV_BUILD_DATE=${DEVENV_BUILD_DATE}
# Only what the build reads (.dockerignore keeps the rest out).
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches ./benches
COPY src ./src
# The registry and target directories are BuildKit caches, so a rebuild
# recompiles only what changed; the binaries are copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && install -D -m 0755 -t /out target/release/devenv-manager target/release/devenv

# --- runtime -----------------------------------------------------------
# distroless "cc": glibc and libgcc for a Rust binary, no shell. Pin it by
# digest in your own builds (gcr.io/distroless/cc-debian12@sha256:...).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/devenv-manager /out/devenv /usr/local/bin/
# The uid the Deployment's securityContext expects (runAsNonRoot checks
# that it is numeric and not 0).
USER 10001:10001
# webhook (TLS), pod API (TLS), probes and metrics (HTTP)
EXPOSE 8443 8080 9090
ENTRYPOINT ["/usr/local/bin/devenv-manager"]
CMD ["serve"]
