#!/usr/bin/env python3
"""`make bench-fanout`: one `tollgate controller` on the file source and SIDECARS real sidecar
processes streaming from it over loopback TLS; a manifest is changed CHANGES times, and the
time from each change until every sidecar serves it is reported (p50, p99).

A sidecar serves a change from the moment it logs `serving a new snapshot version=V` (at
info level, with the wall clock to the microsecond) with V past the version it served before:
read from its log afterwards, so that measuring adds no load (polling 100 sidecars' /metrics
would be most of the machine's work). Each change rotates one application's client secret,
the change the bar of issue 19 names. The file source reads its files once a second, so the
time from the write includes up to a second of that poll; the spread (first sidecar serving
the change to the last) is the fan-out itself.

Environment: TOLLGATE_BIN (the binary; required), SIDECARS (100), CHANGES (20),
APPLICATIONS (1000), FANOUT_RESULTS (bench/results/fanout.md). Standard library only.
"""

import base64
import datetime
import http.client
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tools import free_ports  # noqa: E402

BIN = os.environ["TOLLGATE_BIN"]
SIDECARS = int(os.environ.get("SIDECARS", "100"))
CHANGES = int(os.environ.get("CHANGES", "20"))
APPLICATIONS = int(os.environ.get("APPLICATIONS", "1000"))
RESULTS = os.environ.get(
    "FANOUT_RESULTS",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fanout.md"),
)
SERVING = re.compile(r"^(\S+)Z\s+INFO .*serving a new snapshot version=(\d+)")
PROCESSES = []


def log(message):
    print(f"[fanout {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def manifests(secret_of_app_0):
    parts = [
        """apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata: {name: svc}
spec:
  upstream: {port: 9}
  routes: [{pathPrefix: /event}]
  oauth2:
    provisionKeySecretRef: {name: pk}
    enablePasswordGrant: true
---
apiVersion: v1
kind: Secret
metadata: {name: pk}
stringData: {provisionKey: provisionkey}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secrets}
data:
"""
    ]
    for n in range(APPLICATIONS):
        secret = secret_of_app_0 if n == 0 else f"secret-{n}"
        parts.append(f"  app-{n}: {base64.b64encode(secret.encode()).decode()}\n")
    for n in range(APPLICATIONS):
        parts.append(
            f"""---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata: {{name: user-{n}}}
spec: {{username: user-{n}}}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata: {{name: app-{n}}}
spec:
  name: app-{n}
  consumerRef: {{name: user-{n}}}
  clientId: client-{n}
  clientSecretRef: {{name: app-secrets, key: app-{n}}}
  redirectUris: [https://localhost/callback]
"""
        )
    return "".join(parts)


def write_atomically(path, text):
    temporary = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(temporary, "w") as f:
        f.write(text)
    os.rename(temporary, path)


def start(args, log_path, level="warn"):
    # Nothing from the caller's TOLLGATE_* environment: only the flags given here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env["TOLLGATE_LOG"] = level
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "wb"),
        env=env,
    )
    PROCESSES.append(process)
    return process


