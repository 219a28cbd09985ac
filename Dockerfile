# syntax=docker/dockerfile:1
# The tollgate image: one binary for every role (sidecar, controller, inject, crdgen), run as a
# non-root user, with nothing else but the C runtime and the CA certificates it links against.
# Built by `make image`. The build stage runs the Makefile's release build of the binary;
# crates/inject/tests/packaging.rs keeps the two commands the same.

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep crates.io downloads and compiled dependencies between builds; the binary is
# copied out of the cached target directory, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin tollgate \
    && install -D -m 0755 target/release/tollgate /out/tollgate

# glibc, libgcc, CA certificates and a `nonroot` user (65532), no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tollgate /usr/local/bin/tollgate
USER 65532:65532
# 8443 proxy (sidecar) · 8444 admin API · 8090 snapshot stream · 9443 webhook · 9090 metrics
EXPOSE 8443 8444 8090 9443 9090
ENTRYPOINT ["/usr/local/bin/tollgate"]
