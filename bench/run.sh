#!/usr/bin/env bash
# `make bench`: tollgate, nginx and haproxy side by side on loopback, as issue 6 asks.
#
# Installs what is missing (nginx-light, haproxy, wrk, redis-server), builds the release
# binary, makes one ECDSA P-256 certificate for every TLS target, starts every process on
# free loopback ports (a 3-master Redis Cluster too, under one more sidecar whose token
# endpoint is measured), then alternates the targets (A B C … per kind of run, several rounds)
# and writes bench/results/latest.{md,svg,json} plus a timestamped copy. See
# docs/PERFORMANCE.md for what each figure means (only latest.* is committed).
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION (3 s per c32/c256 run; the others
# are derived from it), BENCH_REVOCATIONS (200), BENCH_PERF (1: profile the sidecar and nginx
# with perf during an extra c32 run each, when perf works here), TOLLGATE_BIN (use this
# binary, skip the build; BENCH_COMMIT names its commit in the report), BENCH_RESULTS (write
# there instead of bench/results, for trial runs), BENCH_CACHE_OFF_ARGS (sidecar flags that
# turn its validation cache off, when the harness does not recognise the build's flag),
# BENCH_ACCESS_LOG (json: the format of the sidecar run with its access log on, at c32 only;
# `off` skips that target; its lines go to /dev/null, so what is measured is the sidecar's
# own cost of each line: formatting it and one write).
set -euo pipefail

GIVEN_BIN=${TOLLGATE_BIN:+$(realpath "$TOLLGATE_BIN")}
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
CONF=$BENCH/conf
WORK=$BENCH/work
RESULTS=${BENCH_RESULTS:-$BENCH/results}
export BENCH_ROUNDS=${BENCH_ROUNDS:-3}
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the source tree
export BENCH_DURATION=${BENCH_DURATION:-3}
REVOCATIONS=${BENCH_REVOCATIONS:-200}
PERF=${BENCH_PERF:-1}
START=$(date +%s)

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
note() { printf '%s\n' "$*" >>"$WORK/notes.txt"; log "note: $*"; }
compilers() { ps -eo comm= | grep -cE '^(rustc|cargo|cc1|cc1plus|ld|ld.lld|clippy-driver)$' || true; }

# --- every process this script starts is in PIDS; the trap ends exactly those ---------------
PIDS=()
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Settings a user's shell may carry would change the sidecars under test.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^TOLLGATE_' || true)

# --- tools --------------------------------------------------------------------------------
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v python3 >/dev/null; then echo "bench: python3 is needed" >&2; exit 1; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS"
: >"$WORK/notes.txt"

# --- the sidecar ------------------------------------------------------------------------------
if [ -n "$GIVEN_BIN" ]; then
    BIN=$GIVEN_BIN
    note "sidecar binary given by TOLLGATE_BIN ($BIN); not built by this run"
