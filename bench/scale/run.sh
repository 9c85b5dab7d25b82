#!/usr/bin/env bash
# Shared-route scale benchmark: starts `meridian dev` (3 hub nodes, 2 clusters) from a release
# build, loads ROUTES shared HTTPRoutes through the admin API, then times single changes until
# every gateway serves them, and prints the processes' memory. See load.py.
# Environment: ROUTES (10000), CONCURRENCY (16), PROBES (20), SKIP_BUILD (unset), PROFILE
# (release), MERIDIAN (the binary; default target/$PROFILE/meridian, built here).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUTES="${ROUTES:-10000}"
CONCURRENCY="${CONCURRENCY:-16}"
PROBES="${PROBES:-20}"
PROFILE="${PROFILE:-release}"
profile_flag=()
[ "$PROFILE" = "release" ] && profile_flag=(--release)

MERIDIAN="${MERIDIAN:-target/$PROFILE/meridian}"
if [ -z "${SKIP_BUILD:-}" ] && [ "$MERIDIAN" = "target/$PROFILE/meridian" ]; then
    cargo build -j2 "${profile_flag[@]}" -p meridian
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/meridian-scale.XXXXXX")"
dev_pid=""
cleanup() {
    [ -n "$dev_pid" ] && kill "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
    rm -rf "$workdir"
}
trap cleanup EXIT

"$MERIDIAN" dev --state-dir "$workdir/dev" --ready-file "$workdir/ready.json" \
    > "$workdir/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 600); do
    [ -s "$workdir/ready.json" ] && break
    kill -0 "$dev_pid" 2>/dev/null || { cat "$workdir/dev.log"; exit 1; }
    sleep 0.1
done
[ -s "$workdir/ready.json" ] || { echo "meridian dev did not come up"; exit 1; }

python3 bench/scale/load.py --dev-json "$workdir/dev/dev.json" --routes "$ROUTES" \
    --concurrency "$CONCURRENCY" --probes "$PROBES"
