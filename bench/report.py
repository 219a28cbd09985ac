#!/usr/bin/env python3
"""Turns the measurements of bench/run.sh into bench/results/latest.md (and a timestamped
copy), latest.svg and latest.json, and prints the markdown. Standard library only.

    report.py WORK_DIR RESULTS_DIR

Reads WORK_DIR/targets.json, issue.json, revocation.json (each optional), notes.txt (one
note a line), tls.txt ("target: version cipher" lines) and meta.txt ("key=value" lines).
"""

import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys

REF = "nginx"            # every ratio is to this target of the same run
DIRECT = "direct"
CACHE = "tollgate"       # the sidecar as built (validation cache on, if the build has one)
NOCACHE = "tollgate-nocache"
LOGGED = "tollgate-log"  # the sidecar as built with --access-log on, run at c32 only
AUTHREQ = "nginx-authreq"
CLUSTER = "cluster-"     # prefix of the token-endpoint runs against the Redis Cluster sidecar
CLUSTER_LABEL = "Redis Cluster, 3 masters"


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def lines(path):
    try:
        return [l.rstrip("\n") for l in open(path) if l.strip()]
    except OSError:
        return []


def median(values):
    return statistics.median(values) if values else None


def aggregate(data):
    """{target: {kind: {figure: median over rounds}}}; rss is the largest seen."""
    out = {}
    for rec in data["runs"]:
        slot = out.setdefault(rec["target"], {}).setdefault(rec["kind"], {})
        for key, value in rec.items():
            if isinstance(value, (int, float)) and key not in ("round", "connections"):
                slot.setdefault(key, []).append(value)
    for kinds in out.values():
        for kind, figures in kinds.items():
            for key, values in figures.items():
                largest = key in ("rss_kib", "rss_end_kib", "errors", "status_errors")
                figures[key] = max(values) if largest else median(values)
    return out


def get(agg, target, kind, figure):
    return agg.get(target, {}).get(kind, {}).get(figure)


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, spec="{:.0f}", none="–"):
    return none if value is None else spec.format(value)


def ms(us):
    return fmt(None if us is None else us / 1000, "{:.2f}")


