#!/usr/bin/env python3
"""Small helpers of bench/run.sh (standard library only), also imported by the other scripts.

    tools.py ports N                        N free loopback ports, space-separated
    tools.py render TEMPLATE OUT K=V...     copy TEMPLATE to OUT replacing every @K@ by V
    tools.py wait URL [SECONDS]             until URL answers any HTTP status (TLS unverified)
    tools.py token URL CAFILE BODY_JSON     POST BODY_JSON to a token endpoint, print access_token
    tools.py get URL CAFILE [TOKEN]         GET, print the status code
    tools.py tls-info HOST PORT CAFILE      negotiated TLS version and cipher suite
    tools.py descendants PID                PID and every process below it
    tools.py perf-summary REPORT.txt        a flat perf report, grouped by area and crate
"""

import http.client
import json
import os
import re
import socket
import ssl
import sys
import time
import urllib.parse

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_ports(n):
    """n distinct free ports: all bound at once so none is returned twice."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def render(template, out, pairs):
    text = open(template).read()
    for key, value in pairs.items():
        text = text.replace("@%s@" % key, value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise SystemExit("render %s: no value for %s" % (template, ", ".join(sorted(set(left)))))
    with open(out, "w") as f:
        f.write(text)


def tls_context(cafile=None):
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connection(url, cafile=None, timeout=10):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                           context=tls_context(cafile))
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def request(conn, method, path, body=None, headers=None):
    """One request on a kept-alive connection: (status, body bytes)."""
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def path_of(url):
    u = urllib.parse.urlsplit(url)
    return (u.path or "/") + ("?" + u.query if u.query else "")


def wait(url, seconds=30.0):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            conn = connection(url, timeout=2)
            status, _ = request(conn, "GET", path_of(url))
            conn.close()
            return status
        except (OSError, http.client.HTTPException) as e:
            last = e
            time.sleep(0.05)
    raise SystemExit("%s did not answer in %ss: %s" % (url, seconds, last))


def token(url, cafile, body):
    conn = connection(url, cafile)
    status, data = request(conn, "POST", path_of(url), body=body,
                           headers={"Content-Type": "application/json"})
    conn.close()
    if status != 200:
        raise SystemExit("token endpoint %s answered %s: %s" % (url, status, data[:300]))
    return json.loads(data)["access_token"]


def descendants(pid):
    """pid and all processes whose ancestry leads to it (nginx master -> workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids):
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def machine_ticks():
    """(idle, total) clock ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def ctx_switches(pids):
    """Voluntary + involuntary context switches of every thread of the processes."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tasks:
            try:
                with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt")):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


KERNEL_GROUPS = [
    ("kernel: scheduling, sleeps and wake-ups", re.compile(
        r"^(finish_task_switch|_raw_spin_unlock_irq|__schedule|schedule|try_to_wake_up|"
        r"__wake_up|ep_|do_epoll|pick_next|update_curr|update_load|enqueue|dequeue|"
        r"select_task|ttwu|psi_|__switch_to|switch_mm|native_sched|sched_|"
        r"hrtimer|timerqueue|__x64_sys_epoll|default_wake_function|autoremove_wake)")),
    ("kernel: TCP/IP over loopback, sockets", re.compile(
        r"^(_?_?tcp|_?_?ip_|_?_?ip6|_?_?inet|_?_?sk_|sk_|skb|__skb|kfree_skb|"
        r"_?_?dev_|loopback|net_|__net|netif|__netif|process_backlog|sock_|__sock|"
        r"_?_?sys_(send|recv|read|write|accept|connect)|__x64_sys_(sendto|recvfrom|read|"
        r"write|writev|readv|accept)|release_sock|lock_sock|security_sock|"
        r"validate_xmit|raw_local|do_softirq|__do_softirq|__local_bh|nf_|__copy_skb|"
        r"copy_user|_copy_|rep_movs|copyout|copyin|__check_object|check_heap|"
        r"vfs_(read|write|writev)|do_iter|import_iovec|__import_iovec)")),
]


def perf_summary(report_path):
    """Groups a flat `perf report --sort dso,sym` by kernel area, libc area, and crate."""
    groups = {}
    rows = []
    # A path's first segment: at the start, or after `<`, a space, `&`, `(`, `[`, `,` or `*`.
    crate_re = re.compile(r"(?:^|[<\s&(\[,*])([a-z_][a-z0-9_]*)::")
    for line in open(report_path):
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[([.k])\]\s+(.*?)\s*$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        rows.append((pct, dso, sym))
        if kind == "k":
            group = "kernel: other (syscall entry and exit, memory, timers)"
            for name, pattern in KERNEL_GROUPS:
                if pattern.match(sym):
                    group = name
                    break
        elif re.match(r"libc[.-]", dso):
            if re.search(r"malloc|free|realloc|calloc|tcache|unlink_chunk|memalign", sym):
                group = "libc: malloc and free"
            elif re.search(r"mem(cpy|move|set|cmp)|str", sym):
                group = "libc: memcpy, memmove, memset"
            else:
                group = "libc: other (syscall wrappers)"
        elif dso == "tollgate":
            crates = [c for c in crate_re.findall(sym) if c not in ("core", "alloc", "std")]
            crate = crates[0] if crates else ("ring (crypto)" if "ring_core" in sym else
                                              "core/alloc/std")
            group = "tollgate binary: " + crate
        else:
            group = dso
        groups[group] = groups.get(group, 0.0) + pct
    out = ["%6.2f%%  %s" % (v, k) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])]
    return out, sorted(rows, reverse=True)


def tls_info(host, port, cafile):
    ctx = tls_context(cafile)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return "%s %s" % (s.version(), s.cipher()[0])


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        print(" ".join(str(p) for p in free_ports(int(args[0]))))
    elif cmd == "render":
        render(args[0], args[1], dict(a.split("=", 1) for a in args[2:]))
    elif cmd == "wait":
        wait(args[0], float(args[1]) if len(args) > 1 else 30.0)
    elif cmd == "token":
        print(token(args[0], args[1], args[2]))
    elif cmd == "get":
        conn = connection(args[0], args[1])
        headers = {"Authorization": "Bearer " + args[2]} if len(args) > 2 else {}
        print(request(conn, "GET", path_of(args[0]), headers=headers)[0])
    elif cmd == "tls-info":
        print(tls_info(args[0], args[1], args[2]))
    elif cmd == "perf-summary":
        groups, rows = perf_summary(args[0])
        print("Grouped (kernel by area, libc by function family, the binary by crate):")
        print("\n".join(groups[:25]))
        print("\nTop symbols:")
        for pct, dso, sym in rows[:30]:
            print("%6.2f%%  %-18s %s" % (pct, dso[:18], sym[:150]))
    elif cmd == "descendants":
        print(" ".join(str(p) for p in descendants(int(args[0]))))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
