#!/usr/bin/env python3
"""Drives wrk against the targets, alternating them, and reads the proxies' CPU and memory
from /proc. Standard library only.

    measure.py targets TARGETS.tsv OUT.json   the per-target figures (see KINDS)
    measure.py issue   ISSUE.tsv   OUT.json   token issue rate against the sidecar's GET rate

A TARGETS.tsv line is: name, label, URL, PID of the proxy (its descendants count too, so an
nginx master brings its worker), comma-separated PIDs of the backends (the upstream nginx,
Redis), whose CPU is reported apart, and optionally the comma-separated kinds it runs (every
kind when empty). An ISSUE.tsv line is: name, label, URL, PID, backend
PIDs, the JSON body to POST (empty for a GET), and the bearer token of a GET when it is not
BENCH_TOKEN (a sidecar on another Redis knows other tokens; empty for BENCH_TOKEN).

Environment: BENCH_ROUNDS (3), BENCH_DURATION (seconds of the c32 and c256 runs, 3),
BENCH_TOKEN (sent as a bearer token to every target, so every target sees the same bytes),
BENCH_LUA (the wrk script).
"""

import json
import os
import subprocess
import sys
import time

import tools

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DURATION = int(os.environ.get("BENCH_DURATION", "3"))  # wrk takes whole seconds
TOKEN = os.environ.get("BENCH_TOKEN", "")
LUA = os.environ.get("BENCH_LUA", os.path.join(os.path.dirname(__file__), "conf", "wrk.lua"))

RSS_SETTLE_S = 1.0

# kind: (wrk threads, connections, seconds, extra headers)
KINDS = {
    "c32": (2, 32, DURATION, []),
    "c256": (2, 256, DURATION, []),
    "c1": (1, 1, max(1, DURATION // 2), []),
    # Every request on a new TCP + TLS connection: the server closes after one response.
    "close": (2, 16, max(1, round(DURATION * 0.75)), ["Connection: close"]),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def read_tsv(path, width):
    rows = []
    for line in open(path):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.rstrip("\n").split("\t")
        cells += [""] * (width - len(cells))
        rows.append(cells)
    return rows


def wrk(url, threads, connections, seconds, headers, body="", token=None):
    cmd = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds, "--latency",
           "--timeout", "5s", "-s", LUA]
    token = token or TOKEN
    if token and not body:
        cmd += ["-H", "Authorization: Bearer " + token]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    env = dict(os.environ, WRK_BODY=body)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON "):])
    raise SystemExit("wrk gave no summary (exit %d):\n%s\n%s" % (out.returncode, out.stdout,
                                                                   out.stderr))


def run_one(name, url, pid, backends, kind, threads, conns, seconds, headers, body="",
            token=None):
    pids = tools.descendants(pid)
    backend_pids = [q for b in backends for q in tools.descendants(b)]
    cpu0, bcpu0, t0 = tools.cpu_seconds(pids), tools.cpu_seconds(backend_pids), time.monotonic()
    cs0, (idle0, all0) = tools.ctx_switches(pids), tools.machine_ticks()
    w = wrk(url, threads, conns, seconds, headers, body, token)
    cpu1, bcpu1, t1 = tools.cpu_seconds(pids), tools.cpu_seconds(backend_pids), time.monotonic()
    cs1, (idle1, all1) = tools.ctx_switches(pids), tools.machine_ticks()
    n = max(w["requests"], 1)
    errors = (w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["status_errors"]
              + w["timeouts"])
    rec = {
        "target": name, "kind": kind, "connections": conns,
        "requests": w["requests"], "rps": w["requests"] / (w["duration_us"] / 1e6),
        "p50_us": w["p50_us"], "p90_us": w["p90_us"], "p99_us": w["p99_us"],
        "mean_us": w["mean_us"], "max_us": w["max_us"],
        "errors": errors, "status_errors": w["status_errors"],
        "cpu_s": cpu1 - cpu0, "cpu_us_per_req": (cpu1 - cpu0) * 1e6 / n,
        "backend_cpu_us_per_req": (bcpu1 - bcpu0) * 1e6 / n,
        "cpu_util": (cpu1 - cpu0) / (t1 - t0),
        # Of the whole machine (wrk, proxy, upstream, Redis): with every core busy, req/s is
        # bounded by the machine, not by the proxy.
        "machine_idle": (idle1 - idle0) / max(all1 - all0, 1),
        "ctx_switches_per_req": (cs1 - cs0) / n,
        "rss_end_kib": tools.rss_kib(tools.descendants(pid)),
    }
    # RSS as the load ends, and once more after RSS_SETTLE_S: what a process keeps at rest is
    # what a pod pays for. The sidecar hands the memory of closed connections back to the OS
    # within about 100 ms; nginx and haproxy keep theirs.
    if kind == "c256":
        time.sleep(RSS_SETTLE_S)
    rec["rss_kib"] = tools.rss_kib(tools.descendants(pid))
    log("  %-14s %-6s %9.0f req/s  p50 %7.0f us  p99 %7.0f us  cpu %6.1f us/req%s" % (
        name, kind, rec["rps"], rec["p50_us"], rec["p99_us"], rec["cpu_us_per_req"],
        "  ERRORS %d" % errors if errors else ""))
    return rec


def targets(path, out):
    rows = read_tsv(path, 6)
    runs = []
    # Warm every target once: pools filled, pages touched, branch predictors trained.
    for name, _label, url, pid, backends, _kinds in rows:
        run_one(name, url, int(pid), [int(b) for b in backends.split(",") if b], "warmup",
                2, 32, 1, [])
    for r in range(1, ROUNDS + 1):
        log("round %d/%d" % (r, ROUNDS))
        # A B C ... for each kind in turn, so slow drift (other builds, thermal, noisy
        # neighbours) spreads over every target alike.
        for kind, (threads, conns, seconds, headers) in KINDS.items():
            for name, _label, url, pid, backends, only in rows:
                if only and kind not in only.split(","):
                    continue
                rec = run_one(name, url, int(pid), [int(b) for b in backends.split(",") if b],
                              kind, threads, conns, seconds, headers)
                rec["round"] = r
                runs.append(rec)
                time.sleep(0.2)
    labels = {row[0]: row[1] for row in rows}
    json.dump({"targets": [row[0] for row in rows], "labels": labels, "rounds": ROUNDS,
               "kinds": {k: {"threads": v[0], "connections": v[1], "seconds": v[2],
                             "headers": v[3]} for k, v in KINDS.items()},
               "runs": runs}, open(out, "w"), indent=1)


def issue(path, out):
    rows = read_tsv(path, 7)
    runs = []
    for name, _label, url, pid, backends, body, token in rows:
        run_one(name, url, int(pid), [int(b) for b in backends.split(",") if b], "warmup",
                2, 32, 1, [], body, token)
    for r in range(1, max(2, ROUNDS - 1) + 1):
        for name, _label, url, pid, backends, body, token in rows:
            rec = run_one(name, url, int(pid), [int(b) for b in backends.split(",") if b],
                          "c32", 2, 32, DURATION, [], body, token)
            rec["round"] = r
            runs.append(rec)
            time.sleep(0.2)
    json.dump({"targets": [row[0] for row in rows], "labels": {row[0]: row[1] for row in rows},
               "runs": runs}, open(out, "w"), indent=1)


if __name__ == "__main__":
    {"targets": targets, "issue": issue}[sys.argv[1]](sys.argv[2], sys.argv[3])