def run(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine(meta):
    model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = "%.0f GiB" % (int(line.split()[1]) / 1024 / 1024)
    info = [
        ("date", meta.get("date", datetime.datetime.now().astimezone().isoformat(
            timespec="seconds"))),
        ("nproc", str(os.cpu_count())),
        ("CPU", model),
        ("memory", mem),
        ("kernel", "%s %s" % (platform.system(), platform.release())),
        ("tollgate", "%s (%s)" % (meta.get("tollgate_version", "?"),
                                  meta.get("commit", "?"))),
        ("nginx", run(["nginx", "-v"]).replace("nginx version: ", "")),
        ("haproxy", run(["haproxy", "-v"]).split(" - ")[0]),
        ("OpenSSL (nginx, haproxy, wrk)", run(["openssl", "version"])),
        ("wrk", run(["wrk", "-v"]).split(" [")[0]),
        ("redis-server", run(["redis-server", "--version"]).split(" sha=")[0]),
        ("load average at start / end", "%s / %s" % (
            meta.get("loadavg_start", "?"), open("/proc/loadavg").read().split()[0])),
        ("compilers running at start / end", "%s / %s" % (
            meta.get("compilers_start", "?"), meta.get("compilers_end", "?"))),
    ]
    return info


def status(value, must, aim, higher_is_better):
    if value is None:
        return "not measured"
    better = (lambda v, t: v >= t) if higher_is_better else (lambda v, t: v <= t)
    if better(value, aim):
        return "**met, aim reached**"
    if better(value, must):
        return "**met**"
    return "**not met**"


def goals(agg, issue_agg, revocation, notes):
    """The targets of issue 6, as (figure, value, unit, must, aim, higher_is_better, note)."""
    rows = []
    n = lambda t, k, f: get(agg, t, k, f)
    no_cache = any("has no validation cache" in x for x in notes)
    as_built = "sidecar as built: no cache, one Redis round trip a request" if no_cache else ""
    rows.append(("keep-alive req/s at c32, cache hit ÷ nginx",
                 ratio(n(CACHE, "c32", "rps"), n(REF, "c32", "rps")), "×", 1.0, 1.3, True,
                 as_built))
    rows.append(("proxy CPU per request (c32) ÷ nginx",
                 ratio(n(CACHE, "c32", "cpu_us_per_req"), n(REF, "c32", "cpu_us_per_req")),
                 "×", 1.0, 0.75, False, as_built))
    rows.append(("keep-alive req/s at c256 ÷ nginx",
                 ratio(n(CACHE, "c256", "rps"), n(REF, "c256", "rps")), "×", 1.0, 1.5, True,
                 as_built))
    nocache, note = NOCACHE, ""
    if NOCACHE not in agg:
        if no_cache:
            nocache, note = CACHE, "the as-built run, which has no cache"
        else:
            nocache, note = None, "no cache-off flag in this build: skipped"
    rows.append(("cache-off req/s at c32 ÷ nginx with auth_request",
                 ratio(n(nocache, "c32", "rps"), n(AUTHREQ, "c32", "rps")) if nocache else None,
                 "×", 1.0, 1.5, True, note))
    direct = n(DIRECT, "c1", "p50_us")
    added = lambda t: None if n(t, "c1", "p50_us") is None or direct is None \
        else n(t, "c1", "p50_us") - direct
    ng = added(REF)
    rows.append(("p50 added over direct at one connection (µs)", added(CACHE), "µs",
                 None if ng is None else ng + 20, ng, False,
                 "nginx adds %s µs" % fmt(ng) + ("; " + as_built if as_built else "")))
    rows.append(("CPU per new TLS connection ÷ nginx",
                 ratio(n(CACHE, "close", "cpu_us_per_req"), n(REF, "close", "cpu_us_per_req")),
                 "×", 1.0, 0.5, False, ""))
    rss = n(CACHE, "c256", "rss_kib")
    rss_end = n(CACHE, "c256", "rss_end_kib")
    rows.append(("RSS 1 s after the c256 run (MiB)", None if rss is None else rss / 1024,
                 "MiB", 25, 15, False,
                 "as the run ends: %s MiB" % fmt(None if rss_end is None else rss_end / 1024,
                                                 "{:.1f}") + ("; " + as_built if as_built else "")))
    rows.append(("revocation seen by both sidecars, p99 (ms)",
                 revocation["p99_ms"] if revocation else None, "ms", 100, 10, False,
                 "p50 %.2f ms, %d revocations" % (revocation["p50_ms"], revocation["n"])
                 if revocation else ""))
    if issue_agg:
        for prefix, where in (("", ""), (CLUSTER, " (%s)" % CLUSTER_LABEL)):
            get_rps = get(issue_agg, prefix + "get", "c32", "rps")
            if get_rps is None:
                continue
            for grant in ("client_credentials", "password"):
                rows.append(("token issue rate, %s ÷ own GET rate%s" % (grant, where),
                             ratio(get(issue_agg, prefix + grant, "c32", "rps"), get_rps), "×",
                             0.25, 0.5, True, ""))
    else:
        rows.append(("token issue rate ÷ own GET rate", None, "×", 0.25, 0.5, True, ""))
    return rows


def markdown(agg, labels, order, issue_agg, revocation, goal_rows, info, notes, tls, kinds):
    out = []
    w = out.append
    w("## Results")
    w("")
    w("### Targets of issue 6 (ratios measured in the same run)")
    w("")
    w("| figure | measured | must reach | aim | status |")
    w("|---|---|---|---|---|")
    for fig, value, unit, must, aim, hib, note in goal_rows:
        sign = "≥" if hib else "≤"
        spec = "{:.2f}" if unit == "×" else "{:.1f}" if unit in ("MiB", "ms") else "{:.0f}"
        val = fmt(value, spec) + ("" if value is None or unit == "×" else " " + unit)
        if unit == "×" and value is not None and must is not None \
                and fmt(value, spec) == fmt(must, spec) and "not met" in status(value, must, aim, hib):
            # Rounded to the threshold but short of it: show the digit that decides.
            val = fmt(value, "{:.3f}")
        w("| %s | %s%s | %s %s | %s %s | %s |" % (
            fig, val, " (%s)" % note if note else "", sign, fmt(must, spec), sign,
            fmt(aim, spec), status(value, must, aim, hib) if must is not None else "–"))
    w("")
    w("### Absolute figures (median of %s rounds)" % kinds.get("rounds", "?"))
    w("")
    w("| target | req/s c32 | p50 / p99 c32 (ms) | req/s c256 | p50 / p99 c256 (ms) "
      "| p50 / p99 c1 (µs) | proxy CPU µs/req c32 | c256 | context switches/req c32 "
      "| backends CPU µs/req c32 | new TLS conn/s | proxy CPU µs/new conn "
      "| RSS as c256 ends / 1 s later (MiB) | proxy busy / machine idle c256 |")
    w("|---|" + "---|" * 13)
    for t in order:
        g = lambda k, f: get(agg, t, k, f)
        rss, rss_end = g("c256", "rss_kib"), g("c256", "rss_end_kib")
        busy, idle = g("c256", "cpu_util"), g("c256", "machine_idle")
        w("| %s | %s | %s / %s | %s | %s / %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            labels.get(t, t), fmt(g("c32", "rps")), ms(g("c32", "p50_us")),
            ms(g("c32", "p99_us")), fmt(g("c256", "rps")), ms(g("c256", "p50_us")),
            ms(g("c256", "p99_us")), fmt(g("c1", "p50_us")), fmt(g("c1", "p99_us")),
            fmt(g("c32", "cpu_us_per_req"), "{:.1f}"), fmt(g("c256", "cpu_us_per_req"), "{:.1f}"),
            fmt(g("c32", "ctx_switches_per_req"), "{:.2f}"),
            fmt(g("c32", "backend_cpu_us_per_req"), "{:.1f}"), fmt(g("close", "rps")),
            fmt(g("close", "cpu_us_per_req"), "{:.0f}"),
            "%s / %s" % (fmt(None if rss_end is None else rss_end / 1024, "{:.1f}"),
                         fmt(None if rss is None else rss / 1024, "{:.1f}")),
            "%s / %s" % (fmt(None if busy is None else busy * 100, "{:.0f}%"),
                         fmt(None if idle is None else idle * 100, "{:.0f}%"))))
    w("")
    w("### Ratios to nginx (TLS proxy, same run)")
    w("")
    w("| target | req/s c32 | req/s c256 | CPU/req c32 | CPU/req c256 | CPU/new conn | RSS "
      "| p50 added over direct, c1 (µs) |")
    w("|---|" + "---|" * 7)
    direct = get(agg, DIRECT, "c1", "p50_us")
    for t in order:
        r = lambda k, f: fmt(ratio(get(agg, t, k, f), get(agg, REF, k, f)), "{:.2f}")
        p50 = get(agg, t, "c1", "p50_us")
        w("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            labels.get(t, t), r("c32", "rps"), r("c256", "rps"), r("c32", "cpu_us_per_req"),
            r("c256", "cpu_us_per_req"), r("close", "cpu_us_per_req"), r("c256", "rss_kib"),
            "–" if t == DIRECT or p50 is None or direct is None else fmt(p50 - direct)))
    if LOGGED in agg:
        w("")
        w("### The access log's cost (c32, the sidecar as built)")
        w("")
        w("| access log | req/s | p50 / p99 (ms) | proxy CPU µs/req |")
        w("|---|---|---|---|")
        for t, name in ((CACHE, "off"), (LOGGED, labels.get(LOGGED, LOGGED).rsplit(" ", 1)[-1])):
            g = lambda f: get(agg, t, "c32", f)
            w("| %s | %s | %s / %s | %s |" % (name, fmt(g("rps")), ms(g("p50_us")),
                                             ms(g("p99_us")), fmt(g("cpu_us_per_req"), "{:.1f}")))
        on_off = lambda f: fmt(ratio(get(agg, LOGGED, "c32", f), get(agg, CACHE, "c32", f)),
                               "{:.2f}")
        w("| on ÷ off | %s | | %s |" % (on_off("rps"), on_off("cpu_us_per_req")))
        w("")
        w("Its lines go to /dev/null: the figure is the sidecar's cost of each line (formatting "
          "it and one `write`), not a disk's.")
    if issue_agg:
        w("")
        w("### Token endpoint against the sidecar's own keep-alive GET (c32)")
        w("")
        w("| request | req/s | p50 / p99 (ms) | sidecar CPU µs/req | Redis+upstream CPU µs/req "
          "| ÷ GET rate |")
        w("|---|---|---|---|---|---|")
        for prefix, where in (("", ""), (CLUSTER, " (%s)" % CLUSTER_LABEL)):
            get_rps = get(issue_agg, prefix + "get", "c32", "rps")
            if get_rps is None:
                continue
            for t in ("get", "client_credentials", "password"):
                g = lambda f: get(issue_agg, prefix + t, "c32", f)
                w("| %s%s | %s | %s / %s | %s | %s | %s |" % (
                    {"get": "GET / with a bearer token"}.get(t, "POST token, %s grant" % t),
                    where, fmt(g("rps")), ms(g("p50_us")), ms(g("p99_us")),
                    fmt(g("cpu_us_per_req"), "{:.1f}"),
                    fmt(g("backend_cpu_us_per_req"), "{:.1f}"),
                    fmt(ratio(g("rps"), get_rps), "{:.2f}")))
        if get(issue_agg, CLUSTER + "get", "c32", "rps") is not None:
            w("")
            w("The rows marked (%s) are a second sidecar whose `--redis-url` names one node of a "
              "3-master Redis Cluster (`redis-server --cluster-enabled yes`, `redis-cli "
              "--cluster create --cluster-replicas 0`); their ÷ GET rate is to that sidecar's "
              "own GET, and their Redis CPU is the sum over the three nodes. The rounds "
              "alternate all six requests." % CLUSTER_LABEL)
    if revocation:
        w("")
        w("### Revocation seen by two sidecars sharing one Redis")
        w("")
        w("%d revocations: p50 **%.2f ms**, p99 **%.2f ms**, max %.2f ms; the admin DELETE "
          "itself took p50 %.2f ms, p99 %.2f ms; %d timed out (%.0f s)." % (
              revocation["n"], revocation["p50_ms"], revocation["p99_ms"],
              revocation["max_ms"], revocation["delete_p50_ms"], revocation["delete_p99_ms"],
              revocation["timeouts"], revocation["timeout_s"]))
    w("")
    w("### Machine")
    w("")
    w("| | |")
    w("|---|---|")
    for k, v in info:
        w("| %s | %s |" % (k, v))
    if tls:
        w("| TLS negotiated | %s |" % "; ".join(tls))
    w("")
    errors = [(t, k, f["errors"]) for t, ks in agg.items() for k, f in ks.items()
              if k != "warmup" and f.get("errors")]
    if notes or errors:
        w("### Notes")
        w("")
        for note in notes:
            w("- " + note)
        for t, k, e in errors:
            w("- %s, %s: wrk reported up to %d errors in a round (connect, read, write, "
              "timeouts or non-2xx)." % (labels.get(t, t), k, e))
        w("")
    return "\n".join(out)


