#!/usr/bin/env bash
# `make bench-micro`: the cargo micro-benchmarks (divan), apart from `make bench`. Today one:
# the client-secret password hash of the token endpoint (crates/api/benches/secret.rs).
# Prints divan's table and writes it to bench/results/micro.md (BENCH_RESULTS: elsewhere),
# with the share of the sidecar's CPU per client_credentials request that one remembered
# verification is, as measured by the last `make bench` (bench/results/latest.json).
#
# The first run builds tollgate-api's dependencies with the release profile: minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${BENCH_RESULTS:-bench/results}
export PYTHONDONTWRITEBYTECODE=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"${CARGO:-cargo}" bench --locked -p tollgate-api | tee "$out"
mkdir -p "$RESULTS"
python3 - "$out" bench/results/latest.json >"$RESULTS/micro.md" <<'PY'
import datetime, json, os, re, statistics, subprocess, sys

text = open(sys.argv[1]).read()
table = text[re.search(r"^\w+ +fastest", text, re.M).start():].rstrip()
units = {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
median = {}
for line in table.splitlines():
    m = re.match(r"\W*(\w+)\s+[\d.]+ \S+\s+│\s+[\d.]+ \S+\s+│\s+([\d.]+) (\S+)", line)
    if m:
        median[m.group(1)] = float(m.group(2)) * units[m.group(3)]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip() or "?"
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
              if l.startswith("model name")), "?")
print("# Micro-benchmarks, %s\n" % datetime.datetime.now().astimezone().isoformat(
    timespec="seconds"))
print("Produced by `make bench-micro` (`cargo bench --locked -p tollgate-api`, divan) at commit "
      "%s, on %d× %s, load average %s at the end.\n" % (
          commit, os.cpu_count(), model, open("/proc/loadavg").read().split()[0]))
print("## Client-secret hash (crates/api/benches/secret.rs)\n")
print("Client secrets and provision keys are kept as PBKDF2-HMAC-SHA256 hashes, 50,000 "
      "iterations, a 16-byte random salt each (`SecretDigest`). `verify_cold` is a full hash: "
      "the first verification of a secret in a snapshot, and every attempt before one "
      "succeeded (10 samples of 1 call). `verify_warm` and `verify_warm_mismatch` are the "
      "checks once the secret is remembered: one HMAC-SHA256 under a per-process key, then a "
      "constant-time compare (200 samples of 5,000 calls). `make_digest` is what the compiler "
      "pays once per secret value (10 samples of 1 call). Medians:\n")
print("```\n%s\n```\n" % table)
try:
    runs = json.load(open(sys.argv[2]))["issue"]["runs"]
    cpu = statistics.median(r["cpu_us_per_req"] for r in runs
                            if r["target"] == "client_credentials" and r["kind"] == "c32")
except (OSError, ValueError, KeyError, TypeError, statistics.StatisticsError):
    cpu = None
if cpu and "verify_warm" in median:
    print("One remembered verification (%.0f ns) is %.2f%% of the %.1f µs of sidecar CPU per "
          "client_credentials token request measured by the last `make bench` "
          "(bench/results/latest.md). The password grant verifies two secrets (the client "
          "secret and the provision key)." % (median["verify_warm"],
                                             median["verify_warm"] / 10 / cpu, cpu))
PY
echo "wrote $RESULTS/micro.md" >&2
