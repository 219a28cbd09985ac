#!/usr/bin/env python3
"""The "under attack" row of `make bench` (issue 13): legitimate keep-alive traffic while
clients with no token hold the sidecar's connections and memory. Standard library only.

    attack.py URL HOST PORT CERT PID OUT.json

URL is the GET wrk sends (with BENCH_TOKEN); HOST:PORT the sidecar's TLS listener; PID its
process. First a quiet c32 run; then 200 slowloris connections (a request head sent a line
at a time) and 150 connections that each send 1 MiB of a token-endpoint body and stall are
opened and held, and the same c32 run is made again. The sidecar's RSS is sampled every
100 ms throughout; the report is its peak, and the p99 of both runs.

Environment: BENCH_DURATION (seconds of each run, 3), BENCH_TOKEN.
"""

import json
import os
import socket
import ssl
import sys
import threading
import time

import measure
import tools

SLOWLORIS = 200
STALLED_BODIES = 150
BODY = 1 << 20
DURATION = int(os.environ.get("BENCH_DURATION", "3"))


def connect(context, host, port):
    raw = socket.create_connection((host, port), timeout=10)
    conn = context.wrap_socket(raw, server_hostname="localhost")
    conn.setblocking(False)
    return conn


def send_some(conn, data):
    """Sends what the socket takes now; the rest waits, as a stalled client's would."""
    sent = 0
    while sent < len(data):
        try:
            sent += conn.send(data[sent:sent + 16384])
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            break
        except OSError:
            break
    return sent


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, tools.rss_kib(tools.descendants(self.pid)))
            time.sleep(0.1)


def c32(url):
    return measure.wrk(url, 2, 32, DURATION, [])


def main():
    url, host, port, cert, pid, out = sys.argv[1:7]
    port, pid = int(port), int(pid)
    context = ssl.create_default_context(cafile=cert)
    context.set_alpn_protocols(["http/1.1"])

    measure.wrk(url, 2, 32, 1, [])  # warm-up
    quiet_sampler = Sampler(pid)
    quiet_sampler.start()
    quiet = c32(url)
    quiet_sampler.stop = True
    rss_quiet = quiet_sampler.peak

    held = []
    sampler = Sampler(pid)
    sampler.start()
    for i in range(SLOWLORIS):
        try:
            conn = connect(context, host, port)
            send_some(conn, b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            held.append(conn)
        except OSError as error:
            measure.log("slowloris connection %d failed: %s" % (i, error))
    head = ("POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
            "application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % (BODY + 1))
    body = head.encode() + b"a" * BODY
    for i in range(STALLED_BODIES):
        try:
            conn = connect(context, host, port)
            send_some(conn, body)
            held.append(conn)
        except OSError as error:
            measure.log("stalled-body connection %d failed: %s" % (i, error))
    opened = len(held)

    # Slowloris: one more header line every second, as long as the run lasts.
    def trickle():
        while not sampler.stop:
            for conn in held[:SLOWLORIS]:
                send_some(conn, b"X-a: b\r\n")
            time.sleep(1)
    threading.Thread(target=trickle, daemon=True).start()

    attacked = c32(url)
    sampler.stop = True
    for conn in held:
        try:
            conn.close()
        except OSError:
            pass
    result = {
        "attack_connections": opened,
        "quiet_p99_us": quiet["p99_us"], "attacked_p99_us": attacked["p99_us"],
        "quiet_rps": quiet["requests"] / (quiet["duration_us"] / 1e6),
        "attacked_rps": attacked["requests"] / (attacked["duration_us"] / 1e6),
        "attacked_errors": attacked["connect_errors"] + attacked["read_errors"]
        + attacked["write_errors"] + attacked["status_errors"] + attacked["timeouts"],
        "rss_quiet_kib": rss_quiet, "rss_peak_kib": sampler.peak,
    }
    result["p99_ratio"] = result["attacked_p99_us"] / max(result["quiet_p99_us"], 1)
    json.dump(result, open(out, "w"), indent=1)
    measure.log("under attack: %d attack connections held; RSS peak %.1f MiB (quiet %.1f); "
                "p99 %.0f us vs quiet %.0f us (x%.2f)" % (
                    opened, result["rss_peak_kib"] / 1024, rss_quiet / 1024,
                    result["attacked_p99_us"], result["quiet_p99_us"], result["p99_ratio"]))


if __name__ == "__main__":
    main()