# === SVG ===

def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def short(note):
    """A goal's note, short enough for the chart."""
    note = note.replace("sidecar as built: no cache, one Redis round trip a request",
                        "no cache in this build")
    note = note.replace("the as-built run, which has no cache", "as-built run, no cache")
    return note if len(note) <= 44 else note[:43] + "…"


def svg(goal_rows, agg, labels, order, title):
    width, left, plot, text_x = 1220, 350, 380, 745
    rows = [r for r in goal_rows if r[3] is not None]
    bar_h, gap = 18, 12
    panel2 = [t for t in order if get(agg, t, "c32", "rps")]
    height = (76 + len(rows) * (bar_h + gap)
              + 2 * (42 + len(panel2) * (bar_h + 6)) + 20)
    s = []
    a = s.append
    a('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
      'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">' % (width, height, width,
                                                                          height))
    a('<rect width="100%" height="100%" fill="white"/>')
    a('<text x="16" y="24" font-size="16" font-weight="bold">%s</text>' % esc(title))
    a('<text x="16" y="44" fill="#555">Each bar on its own scale. Red tick: must reach; green '
      'tick: aim. Bar green: aim reached; amber: must met; red: not met.</text>')
    y = 62
    for fig, value, unit, must, aim, hib, note in rows:
        scale = max(value or 0, must or 0, aim or 0) * 1.25 or 1.0
        x = lambda v: left + plot * min(max(0.0, v), scale) / scale
        st = status(value, must, aim, hib)
        color = {"**met, aim reached**": "#2e9d4a", "**met**": "#e0a020",
                 "**not met**": "#d0402a"}.get(st, "#bbbbbb")
        if CLUSTER_LABEL in fig:  # short enough for the chart's left column
            fig = fig.replace("token issue rate, ", "token issue, ").replace(
                " ÷ own GET rate (%s)" % CLUSTER_LABEL, " ÷ GET, Redis Cluster")
        a('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 8, y + 13, esc(fig)))
        a('<rect x="%d" y="%d" width="%d" height="%d" fill="#f0f0f0"/>' % (left, y, plot, bar_h))
        if value is not None:
            a('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>' % (
                left, y, x(value) - left, bar_h, color))
        for t, c in ((must, "#b02010"), (aim, "#1f7a35")):
            if t is not None:
                a('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>' % (
                    x(t), x(t), y - 3, y + bar_h + 3, c))
        spec = "{:.2f}" if unit == "×" else "{:.1f}" if unit in ("MiB", "ms") else "{:.0f}"
        sfx = "×" if unit == "×" else " " + unit
        label = "not measured" if value is None else spec.format(value) + sfx
        a('<text x="%d" y="%d" font-weight="bold">%s</text>' % (text_x, y + 13, esc(label)))
        a('<text x="%d" y="%d" fill="#555">must %s %s, aim %s %s%s</text>' % (
            text_x + 80, y + 13, "≥" if hib else "≤", spec.format(must), "≥" if hib else "≤",
            spec.format(aim), esc(" · " + short(note)) if note else ""))
        y += bar_h + gap
    for fig, key, unit, spec in (("keep-alive req/s at c32", "rps", "req/s", "{:.0f}"),
                                 ("proxy CPU per request at c32 (µs)", "cpu_us_per_req", "µs",
                                  "{:.1f}")):
        y += 26
        a('<text x="16" y="%d" font-size="14" font-weight="bold">%s, every target</text>' % (
            y, esc(fig)))
        y += 12
        values = [get(agg, t, "c32", key) or 0 for t in panel2]
        scale = max(values) * 1.05 or 1.0
        for t, v in zip(panel2, values):
            color = "#3b6fb6" if t.startswith("tollgate") else "#8a8a8a"
            a('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 8, y + 13,
                                                                  esc(labels.get(t, t))))
            a('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>' % (
                left, y, plot * v / scale, bar_h, color))
            a('<text x="%.1f" y="%d">%s %s</text>' % (left + plot * v / scale + 6, y + 13,
                                                      spec.format(v), unit))
            y += bar_h + 6
    a("</svg>")
    return "\n".join(s) + "\n"


