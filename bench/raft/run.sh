#!/usr/bin/env bash
# Raft write benchmark, one machine, one run, fsync on:
#   1. the hub's raft library in-process (3 nodes on loopback): hub/examples/raft_bench.rs;
#   2. a 3-node `meridian hub` group vs a 3-member etcd cluster, same HTTP workload and
#      kill -9 elections: bench/raft/bench.py (prints a table with ratios).
# Needs etcd (Debian: apt-get install etcd-server etcd-client) and python3.
# Environment: WRITES (2000), CONCURRENCY (32), KILLS (5), RUNS (3: rounds of meridian then
# etcd; the table shows medians and spread), PROFILE (release).
set -euo pipefail
cd "$(dirname "$0")/../.."

WRITES="${WRITES:-2000}"
CONCURRENCY="${CONCURRENCY:-32}"
KILLS="${KILLS:-5}"
RUNS="${RUNS:-3}"
PROFILE="${PROFILE:-release}"
profile_flag=()
[ "$PROFILE" = "release" ] && profile_flag=(--release)

if ! command -v etcd >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y etcd-server etcd-client >/dev/null
fi

echo "== building (profile $PROFILE)"
cargo build -j2 "${profile_flag[@]}" -p meridian-hub --example raft_bench
cargo build -j2 "${profile_flag[@]}" -p meridian

# Data directories on the repository's disk (not a tmpfs), so fsync costs what it costs.
workdir="$(mktemp -d "$PWD/target/raft-bench.XXXXXX")"
trap 'rm -rf "$workdir"' EXIT

echo "== in-process library"
"target/$PROFILE/examples/raft_bench" --writes "$WRITES" --concurrency "$((CONCURRENCY * 2))" \
    --elections "$KILLS" --value-size 60 --dir "$workdir"

echo "== meridian hub vs etcd"
python3 bench/raft/bench.py --meridian "target/$PROFILE/meridian" --writes "$WRITES" \
    --concurrency "$CONCURRENCY" --kills "$KILLS" --runs "$RUNS" --workdir "$workdir/procs" \
    --json "$workdir/../raft-bench.json"
echo "results: target/raft-bench.json"
