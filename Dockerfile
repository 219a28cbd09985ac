# syntax=docker/dockerfile:1
# The tollgate image: two builds of the one source, run as a non-root user, with nothing else
# but the C runtime and the CA certificates they link against.
#   /usr/local/bin/tollgate          every role (controller, inject, crdgen, sidecar); the
#                                    entrypoint, which the controller's Deployment runs
#   /usr/local/bin/tollgate-sidecar  the sidecar alone (--no-default-features: no controller,
#                                    webhook or Kubernetes client), the `command` of the
#                                    container the webhook injects: less code mapped per pod
# Built by `make image`. The build stage runs the Makefile's `build` and `build-sidecar`
# commands; crates/inject/tests/packaging.rs keeps them the same.

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep crates.io downloads and compiled dependencies between builds; each binary is
# copied out of the cached target directory, which is not part of the image, right after its
# build: both builds write target/release/tollgate.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin tollgate \
    && install -D -m 0755 target/release/tollgate /out/tollgate \
    && cargo build --release --locked --no-default-features --bin tollgate \
    && install -D -m 0755 target/release/tollgate /out/tollgate-sidecar

# glibc, libgcc, CA certificates and a `nonroot` user (65532), no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tollgate /usr/local/bin/tollgate
COPY --from=build /out/tollgate-sidecar /usr/local/bin/tollgate-sidecar
USER 65532:65532
# 8443 proxy (sidecar) · 8444 admin API · 8090 snapshot stream · 9443 webhook · 9090 metrics
EXPOSE 8443 8444 8090 9443 9090
ENTRYPOINT ["/usr/local/bin/tollgate"]