else
    # The sidecar-only build (`make build-sidecar`): the binary injected pods run
    # (/usr/local/bin/tollgate-sidecar), without the controller and Kubernetes client code.
    log "cargo build --release --locked --no-default-features --bin tollgate"
    "${CARGO:-cargo}" build --release --locked --no-default-features --bin tollgate
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate
fi
[ -x "$BIN" ] || { echo "bench: no sidecar binary at $BIN" >&2; exit 1; }
{
    echo "tollgate_version=$("$BIN" --version)"
    dirty=""
    if [ -n "$(git -C "$ROOT" status --porcelain -- src crates Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        dirty="+uncommitted changes"
    fi
    if [ -n "$GIVEN_BIN" ]; then
        echo "commit=${BENCH_COMMIT:-unknown: binary given by TOLLGATE_BIN}"
    else
        echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
    fi
} >>"$WORK/meta.txt"

COMPILERS_START=$(compilers)
{
    echo "date=$(date -Iseconds)"
    echo "stamp=$(date +%Y%m%d-%H%M%S)"
    echo "loadavg_start=$(cut -d' ' -f1 /proc/loadavg)"
    echo "compilers_start=$COMPILERS_START"
} >>"$WORK/meta.txt"

HELP=$("$BIN" sidecar --help)
CACHE_OFF=()
if [ -n "${BENCH_CACHE_OFF_ARGS:-}" ]; then
    read -r -a CACHE_OFF <<<"$BENCH_CACHE_OFF_ARGS"
elif grep -q -- '--validation-cache-size' <<<"$HELP"; then
    CACHE_OFF=(--validation-cache-size 0)
elif grep -q -- '--no-validation-cache' <<<"$HELP"; then
    CACHE_OFF=(--no-validation-cache)
elif grep -A4 -- '--validation-cache-ttl' <<<"$HELP" \
        | grep -qiE '(\b0\b.*(off|disabl|no cache))|((off|disabl).*\b0\b)'; then
    CACHE_OFF=(--validation-cache-ttl 0)   # its help says 0 turns the cache off
fi
if ! grep -qE -- '--[a-z-]*cache' <<<"$HELP"; then
    HAS_CACHE=0
    note "this build has no validation cache (no cache flag in \`tollgate sidecar --help\`): every request makes one Redis round trip, so the sidecar's as-is run is also its cache-off case"
else
    HAS_CACHE=1
    [ ${#CACHE_OFF[@]} -gt 0 ] || note "the build has a validation cache but no --no-validation-cache flag: the cache-off target is skipped (set BENCH_CACHE_OFF_ARGS to run it)"
fi

ACCESS_LOG=${BENCH_ACCESS_LOG:-json}
if [ "$ACCESS_LOG" != off ] && ! grep -q -- '--access-log' <<<"$HELP"; then
    ACCESS_LOG=off
    note "this build has no --access-log: the access-log target is skipped"
fi

# --- certificate, ports, configuration ----------------------------------------------------
log "ECDSA P-256 certificate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
cat "$WORK/tls.crt" "$WORK/tls.key" >"$WORK/tls.pem"   # haproxy wants both in one file
CERT=$WORK/tls.crt

read -r P_UP P_AUTH P_NGINX P_AUTHREQ P_HAPROXY P_REDIS P_REDIS2 \
    P_TG P_TG_ADMIN P_TG_METRICS P_NC P_NC_ADMIN P_NC_METRICS \
    P_RA P_RA_ADMIN P_RA_METRICS P_RB P_RB_ADMIN P_RB_METRICS \
    P_CL1 P_CL2 P_CL3 P_CLBUS1 P_CLBUS2 P_CLBUS3 P_TC P_TC_ADMIN P_TC_METRICS \
    P_TA P_TA_ADMIN P_TA_METRICS P_TL P_TL_ADMIN P_TL_METRICS \
    <<<"$(python3 "$BENCH/tools.py" ports 34)"

render() { python3 "$BENCH/tools.py" render "$@"; }
mkdir -p "$WORK/upstream" "$WORK/nginx" "$WORK/nginx-authreq" "$WORK/haproxy" \
    "$WORK/redis" "$WORK/redis2" "$WORK/cluster1" "$WORK/cluster2" "$WORK/cluster3"
render "$CONF/upstream.nginx.conf" "$WORK/upstream/nginx.conf" WORK="$WORK" \
    UPSTREAM_PORT="$P_UP" AUTH_PORT="$P_AUTH"
render "$CONF/proxy.nginx.conf" "$WORK/nginx/nginx.conf" DIR="$WORK/nginx" PORT="$P_NGINX" \
    UPSTREAM_PORT="$P_UP" AUTH_PORT="$P_AUTH" CERT="$CERT" KEY="$WORK/tls.key" \
    AUTH_REQUEST_LINE=""
render "$CONF/haproxy.cfg" "$WORK/haproxy/haproxy.cfg" WORK="$WORK" PORT="$P_HAPROXY" \
    UPSTREAM_PORT="$P_UP" CERT_AND_KEY="$WORK/tls.pem"
render "$CONF/manifests.yaml" "$WORK/manifests.yaml" UPSTREAM_PORT="$P_UP"
AUTHREQ=0
if nginx -V 2>&1 | grep -q -- '--with-http_auth_request_module'; then
    AUTHREQ=1
    render "$CONF/proxy.nginx.conf" "$WORK/nginx-authreq/nginx.conf" DIR="$WORK/nginx-authreq" \
        PORT="$P_AUTHREQ" UPSTREAM_PORT="$P_UP" AUTH_PORT="$P_AUTH" CERT="$CERT" \
        KEY="$WORK/tls.key" AUTH_REQUEST_LINE="auth_request /_auth;"
else
    note "this nginx has no auth_request module: the nginx+auth_request target is skipped"
fi

# --- processes ------------------------------------------------------------------------------
start() {  # start NAME CMD...: in the background, logs in $WORK/NAME.log (stdout in
    # $START_STDOUT when set); sets LAST_PID
    local name=$1
    shift
    if [ -n "${START_STDOUT:-}" ]; then
        "$@" >"$START_STDOUT" 2>"$WORK/$name.log" &
    else
        "$@" >"$WORK/$name.log" 2>&1 &
    fi
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
start_redis() {  # start_redis NAME PORT DIR [FLAGS...]
    local name=$1 port=$2 dir=$3
    shift 3
    start "$name" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --protected-mode no --dir "$dir" "$@"
    local pid=$LAST_PID
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && { LAST_PID=$pid; return; }
        sleep 0.05
    done
    echo "bench: redis-server on $port did not start" >&2
    exit 1
}
start_cluster() {  # start_cluster PORT:BUS_PORT...: a Redis Cluster of one master a node
    local node port ports=() nodes=()
    CLUSTER_PIDS=()
    for node in "$@"; do
        port=${node%:*}
        # The bus port is given: the default, port + 10000, may be taken or above 65535.
        # nodes.conf is relative to the node's own --dir.
        start_redis "cluster$((${#nodes[@]} + 1))" "$port" "$WORK/cluster$((${#nodes[@]} + 1))" \
            --cluster-enabled yes --cluster-port "${node#*:}" --cluster-config-file nodes.conf
        CLUSTER_PIDS+=("$LAST_PID")
        ports+=("$port")
        nodes+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
        >"$WORK/cluster-create.log" 2>&1 \
        || { cat "$WORK/cluster-create.log" >&2; echo "bench: redis-cli --cluster create failed" >&2; exit 1; }
    for _ in $(seq 200); do  # every node must see the whole cluster before a client asks it
        local ok=0
        for port in "${ports[@]}"; do
            redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' \
                && ok=$((ok + 1))
        done
        [ "$ok" = ${#ports[@]} ] && return
        sleep 0.05
    done
    echo "bench: the Redis Cluster on ${ports[*]} did not reach cluster_state:ok" >&2
    exit 1
}
start_nginx() {  # start_nginx DIR
    start "$(basename "$1")" nginx -p "$1/" -c "$1/nginx.conf" -e stderr -g "daemon off;"
}
start_sidecar() {  # start_sidecar NAME PROXY ADMIN METRICS REDIS_PORT [FLAGS...]
    local name=$1 proxy=$2 admin=$3 metrics=$4 redis=$5
    shift 5
    start "$name" env TOLLGATE_LOG=warn "$BIN" sidecar --manifests "$WORK/manifests.yaml" \
        --listen "127.0.0.1:$proxy" --admin-listen "127.0.0.1:$admin" \
        --metrics-listen "127.0.0.1:$metrics" --tls-cert "$CERT" --tls-key "$WORK/tls.key" \
        --redis-url "redis://127.0.0.1:$redis" --store-key-file "$WORK/store.key" \
        --worker-threads 1 "$@"
}

# Every sidecar seals what it keeps in Redis with this key; sharing it lets them share tokens.
head -c 32 /dev/urandom >"$WORK/store.key"
log "starting redis-server, nginx (upstream, TLS proxy, auth_request), haproxy, sidecars"
start_redis redis "$P_REDIS" "$WORK/redis";  PID_REDIS=$LAST_PID
start_redis redis2 "$P_REDIS2" "$WORK/redis2"
start_cluster "$P_CL1:$P_CLBUS1" "$P_CL2:$P_CLBUS2" "$P_CL3:$P_CLBUS3"
start_nginx "$WORK/upstream"; PID_UP=$LAST_PID
start_nginx "$WORK/nginx"; PID_NGINX=$LAST_PID
if [ "$AUTHREQ" = 1 ]; then start_nginx "$WORK/nginx-authreq"; PID_AUTHREQ=$LAST_PID; fi
start haproxy haproxy -db -f "$WORK/haproxy/haproxy.cfg"; PID_HAPROXY=$LAST_PID
start_sidecar tollgate "$P_TG" "$P_TG_ADMIN" "$P_TG_METRICS" "$P_REDIS"; PID_TG=$LAST_PID
if [ ${#CACHE_OFF[@]} -gt 0 ]; then
    start_sidecar tollgate-nocache "$P_NC" "$P_NC_ADMIN" "$P_NC_METRICS" "$P_REDIS" \
        "${CACHE_OFF[@]}"
    PID_NC=$LAST_PID
fi
if [ "$ACCESS_LOG" != off ]; then
    # Its lines go to /dev/null: the figure is the sidecar's cost of a line, not a disk's.
    START_STDOUT=/dev/null start_sidecar tollgate-log "$P_TL" "$P_TL_ADMIN" "$P_TL_METRICS" \
        "$P_REDIS" --access-log "$ACCESS_LOG"
    PID_TL=$LAST_PID
fi
start_sidecar revocation-a "$P_RA" "$P_RA_ADMIN" "$P_RA_METRICS" "$P_REDIS2"
start_sidecar revocation-b "$P_RB" "$P_RB_ADMIN" "$P_RB_METRICS" "$P_REDIS2"
# The token endpoint once more, on Redis Cluster: the URL names one node, and the store finds
# the others from it.
start_sidecar tollgate-cluster "$P_TC" "$P_TC_ADMIN" "$P_TC_METRICS" "$P_CL1"; PID_TC=$LAST_PID

wait_http() { python3 "$BENCH/tools.py" wait "$1" 30 >/dev/null; }
wait_http "http://127.0.0.1:$P_UP/"
wait_http "https://127.0.0.1:$P_NGINX/"
if [ "$AUTHREQ" = 1 ]; then wait_http "https://127.0.0.1:$P_AUTHREQ/"; fi
wait_http "https://127.0.0.1:$P_HAPROXY/"
for m in "$P_TG_METRICS" "$P_RA_METRICS" "$P_RB_METRICS" "$P_TC_METRICS" ${PID_NC:+"$P_NC_METRICS"} \
    ${PID_TL:+"$P_TL_METRICS"}; do
    wait_http "http://127.0.0.1:$m/readyz"
done

# One client_credentials token, sent by wrk to every target so every target sees the same bytes.
CC_BODY='{"client_id":"benchclient","client_secret":"benchsecret","grant_type":"client_credentials"}'
PW_BODY='{"client_id":"benchclient","client_secret":"benchsecret","grant_type":"password","provision_key":"benchprovisionkey","authenticated_userid":"1"}'
TOKEN=$(python3 "$BENCH/tools.py" token "https://127.0.0.1:$P_TG/oauth2/token" "$CERT" "$CC_BODY")
export BENCH_TOKEN=$TOKEN
check() {  # check NAME URL: the target answers 200 to the benchmark's request
    local status
    status=$(python3 "$BENCH/tools.py" get "$2" "$CERT" "$TOKEN")
    [ "$status" = 200 ] || { echo "bench: $1 answered $status to $2" >&2; exit 1; }
}
check direct "http://127.0.0.1:$P_UP/"
check nginx "https://127.0.0.1:$P_NGINX/"
check haproxy "https://127.0.0.1:$P_HAPROXY/"
check tollgate "https://127.0.0.1:$P_TG/"
if [ -n "${PID_NC:-}" ]; then check tollgate-nocache "https://127.0.0.1:$P_NC/"; fi
if [ -n "${PID_TL:-}" ]; then check tollgate-log "https://127.0.0.1:$P_TL/"; fi
if [ "$AUTHREQ" = 1 ]; then check nginx-authreq "https://127.0.0.1:$P_AUTHREQ/"; fi
# The cluster-backed sidecar's tokens live in the cluster: it gets its own.
TOKEN_CLUSTER=$(python3 "$BENCH/tools.py" token "https://127.0.0.1:$P_TC/oauth2/token" "$CERT" "$CC_BODY")
status=$(python3 "$BENCH/tools.py" get "https://127.0.0.1:$P_TC/" "$CERT" "$TOKEN_CLUSTER")
[ "$status" = 200 ] || { echo "bench: tollgate-cluster answered $status" >&2; exit 1; }
status=$(python3 "$BENCH/tools.py" get "https://127.0.0.1:$P_TG/" "$CERT")
[ "$status" = 401 ] || { echo "bench: the sidecar answered $status without a token" >&2; exit 1; }
{
    echo "nginx: $(python3 "$BENCH/tools.py" tls-info 127.0.0.1 "$P_NGINX" "$CERT")"
    echo "haproxy: $(python3 "$BENCH/tools.py" tls-info 127.0.0.1 "$P_HAPROXY" "$CERT")"
    echo "tollgate: $(python3 "$BENCH/tools.py" tls-info 127.0.0.1 "$P_TG" "$CERT")"
} >"$WORK/tls.txt"

# --- the targets, alternated ------------------------------------------------------------------
if [ "$HAS_CACHE" = 1 ]; then TG_LABEL="tollgate, cache on"; else TG_LABEL="tollgate (no cache in build)"; fi
BACKENDS="$PID_UP,$PID_REDIS"
{
    printf 'direct\tupstream direct (HTTP)\thttp://127.0.0.1:%s/\t%s\t%s\n' "$P_UP" "$PID_UP" "$PID_REDIS"
    printf 'nginx\tnginx TLS proxy\thttps://127.0.0.1:%s/\t%s\t%s\n' "$P_NGINX" "$PID_NGINX" "$BACKENDS"
    printf 'haproxy\thaproxy TLS proxy\thttps://127.0.0.1:%s/\t%s\t%s\n' "$P_HAPROXY" "$PID_HAPROXY" "$BACKENDS"
    printf 'tollgate\t%s\thttps://127.0.0.1:%s/\t%s\t%s\n' "$TG_LABEL" "$P_TG" "$PID_TG" "$BACKENDS"
    if [ -n "${PID_TL:-}" ]; then  # c32 only: the access log's cost, beside the row above
        printf 'tollgate-log\t%s, access log %s\thttps://127.0.0.1:%s/\t%s\t%s\tc32\n' \
            "$TG_LABEL" "$ACCESS_LOG" "$P_TL" "$PID_TL" "$BACKENDS"
    fi
    if [ -n "${PID_NC:-}" ]; then
        printf 'tollgate-nocache\ttollgate, cache off\thttps://127.0.0.1:%s/\t%s\t%s\n' "$P_NC" "$PID_NC" "$BACKENDS"
    fi
    if [ "$AUTHREQ" = 1 ]; then
        printf 'nginx-authreq\tnginx + auth_request\thttps://127.0.0.1:%s/\t%s\t%s\n' "$P_AUTHREQ" "$PID_AUTHREQ" "$BACKENDS"
    fi
} >"$WORK/targets.tsv"
log "targets: $(cut -f1 "$WORK/targets.tsv" | tr '\n' ' '); $BENCH_ROUNDS rounds of c32, c256, c1, new connections"
python3 "$BENCH/measure.py" targets "$WORK/targets.tsv" "$WORK/targets.json"

# --- where the CPU goes (perf, when it works on this machine) ---------------------------------
profile() {  # profile NAME URL PIDS: perf record on PIDS during an extra c32 run against URL
    local name=$1 url=$2 pids=$3
    wrk -t2 -c32 -d"$((BENCH_DURATION + 1))s" -H "Authorization: Bearer $TOKEN" "$url" \
        >"$WORK/perf-$name-wrk.txt" 2>&1 &
    local wrk_pid=$!
    PIDS+=("$wrk_pid")
    sleep 0.5
    perf record -q -e cpu-clock -F 1999 -p "$pids" -o "$WORK/perf-$name.data" \
        -- sleep "$BENCH_DURATION" >/dev/null 2>&1 || true
    wait "$wrk_pid" || true
    perf report -i "$WORK/perf-$name.data" --stdio --no-children --sort dso,sym \
        -F overhead,dso,sym --percent-limit 0 >"$WORK/perf-$name-flat.txt" 2>/dev/null || true
    {
        echo "# Where $name's CPU goes during a c32 keep-alive run (every request with a bearer"
        echo "# token): perf record -e cpu-clock -F 1999 -p <its processes>. A software clock: this"
        echo "# machine has no hardware counters; in a VM, time spent with interrupts off is charged"
        echo "# to where they are turned back on (_raw_spin_unlock_irqrestore)."
        echo "# wrk during the profile: $(grep -E 'Requests/sec' "$WORK/perf-$name-wrk.txt" || true)"
        echo
        python3 "$BENCH/tools.py" perf-summary "$WORK/perf-$name-flat.txt"
    } >"$RESULTS/perf-$name.txt"
}
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    if perf record -q -e cpu-clock -o "$WORK/perf-probe.data" -- true >/dev/null 2>&1; then
        log "perf record on the sidecar, then on nginx, during an extra c32 run each"
        profile tollgate "https://127.0.0.1:$P_TG/" "$PID_TG"
        profile nginx "https://127.0.0.1:$P_NGINX/" \
            "$(python3 "$BENCH/tools.py" descendants "$PID_NGINX" | tr ' ' ,)"
        note "profiles during a c32 run: bench/results/perf-tollgate.txt and perf-nginx.txt"
    else
        note "perf record does not work on this machine: no profile"
    fi
fi

# --- allocations per request (a uprobe on malloc, when perf can place one) ---------------------
# A count, not a time: the one figure this noisy VM cannot move. The uprobe slows the process
# tenfold, so the run is short and light (c8) and its req/s mean nothing.
mallocs() {  # mallocs URL PIDS: malloc calls per request of PIDS during a short c8 run
    local url=$1 pids=$2 out n
    perf stat -x, -e probe_libc:malloc -p "$pids" -o "$WORK/mallocs.txt" -- sleep 2.5 >/dev/null 2>&1 &
    local perf_pid=$!
    sleep 0.3
    out=$(wrk -t1 -c8 -d2s -H "Authorization: Bearer $TOKEN" "$url" 2>&1 || true)
    wait "$perf_pid" || true
    n=$(echo "$out" | awk '/requests in/{print $1}')
    awk -F, -v n="${n:-0}" '/probe_libc:malloc/ && n > 0 {printf "%.1f", $1 / n}' "$WORK/mallocs.txt"
}
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    LIBC=$(ldd "$BIN" | awk '/libc.so/{print $3}')
    ADDED_PROBE=0
    if ! perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc '; then
        perf probe -q -x "$LIBC" malloc >/dev/null 2>&1 && ADDED_PROBE=1
    fi
    if perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc '; then
        log "malloc calls per request, counted by a uprobe"
        M_TG=$(mallocs "https://127.0.0.1:$P_TG/" "$PID_TG")
        M_NGINX=$(mallocs "https://127.0.0.1:$P_NGINX/" \
            "$(python3 "$BENCH/tools.py" descendants "$PID_NGINX" | tr ' ' ,)")
        note "malloc calls per proxied request (a uprobe on libc's malloc, c8): tollgate ${M_TG:-?}, nginx ${M_NGINX:-?}"
        [ "$ADDED_PROBE" = 1 ] && perf probe -q -d probe_libc:malloc >/dev/null 2>&1 || true
    fi
fi

# --- token issue rate, against the sidecar's own keep-alive GET rate -----------------------------
log "token endpoint: client_credentials and password grants against GET, on one Redis and on a 3-master Redis Cluster"
CLUSTER_BACKENDS="$PID_UP,$(IFS=,; echo "${CLUSTER_PIDS[*]}")"
{
    printf 'get\tGET\thttps://127.0.0.1:%s/\t%s\t%s\t\t\n' "$P_TG" "$PID_TG" "$BACKENDS"
    printf 'client_credentials\tclient_credentials\thttps://127.0.0.1:%s/oauth2/token\t%s\t%s\t%s\t\n' "$P_TG" "$PID_TG" "$BACKENDS" "$CC_BODY"
    printf 'password\tpassword\thttps://127.0.0.1:%s/oauth2/token\t%s\t%s\t%s\t\n' "$P_TG" "$PID_TG" "$BACKENDS" "$PW_BODY"
    printf 'cluster-get\tGET (Redis Cluster)\thttps://127.0.0.1:%s/\t%s\t%s\t\t%s\n' "$P_TC" "$PID_TC" "$CLUSTER_BACKENDS" "$TOKEN_CLUSTER"
    printf 'cluster-client_credentials\tclient_credentials (Redis Cluster)\thttps://127.0.0.1:%s/oauth2/token\t%s\t%s\t%s\t\n' "$P_TC" "$PID_TC" "$CLUSTER_BACKENDS" "$CC_BODY"
    printf 'cluster-password\tpassword (Redis Cluster)\thttps://127.0.0.1:%s/oauth2/token\t%s\t%s\t%s\t\n' "$P_TC" "$PID_TC" "$CLUSTER_BACKENDS" "$PW_BODY"
} >"$WORK/issue.tsv"
python3 "$BENCH/measure.py" issue "$WORK/issue.tsv" "$WORK/issue.json"
keys=()
for port in "$P_CL1" "$P_CL2" "$P_CL3"; do keys+=("$(redis-cli -p "$port" dbsize)"); done
note "Redis Cluster after the token runs: ${keys[*]} keys on its three masters (the store keeps one namespace in one hash slot, so one master holds them all; a cluster spreads namespaces, not the tokens of one)"

# --- revocation latency across two sidecars sharing one Redis --------------------------------
log "revocation: $REVOCATIONS tokens revoked on one sidecar, seen by both"
python3 "$BENCH/revocation.py" "https://127.0.0.1:$P_RA/" "https://127.0.0.1:$P_RA_ADMIN/" \
    "https://127.0.0.1:$P_RB/" "$CERT" "$WORK/revocation.json" "$REVOCATIONS"

# --- under attack (issue 13): keep-alive GETs while clients with no token hold connections ---
# A sidecar of its own, started now, so that its RSS owes nothing to the runs above.
log "under attack: c32 GETs while 200 slowloris connections and 150 stalled 1 MiB bodies are held"
start_sidecar tollgate-attack "$P_TA" "$P_TA_ADMIN" "$P_TA_METRICS" "$P_REDIS"; PID_TA=$LAST_PID
wait_http "http://127.0.0.1:$P_TA_METRICS/readyz"
python3 "$BENCH/attack.py" "https://127.0.0.1:$P_TA/" 127.0.0.1 "$P_TA" "$CERT" "$PID_TA" \
    "$WORK/attack.json"
note "$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("under attack (200 slowloris + 150 stalled 1 MiB token bodies held, %d open): RSS peak %.1f MiB (quiet run %.1f MiB; bar 48 MiB), legitimate c32 p99 %.0f us against %.0f us quiet, x%.2f (bar x2), %d errors" % (
    r["attack_connections"], r["rss_peak_kib"] / 1024, r["rss_quiet_kib"] / 1024,
    r["attacked_p99_us"], r["quiet_p99_us"], r["p99_ratio"], r["attacked_errors"]))
' "$WORK/attack.json")"
kill -TERM "$PID_TA" 2>/dev/null || true

echo "compilers_end=$(compilers)" >>"$WORK/meta.txt"
if [ "$(compilers)" -gt 0 ] || [ "$COMPILERS_START" -gt 0 ]; then note "other builds were running on this machine during the run: figures are noisier than on a quiet machine; ratios, taken in the same run with the targets alternated, hold up best"; fi
log "done in $(($(date +%s) - START)) s; writing bench/results/"
echo
python3 "$BENCH/report.py" "$WORK" "$RESULTS"