def get(port, path, timeout=2.0):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(port, what, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} not ready in {seconds} s")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class ServingLog:
    """What one sidecar's log says it served: (wall-clock time, version), read as it grows."""

    def __init__(self, path):
        self.file = open(path, "rb")
        self.rest = b""
        self.served = []

    def read(self):
        self.rest += self.file.read()
        *lines, self.rest = self.rest.split(b"\n")
        for line in lines:
            match = SERVING.match(line.decode(errors="replace"))
            if match:
                when = datetime.datetime.fromisoformat(match.group(1) + "+00:00")
                self.served.append((when.timestamp(), int(match.group(2))))

    def version(self):
        return self.served[-1][1] if self.served else 0

    def first_past(self, version):
        return min(t for t, v in self.served if v > version)


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def main():
    work = tempfile.mkdtemp(prefix="tollgate-fanout-")
    try:
        run(work)
    finally:
        for process in PROCESSES:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in PROCESSES:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if os.environ.get("FANOUT_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def run(work):
    folder = os.path.join(work, "manifests")
    os.mkdir(folder)
    article = os.path.join(folder, "apps.yaml")
    write_atomically(article, manifests("rotation-0"))
    pods = "".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: iris-{n}\n  labels: {{app: iris}}\n"
        for n in range(SIDECARS)
    )
    write_atomically(os.path.join(folder, "pods.yaml"), pods)
    tokens = os.path.join(work, "tokens")
    with open(tokens, "w") as f:
        f.writelines(f"token-{n} default/iris-{n}\n" for n in range(SIDECARS))

    stream, admin, metrics = free_ports(3)
    ca = os.path.join(work, "ca.pem")
    controller = start(
        [BIN, "controller", "--manifests", folder, "--static-tokens", tokens,
         "--stream-listen", f"127.0.0.1:{stream}", "--admin-listen", f"127.0.0.1:{admin}",
         "--metrics-listen", f"127.0.0.1:{metrics}", "--ca-out", ca],
        os.path.join(work, "controller.log"),
    )
    # Hashing every client secret (PBKDF2, about 10 ms each) comes before ready.
    wait_ready(metrics, "the controller", seconds=60 + APPLICATIONS // 20)
    log(f"controller ready: {APPLICATIONS} applications, {SIDECARS} pods")

    ports = free_ports(2 * SIDECARS)
    sidecars = []
    for n in range(SIDECARS):
        token = os.path.join(work, f"token-{n}")
        with open(token, "w") as f:
            f.write(f"token-{n}\n")
        listen, metrics_port = ports[2 * n], ports[2 * n + 1]
        process = start(
            [BIN, "sidecar", "--listen", f"127.0.0.1:{listen}",
             "--metrics-listen", f"127.0.0.1:{metrics_port}",
             "--controller", f"https://localhost:{stream}", "--controller-ca", ca,
             "--token-file", token, "--pod-name", f"iris-{n}", "--pod-namespace", "default"],
            os.path.join(work, f"sidecar-{n}.log"),
            level="info",
        )
        sidecars.append((process, metrics_port))
    for n, (_, port) in enumerate(sidecars):
        wait_ready(port, f"sidecar {n}")
    log(f"{SIDECARS} sidecars ready")

    time.sleep(1.0)
    ready_rss = [rss_kib(process.pid) / 1024 for process, _ in sidecars]
    logs = [ServingLog(os.path.join(work, f"sidecar-{n}.log")) for n in range(SIDECARS)]
    to_all, spread = [], []
    for change in range(1, CHANGES + 1):
        for served in logs:
            served.read()
        before = [served.version() for served in logs]
        written = time.time()
        write_atomically(article, manifests(f"rotation-{change}"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.2)
            for served in logs:
                served.read()
            if all(s.version() > b for s, b in zip(logs, before)):
                break
        else:
            raise SystemExit(f"change {change}: not every sidecar served it in 60 s")
        seen = [served.first_past(b) for served, b in zip(logs, before)]
        to_all.append(max(seen) - written)
        spread.append(max(seen) - min(seen))
        log(f"change {change}: every sidecar in {to_all[-1] * 1000:.0f} ms "
            f"(first to last {spread[-1] * 1000:.0f} ms)")
        # Past the file source's next poll, at a random phase of it: the poll's wait is then
        # spread evenly over [0, 1 s), not the same in every change.
        time.sleep(1.0 + random.random())

    scrape = get(metrics, "/metrics")[1].decode()
    pushed = re.search(r"^tollgate_controller_snapshots_pushed_total (\S+)", scrape, re.M)
    deltas = re.search(r"^tollgate_controller_deltas_pushed_total (\S+)", scrape, re.M)
    sidecar_rss = [rss_kib(process.pid) / 1024 for process, _ in sidecars]
    report = f"""| sidecars | applications | changes | every sidecar serves it, p50 | p99 | first to last sidecar, p50 | p99 | sidecar RSS at start, mean / max | after the changes | controller RSS | pushes (of which deltas) |
|---|---|---|---|---|---|---|---|---|---|---|
| {SIDECARS} | {APPLICATIONS:,} | {CHANGES} | {percentile(to_all, 50) * 1000:.0f} ms | {percentile(to_all, 99) * 1000:.0f} ms | {percentile(spread, 50) * 1000:.0f} ms | {percentile(spread, 99) * 1000:.0f} ms | {statistics.mean(ready_rss):.1f} / {max(ready_rss):.1f} MiB | {statistics.mean(sidecar_rss):.1f} / {max(sidecar_rss):.1f} MiB | {rss_kib(controller.pid) / 1024:.1f} MiB | {pushed.group(1) if pushed else '?'} ({deltas.group(1) if deltas else '?'}) |
"""
    print(report)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write(f"<!-- {' '.join(sys.argv)} TOLLGATE_BIN={BIN} -->\n{report}")


if __name__ == "__main__":
    main()
