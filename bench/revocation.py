#!/usr/bin/env python3
"""Revocation latency: two sidecars share one Redis. N times: issue a token on sidecar A,
check that A and B both accept it (which fills any validation cache), find its id on A's admin
API, then DELETE it there and poll A and B until both refuse it. The latency is from just
before the DELETE is sent until the later of the two first refusals.

    revocation.py A_URL A_ADMIN_URL B_URL CAFILE OUT.json [N]

Standard library only: http.client and ssl, one kept-alive TLS connection per endpoint, so a
poll costs a request, not a handshake (about 0.1 to 0.3 ms here, the resolution of the figure).
"""

import json
import statistics
import sys
import time

import tools

TIMEOUT_S = 5.0


def percentile(values, q):
    """Nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def main():
    a_url, admin_url, b_url, cafile, out = sys.argv[1:6]
    n = int(sys.argv[6]) if len(sys.argv) > 6 else 200
    a, b = tools.connection(a_url, cafile), tools.connection(b_url, cafile)
    admin = tools.connection(admin_url, cafile)
    token_path = "/oauth2/token"
    run = "%x" % int(time.time())
    latencies, delete_ms, polls, timeouts = [], [], [], 0

    for i in range(n):
        user = "rev-%s-%d" % (run, i)
        status, data = tools.request(a, "POST", token_path, body=json.dumps({
            "client_id": "benchclient", "client_secret": "benchsecret",
            "grant_type": "password", "provision_key": "benchprovisionkey",
            "authenticated_userid": user}), headers={"Content-Type": "application/json"})
        if status != 200:
            raise SystemExit("token endpoint answered %d: %r" % (status, data[:300]))
        bearer = {"Authorization": "Bearer " + json.loads(data)["access_token"]}
        for name, conn in (("A", a), ("B", b)):
            status, _ = tools.request(conn, "GET", "/", headers=bearer)
            if status != 200:
                raise SystemExit("sidecar %s refused a fresh token: %d" % (name, status))
        status, data = tools.request(
            admin, "GET", "/default/oauth2_tokens?authenticated_userid=" + user)
        entries = json.loads(data)["data"] if status == 200 else []
        if len(entries) != 1:
            raise SystemExit("admin list for %s answered %d: %r" % (user, status, data[:300]))
        token_id = entries[0]["id"]

        t0 = time.perf_counter()
        status, _ = tools.request(admin, "DELETE", "/default/oauth2_tokens/" + token_id)
        t_deleted = time.perf_counter()
        if status != 204:
            raise SystemExit("admin DELETE answered %d" % status)
        refused = {}
        count = 0
        while len(refused) < 2 and time.perf_counter() - t0 < TIMEOUT_S:
            for name, conn in (("A", a), ("B", b)):
                if name in refused:
                    continue
                status, _ = tools.request(conn, "GET", "/", headers=bearer)
                count += 1
                if status == 401:
                    refused[name] = time.perf_counter()
        if len(refused) < 2:
            timeouts += 1
            latencies.append(TIMEOUT_S * 1000)
        else:
            latencies.append((max(refused.values()) - t0) * 1000)
        delete_ms.append((t_deleted - t0) * 1000)
        polls.append(count)

    result = {
        "n": n, "timeouts": timeouts, "timeout_s": TIMEOUT_S,
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies), "mean_ms": statistics.mean(latencies),
        "delete_p50_ms": percentile(delete_ms, 50), "delete_p99_ms": percentile(delete_ms, 99),
        "polls_p50": percentile(polls, 50), "polls_max": max(polls),
        "latencies_ms": latencies,
    }
    json.dump(result, open(out, "w"), indent=1)
    print("revocation seen by both sidecars: p50 %.2f ms, p99 %.2f ms, max %.2f ms "
          "(DELETE itself p50 %.2f ms; %d timeouts of %d)" % (
              result["p50_ms"], result["p99_ms"], result["max_ms"], result["delete_p50_ms"],
              timeouts, n), file=sys.stderr)


if __name__ == "__main__":
    main()
