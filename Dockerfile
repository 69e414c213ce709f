# syntax=docker/dockerfile:1
# Multi-stage build of the operator image: a Rust builder, then a distroless runtime with no shell.
# `make image` builds the same image without Docker (scripts/image.sh: the same cargo build, a Debian 12 base layer
# equivalent to distroless cc, the same user, entrypoint and labels); tests/image.rs checks that the two agree, and
# `make lint-docker` runs hadolint (.hadolint.yaml) on this file.

FROM docker.io/library/rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# Cargo.toml names the benchmark target, and cargo refuses a manifest whose targets are missing.
COPY benches ./benches
# Without the default `simulator` feature: the image carries no Azure simulator (no CA generator, token signer).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin hpc-cache-operator \
    && cp target/release/hpc-cache-operator /hpc-cache-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="hpc-cache-operator" \
      org.opencontainers.image.description="Kubernetes operator for Azure HPC Cache with customer-managed encryption keys" \
      org.opencontainers.image.source="https://github.com/hpc-cache-operator/hpc-cache-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /hpc-cache-operator /hpc-cache-operator
# distroless "nonroot": uid/gid 65532, matching the chart's securityContext.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/hpc-cache-operator", "run"]
