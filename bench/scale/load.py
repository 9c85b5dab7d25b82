#!/usr/bin/env python3
"""Shared-route scale benchmark against a running `meridian dev`.

1. Loads N shared HTTPRoutes through the hub's admin API, C requests at a time, and prints the
   rate per block of routes (a rate that falls as routes grow means per-change work grows
   with the route count).
2. At N routes, puts P more routes one at a time and measures how long each takes from the
   PUT until every cluster's gateway serves it (a user's "I applied it, when does it work").
3. Prints the resident memory (now and peak) of every hub node, agent and gateway.

Only loopback addresses from dev.json are contacted.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

ZONE_LABEL = "scale"


def route_body(name, hostname):
    return json.dumps(
        {
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {
                "parentRefs": [{"name": "global", "namespace": "meridian-system"}],
                "hostnames": [hostname],
                "rules": [{"backendRefs": [{"name": "echo", "port": 8080}]}],
            },
        }
    ).encode()


class Admin:
    """One keep-alive connection per thread to the hub's admin API."""

    def __init__(self, url):
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.local = threading.local()

    def put(self, path, body):
        for attempt in range(5):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                self.local.conn = conn
            try:
                conn.request("PUT", path, body, {"content-type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                if response.status >= 300:
                    raise RuntimeError(f"PUT {path}: {response.status} {data[:200]!r}")
                return
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 4:
                    raise
                time.sleep(0.2)


def served(gateway, hostname):
    host, port = gateway.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/", headers={"host": hostname})
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def rss_kib(pid):
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
    except OSError:
        return None
    return values


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dev-json", required=True)
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--block", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--prefix", default="probe", help="names of the single-change routes")
    parser.add_argument("--no-load", action="store_true", help="only the single changes")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds idle before memory is read again")
    args = parser.parse_args()

    with open(args.dev_json) as f:
        dev = json.load(f)
    admin = Admin(dev["admin"])
    zone = dev["zone"]

    def put(i):
        name = f"r{i:05d}"
        admin.put(f"/v1/routes/demo/{name}", route_body(name, f"{name}.{ZONE_LABEL}.{zone}"))

    if not args.no_load:
        load(args, admin, dev, zone, put)
    probe(args, admin, dev, zone)
    memory(dev, "right after the changes")
    time.sleep(args.settle)
    memory(dev, f"after {args.settle:.0f} s idle")


def load(args, admin, dev, zone, put):
    print(f"== loading {args.routes} routes, {args.concurrency} at a time")
    rates = []
    started = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as pool:
        for first in range(0, args.routes, args.block):
            t0 = time.monotonic()
            list(pool.map(put, range(first, min(first + args.block, args.routes))))
            elapsed = time.monotonic() - t0
            rate = (min(first + args.block, args.routes) - first) / elapsed
            rates.append(rate)
            print(f"  routes {first:>6}..{first + args.block:<6} {rate:8.1f} routes/s", flush=True)
    total = time.monotonic() - started
    print(f"  all {args.routes} routes in {total:.1f} s ({args.routes / total:.1f} routes/s); "
          f"last block / first block rate: {rates[-1] / rates[0]:.2f}")

    # Let the agents and gateways settle on the bulk load before timing single changes.
    last = f"r{args.routes - 1:05d}.{ZONE_LABEL}.{zone}"
    t0 = time.monotonic()
    while not all(served(c["gateway"], last) for c in dev["clusters"]):
        if time.monotonic() - t0 > 600:
            sys.exit(f"the last loaded route {last} is not served after 600 s")
        time.sleep(0.05)
    print(f"  every gateway served the last route {time.monotonic() - t0:.1f} s after the last PUT")



def probe(args, admin, dev, zone):
    print(f"== {args.probes} single changes at {args.routes} routes: PUT until every gateway serves")
    latencies = []
    for k in range(args.probes):
        name = f"{args.prefix}{k:03d}"
        hostname = f"{name}.{ZONE_LABEL}.{zone}"
        t0 = time.monotonic()
        admin.put(f"/v1/routes/demo/{name}", route_body(name, hostname))
        put_done = time.monotonic() - t0
        pending = list(dev["clusters"])
        while pending:
            pending = [c for c in pending if not served(c["gateway"], hostname)]
            if time.monotonic() - t0 > 120:
                sys.exit(f"{hostname} not served after 120 s")
            if pending:
                time.sleep(0.01)
        latencies.append((put_done, time.monotonic() - t0))
    commits = sorted(l[0] * 1000 for l in latencies)
    served_ms = sorted(l[1] * 1000 for l in latencies)
    print(f"  PUT answered: median {statistics.median(commits):.0f} ms, max {commits[-1]:.0f} ms")
    print(f"  served everywhere: median {statistics.median(served_ms):.0f} ms, "
          f"max {served_ms[-1]:.0f} ms")



def memory(dev, when):
    print(f"== memory (KiB) {when}: now / peak")
    for hub in dev["hubs"]:
        m = rss_kib(hub["pid"]) or {}
        print(f"  hub {hub['id']}: {m.get('VmRSS')} / {m.get('VmHWM')}")
    for c in dev["clusters"]:
        for what in ("agent", "gateway"):
            m = rss_kib(c[f"{what}_pid"]) or {}
            print(f"  {c['name']} {what}: {m.get('VmRSS')} / {m.get('VmHWM')}")


if __name__ == "__main__":
    main()