def main():
    work, results = sys.argv[1], sys.argv[2]
    data = load(os.path.join(work, "targets.json")) or {"runs": [], "targets": [], "labels": {}}
    issue = load(os.path.join(work, "issue.json"))
    revocation = load(os.path.join(work, "revocation.json"))
    notes = lines(os.path.join(work, "notes.txt"))
    tls = lines(os.path.join(work, "tls.txt"))
    meta = dict(l.split("=", 1) for l in lines(os.path.join(work, "meta.txt")) if "=" in l)
    agg = aggregate(data)
    issue_agg = aggregate(issue) if issue else None
    order = data["targets"]
    labels = data["labels"]
    goal_rows = goals(agg, issue_agg, revocation, notes)
    info = machine(meta)
    md = markdown(agg, labels, order, issue_agg, revocation, goal_rows, info, notes, tls,
                  {"rounds": data.get("rounds")})
    stamp = meta.get("stamp") or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(results, exist_ok=True)
    header = ("# tollgate benchmark, %s\n\nProduced by `make bench` (bench/run.sh). What each "
              "figure means: docs/PERFORMANCE.md.\n\n" % info[0][1])
    with open(os.path.join(results, "latest.md"), "w") as f:
        f.write(header + md + "\n")
    shutil.copy(os.path.join(results, "latest.md"), os.path.join(results, stamp + ".md"))
    chart = svg(goal_rows, agg, labels, order,
                "tollgate against the targets of issue 6, %s, %s cores" % (
                    info[0][1][:10], os.cpu_count()))
    with open(os.path.join(results, "latest.svg"), "w") as f:
        f.write(chart)
    shutil.copy(os.path.join(results, "latest.svg"), os.path.join(results, stamp + ".svg"))
    with open(os.path.join(results, "latest.json"), "w") as f:
        json.dump({"machine": dict(info), "targets": data, "issue": issue,
                   "revocation": revocation, "notes": notes, "tls": tls}, f, indent=1)
    print(md)


if __name__ == "__main__":
    main()
