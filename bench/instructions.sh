#!/usr/bin/env bash
# `make bench-instructions`: user-space instructions per proxied request, counted by valgrind.
#
# Timing on this 2-core VM moves 10–30% with its neighbours; an instruction count does not.
# The sidecar-only release binary runs under `valgrind --tool=callgrind` in front of one nginx
# worker (the upstream of `make bench`) and a real redis-server. wrk opens its connections and
# warms up; the counters are zeroed, read BENCH_INSTR_SECONDS later (6), and divided by the
# requests the sidecar counted in between (its own `tollgate_requests_total` metric), so TLS
# handshakes and start-up are not in the figure. Prints one line, and writes the callgrind
# profile to bench/work/instructions/ for `callgrind_annotate`.
#
# Knobs: TOLLGATE_BIN (this binary, no build), BENCH_INSTR_CONNS (32), BENCH_INSTR_SECONDS (6),
# BENCH_INSTR_ARGS (more sidecar flags, e.g. `--validation-cache-size 0` to count the
# cache-off path, where every request reads and unseals its token record in Redis).
# Installs valgrind, nginx-light, wrk and redis-server when missing.
set -euo pipefail

GIVEN_BIN=${TOLLGATE_BIN:+$(realpath "$TOLLGATE_BIN")}
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
WORK=$BENCH/work/instructions
CONNS=${BENCH_INSTR_CONNS:-32}
SECONDS_COUNTED=${BENCH_INSTR_SECONDS:-6}
export PYTHONDONTWRITEBYTECODE=1

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -n "$GIVEN_BIN" ]; then
    BIN=$GIVEN_BIN
else
    "${CARGO:-cargo}" build --release --locked --no-default-features --bin tollgate
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate
fi

rm -rf "$WORK"
mkdir -p "$WORK/upstream"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
read -r P_UP P_AUTH P_REDIS P_TG P_ADMIN P_METRICS <<<"$(python3 "$BENCH/tools.py" ports 6)"
python3 "$BENCH/tools.py" render "$BENCH/conf/upstream.nginx.conf" "$WORK/upstream/nginx.conf" \
    WORK="$WORK" UPSTREAM_PORT="$P_UP" AUTH_PORT="$P_AUTH"
python3 "$BENCH/tools.py" render "$BENCH/conf/manifests.yaml" "$WORK/manifests.yaml" \
    UPSTREAM_PORT="$P_UP"

head -c 32 /dev/urandom >"$WORK/store.key"
redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
nginx -p "$WORK/upstream/" -c "$WORK/upstream/nginx.conf" -e stderr -g "daemon off;" \
    >"$WORK/nginx.log" 2>&1 &
PIDS+=($!)
env TOLLGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
    "$BIN" sidecar --manifests "$WORK/manifests.yaml" --listen "127.0.0.1:$P_TG" \
    --admin-listen "127.0.0.1:$P_ADMIN" --metrics-listen "127.0.0.1:$P_METRICS" \
    --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" \
    --redis-url "redis://127.0.0.1:$P_REDIS" --store-key-file "$WORK/store.key" \
    --worker-threads 1 ${BENCH_INSTR_ARGS:-} >"$WORK/sidecar.log" 2>&1 &
SIDECAR=$!
PIDS+=("$SIDECAR")
python3 "$BENCH/tools.py" wait "http://127.0.0.1:$P_METRICS/readyz" 120 >/dev/null

TOKEN=$(python3 "$BENCH/tools.py" token "https://127.0.0.1:$P_TG/oauth2/token" "$WORK/tls.crt" \
    '{"client_id":"benchclient","client_secret":"benchsecret","grant_type":"client_credentials"}')
forwarded() {
    curl -s "http://127.0.0.1:$P_METRICS/metrics" \
        | awk '/^tollgate_requests_total\{outcome="forwarded"\}/ {print $2}'
}
wrk -t1 -c"$CONNS" -d"$((SECONDS_COUNTED + 8))s" --timeout 10s \
    -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$P_TG/" >"$WORK/wrk.txt" 2>&1 &
WRK=$!
PIDS+=("$WRK")
sleep 4   # connections open, handshakes done, caches warm
callgrind_control --zero "$SIDECAR" >/dev/null 2>&1
before=$(forwarded)
sleep "$SECONDS_COUNTED"
after=$(forwarded)
callgrind_control --dump "$SIDECAR" >/dev/null 2>&1
wait "$WRK" || true
kill "$SIDECAR" 2>/dev/null || true
wait "$SIDECAR" 2>/dev/null || true

profile=$(ls -t "$WORK"/callgrind.out.*.* 2>/dev/null | head -1)
[ -n "$profile" ] || { echo "bench: callgrind wrote no profile" >&2; exit 1; }
requests=$((after - before))
[ "$requests" -gt 0 ] || { echo "bench: no request was proxied while counting" >&2; exit 1; }
total=$(callgrind_annotate "$profile" 2>/dev/null \
    | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "instructions per proxied request (user space, wrk -c$CONNS, $requests requests): $((total / requests))"
echo "profile: $profile (callgrind_annotate --inclusive=yes $profile | less)"
