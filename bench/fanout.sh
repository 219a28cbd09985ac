#!/usr/bin/env bash
# `make bench-fanout`: one `tollgate controller` on the file source and 100 real sidecar
# processes streaming from it over loopback TLS; the time from a manifest change until every
# sidecar serves it, p50 and p99 (bench/fanout.py says how it is measured). Writes
# bench/results/fanout.md.
#
# Knobs (environment): TOLLGATE_BIN (use this binary, skip the release build), SIDECARS (100),
# CHANGES (20), APPLICATIONS (1000), FANOUT_RESULTS (where the table goes).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${TOLLGATE_BIN:-}" ]]; then
    ${CARGO:-cargo} build --locked --release --bin tollgate >&2
    TOLLGATE_BIN=$PWD/target/release/tollgate
    if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then TOLLGATE_BIN=$CARGO_TARGET_DIR/release/tollgate; fi
fi
export TOLLGATE_BIN=$(realpath "$TOLLGATE_BIN")
# 100 sidecars hold 2 file descriptors each at the controller, and the driver 100 more.
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
PYTHONDONTWRITEBYTECODE=1 exec python3 bench/fanout.py
