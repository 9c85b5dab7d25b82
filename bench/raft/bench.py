#!/usr/bin/env python3
"""Raft write benchmark: a 3-node `meridian hub` group against a 3-member etcd cluster.

Both run on loopback on this machine, with fsync on (their defaults), and get the same closed-loop
workload over HTTP/1.1 keep-alive from this script:

- sequential writes to the leader: commit latency p50/p99 and writes/s;
- sequential writes through a follower (forwarded to the leader);
- concurrent writes from N client threads: writes/s;
- leader elections: `kill -9` the leader, time until the survivors agree on a new one.

Meridian writes are `PUT /v1/clusters/bench-<i>` on the admin API (one raft proposal each; the
body is about 60 bytes). etcd writes are `POST /v3/kv/put` on its gRPC gateway with a value of
the same size. The etcd gateway adds a little HTTP->gRPC overhead on etcd's side; the hub's
admin API adds JSON validation on ours.

Usage:
    bench/raft/run.sh                       # builds `meridian` (release) and runs both
    bench/raft/bench.py --meridian target/release/meridian [--skip-etcd] [--writes 2000]
                        [--concurrency 32] [--kills 5] [--runs 3] [--workdir DIR] [--json OUT]
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# === helpers ===


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    rank = round((len(sorted_values) - 1) * p)
    return sorted_values[rank]


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=10)

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if body is not None:
            headers.setdefault("content-type", "application/json")
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")


def wait_until(what, timeout, condition, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# === systems under test ===


class Meridian:
    name = "meridian"

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = os.path.join(workdir, "meridian")
        self.nodes = {}
        for node_id in (1, 2, 3):
            self.nodes[node_id] = {
                "grpc": free_port(),
                "admin": free_port(),
                "dns": free_port(),
                "dir": os.path.join(self.workdir, f"node-{node_id}"),
                "ready": os.path.join(self.workdir, f"ready-{node_id}.json"),
                "proc": None,
            }
        self.peers = ",".join(f"{i}=127.0.0.1:{n['grpc']}" for i, n in self.nodes.items())

    def start(self, node_id):
        node = self.nodes[node_id]
        os.makedirs(self.workdir, exist_ok=True)
        log = open(os.path.join(self.workdir, f"node-{node_id}.log"), "ab")
        node["proc"] = subprocess.Popen(
            [
                self.binary, "hub",
                "--id", str(node_id),
                "--data-dir", node["dir"],
                "--grpc", f"127.0.0.1:{node['grpc']}",
                "--admin", f"127.0.0.1:{node['admin']}",
                "--dns", f"127.0.0.1:{node['dns']}",
                "--peers", self.peers,
                "--ready-file", node["ready"],
            ],
            stdout=log, stderr=log,
        )
        wait_until(f"meridian node {node_id} ready", 30, lambda: os.path.exists(node["ready"]))

    def start_all(self):
        for node_id in self.nodes:
            self.start(node_id)

    def kill(self, node_id):
        proc = self.nodes[node_id]["proc"]
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.nodes[node_id]["proc"] = None

    def stop_all(self):
        for node_id in self.nodes:
            self.kill(node_id)

    def client(self, node_id):
        return Client("127.0.0.1", self.nodes[node_id]["admin"])

    def leader_seen_by(self, node_id):
        status, body = self.client(node_id).request("GET", "/v1/status")
        if status != 200:
            return 0
        doc = json.loads(body)
        return doc.get("leader_id", 0)

    def write(self, client, i, value_size):
        body = json.dumps({"region": "bench", "addresses": [f"192.0.2.{i % 250 + 1}"]})
        status, data = client.request("PUT", f"/v1/clusters/bench-{i}", body=body)
        if status != 200:
            raise RuntimeError(f"meridian write {i}: HTTP {status} {data[:200]!r}")


class Etcd:
    name = "etcd"

    def __init__(self, workdir):
        self.workdir = os.path.join(workdir, "etcd")
        self.nodes = {}
        for node_id in (1, 2, 3):
            self.nodes[node_id] = {
                "client": free_port(),
                "peer": free_port(),
                "dir": os.path.join(self.workdir, f"node-{node_id}"),
                "proc": None,
            }
        self.cluster = ",".join(
            f"m{i}=http://127.0.0.1:{n['peer']}" for i, n in self.nodes.items()
        )
        self.ids = {}

    def start(self, node_id):
        node = self.nodes[node_id]
        os.makedirs(self.workdir, exist_ok=True)
        log = open(os.path.join(self.workdir, f"node-{node_id}.log"), "ab")
        state = "existing" if os.path.exists(node["dir"]) else "new"
        node["proc"] = subprocess.Popen(
            [
                "etcd",
                "--name", f"m{node_id}",
                "--data-dir", node["dir"],
                "--listen-client-urls", f"http://127.0.0.1:{node['client']}",
                "--advertise-client-urls", f"http://127.0.0.1:{node['client']}",
                "--listen-peer-urls", f"http://127.0.0.1:{node['peer']}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{node['peer']}",
                "--initial-cluster", self.cluster,
                "--initial-cluster-state", state,
                "--initial-cluster-token", "meridian-bench",
                "--log-level", "warn",
            ],
            stdout=log, stderr=log,
        )

        def up():
            status, body = self.client(node_id).request("POST", "/v3/maintenance/status", body="{}")
            if status != 200:
                return False
            doc = json.loads(body)
            self.ids[node_id] = doc["header"]["member_id"]
            return True

        wait_until(f"etcd member {node_id} up", 30, up, interval=0.05)

    def start_all(self):
        threads = [threading.Thread(target=self.start, args=(i,)) for i in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def kill(self, node_id):
        proc = self.nodes[node_id]["proc"]
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.nodes[node_id]["proc"] = None

    def stop_all(self):
        for node_id in self.nodes:
            self.kill(node_id)

    def client(self, node_id):
        return Client("127.0.0.1", self.nodes[node_id]["client"])

    def leader_seen_by(self, node_id):
        status, body = self.client(node_id).request("POST", "/v3/maintenance/status", body="{}")
        if status != 200:
            return 0
        leader = json.loads(body).get("leader", "0")
        for i, member in self.ids.items():
            if member == leader:
                return i
        return 0

    def write(self, client, i, value_size):
        key = base64.b64encode(f"bench/{i}".encode()).decode()
        value = base64.b64encode(b"x" * value_size).decode()
        body = json.dumps({"key": key, "value": value})
        status, data = client.request("POST", "/v3/kv/put", body=body)
        if status != 200:
            raise RuntimeError(f"etcd write {i}: HTTP {status} {data[:200]!r}")


# === workload ===


def leader(system, among):
    def agreed():
        seen = {system.leader_seen_by(i) for i in among}
        if len(seen) == 1:
            (only,) = seen
            if only in among:
                return only
        return 0

    return wait_until(f"{system.name} leader among {among}", 30, agreed, interval=0.002)


def sequential(system, node_id, writes, value_size, offset):
    client = system.client(node_id)
    latencies = []
    started = time.monotonic()
    for i in range(writes):
        t = time.monotonic()
        system.write(client, offset + i, value_size)
        latencies.append((time.monotonic() - t) * 1000.0)
    rate = writes / (time.monotonic() - started)
    latencies.sort()
    return {
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "writes_per_s": rate,
    }


def concurrent(system, node_id, writes, value_size, offset, concurrency):
    per_thread = max(1, writes // concurrency)
    errors = []

    def run(thread):
        client = system.client(node_id)
        try:
            for i in range(per_thread):
                system.write(client, offset + thread * per_thread + i, value_size)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if errors:
        raise errors[0]
    return {"writes_per_s": per_thread * concurrency / elapsed, "clients": concurrency}


def elections(system, kills):
    times = []
    for _ in range(kills):
        all_ids = list(system.nodes)
        old = leader(system, all_ids)
        rest = [i for i in all_ids if i != old]
        t = time.monotonic()
        system.kill(old)
        new = leader(system, rest)
        times.append((time.monotonic() - t) * 1000.0)
        assert new != old
        system.start(old)
        leader(system, all_ids)
    return times


def run_system(system, args):
    print(f"== {system.name}", flush=True)
    system.start_all()
    try:
        all_ids = list(system.nodes)
        lead = leader(system, all_ids)
        follower = next(i for i in all_ids if i != lead)
        sequential(system, lead, 50, args.value_size, 10_000_000)  # warm-up
        result = {
            "via_leader": sequential(system, lead, args.writes, args.value_size, 0),
            "via_follower": sequential(system, follower, args.writes // 2, args.value_size, 1_000_000),
            "concurrent": concurrent(
                system, lead, args.writes * 2, args.value_size, 2_000_000, args.concurrency
            ),
            "election_ms": elections(system, args.kills),
        }
    finally:
        system.stop_all()
    print(json.dumps(result, indent=2), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meridian", help="path to the meridian binary (skip meridian if absent)")
    parser.add_argument("--skip-etcd", action="store_true")
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--value-size", type=int, default=60)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--workdir", help="data directories (default: a temporary directory on disk)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--runs", type=int, default=1,
        help="rounds; each runs meridian then etcd, so both see the same machine load; the "
        "table shows medians with the spread (min-max) over rounds",
    )
    args = parser.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="meridian-raft-bench-", dir=os.getcwd())
    results = {"meridian": [], "etcd": []}
    try:
        for run in range(args.runs):
            print(f"== round {run + 1} of {args.runs}; load average {os.getloadavg()}", flush=True)
            run_dir = os.path.join(workdir, f"round-{run + 1}")
            if args.meridian:
                results["meridian"].append(run_system(Meridian(args.meridian, run_dir), args))
            if not args.skip_etcd:
                if shutil.which("etcd") is None:
                    print("etcd not found: apt-get install etcd-server etcd-client", file=sys.stderr)
                else:
                    results["etcd"].append(run_system(Etcd(run_dir), args))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    if results["meridian"] and results["etcd"]:
        print_table(results["meridian"], results["etcd"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def print_table(meridian_runs, etcd_runs):
    """Medians over rounds, their spread, and the ratio of the medians (meridian / etcd)."""
    metrics = [
        ("commit p50 via leader (ms)", lambda r: r["via_leader"]["p50_ms"]),
        ("commit p99 via leader (ms)", lambda r: r["via_leader"]["p99_ms"]),
        ("commit p50 via follower (ms)", lambda r: r["via_follower"]["p50_ms"]),
        ("commit p99 via follower (ms)", lambda r: r["via_follower"]["p99_ms"]),
        ("sequential writes/s", lambda r: r["via_leader"]["writes_per_s"]),
        ("concurrent writes/s", lambda r: r["concurrent"]["writes_per_s"]),
        ("election after kill -9, median (ms)", lambda r: median(r["election_ms"])),
        ("election after kill -9, max (ms)", lambda r: max(r["election_ms"])),
    ]
    print(f"\nmedian over {len(meridian_runs)} round(s), [min-max]")
    print(f"{'metric':38} {'meridian':>22} {'etcd':>22} {'ratio':>6}")
    for name, get in metrics:
        mv = [get(r) for r in meridian_runs]
        ev = [get(r) for r in etcd_runs]
        cell = lambda v: f"{median(v):8.2f} [{min(v):.1f}-{max(v):.1f}]"
        print(f"{name:38} {cell(mv):>22} {cell(ev):>22} {median(mv) / median(ev):6.2f}")


if __name__ == "__main__":
    main()
