# syntax=docker/dockerfile:1
# Multi-stage build of the operator image: a Rust builder, then a distroless runtime with no shell.

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
COPY --from=builder /hpc-cache-operator /hpc-cache-operator
# distroless "nonroot": uid/gid 65532, matching the chart's securityContext.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/hpc-cache-operator", "run"]
