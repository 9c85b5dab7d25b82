#!/usr/bin/env bash
# Gateway benchmark: wrk against Meridian's gateway, nginx and HAProxy, each proxying the same
# nginx `return 200` backend on loopback, reproducing baselines.md Part B. Prints req/s, p99,
# the gateway/nginx and gateway/HAProxy ratios, CPU-independent RSS, and the gateway's idle RSS.
#
# Usage: bench/gateway/run.sh            (RUNS=3 DURATION=15 by default; median of runs)
#        RUNS=1 DURATION=10 SKIP_BUILD=1 bench/gateway/run.sh
# Needs root for apt-get (installs wrk, nginx-light, haproxy if missing) and builds the release
# binary. Only loopback addresses are used.
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-15}
CONNS=${CONNS:-"64 256"}
BACKEND_PORT=${BACKEND_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
HAPROXY_PORT=${HAPROXY_PORT:-18083}
GATEWAY_PORT=${GATEWAY_PORT:-18084}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/meridian-gw-bench.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# SKIP_BUILD=1 reuses an existing target/release/meridian.
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release -j2 -p meridian >/dev/null 2>&1)
fi
MERIDIAN="$ROOT/target/release/meridian"

# --- backend: nginx `return 200` (baselines.md Part B) ---
mkdir -p "$WORK/backend" "$WORK/nginx"
cat >"$WORK/backend/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 "ok\n"; } }
}
CONF
nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

# --- nginx proxy ---
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 8192; }
http {
  access_log off;
  upstream be { server 127.0.0.1:$BACKEND_PORT; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=($NGINX_PID)

# --- HAProxy ---
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
CONF
haproxy -f "$WORK/haproxy.cfg" &
HAPROXY_PID=$!
PIDS+=($HAPROXY_PID)

# --- Meridian gateway, standalone, same backend ---
mkdir -p "$WORK/gw"
cat >"$WORK/gw/gateway.yaml" <<CONF
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners: [{name: http, port: $GATEWAY_PORT, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench, namespace: default}
spec:
  parentRefs: [{name: bench}]
  rules: [{backendRefs: [{name: backend, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec: {ports: [{port: 80, targetPort: $BACKEND_PORT}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: default, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
ports: [{port: $BACKEND_PORT}]
CONF
MERIDIAN_LOG=warn "$MERIDIAN" gateway --config-dir "$WORK/gw" --ready-file "$WORK/gw.ready" &
GATEWAY_PID=$!
PIDS+=($GATEWAY_PID)

wait_http() {
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing answers on :$1" >&2; exit 1
}
for p in $BACKEND_PORT $NGINX_PORT $HAPROXY_PORT $GATEWAY_PORT; do wait_http "$p"; done

rss_kib() { # RSS of a process and its children, KiB
  local total=0
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
GATEWAY_IDLE_RSS=$(rss_kib "$GATEWAY_PID")

cpu_ticks() { # utime+stime of a process and its children, in clock ticks
  local total=0
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# wrk output -> "req_per_sec p99_ms requests"
run_wrk() {
  wrk -t2 -c"$2" -d"${DURATION}s" --latency "http://127.0.0.1:$1/" | awk '
    /Requests\/sec/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    /requests in/ {n=$1}
    /Non-2xx|Socket errors/ {print "WARN " $0 > "/dev/stderr"}
    END {printf "%.0f %.2f %d\n", rps, p99, n}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "load before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews absolute numbers)"
declare -A RPS P99 RSS CPU
for conns in $CONNS; do
  for target in nginx haproxy gateway; do
    case $target in
      nginx) port=$NGINX_PORT; pid=$NGINX_PID ;;
      haproxy) port=$HAPROXY_PORT; pid=$HAPROXY_PID ;;
      gateway) port=$GATEWAY_PORT; pid=$GATEWAY_PID ;;
    esac
    wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$port/" >/dev/null # warm-up
    rps_runs=(); p99_runs=(); cpu_runs=()
    for _ in $(seq 1 "$RUNS"); do
      before=$(cpu_ticks "$pid")
      read -r rps p99 n < <(run_wrk "$port" "$conns")
      after=$(cpu_ticks "$pid")
      rps_runs+=("$rps"); p99_runs+=("$p99")
      cpu_runs+=("$(awk -v t=$((after - before)) -v n="$n" -v us="$TICK_US" 'BEGIN {printf "%.1f", t * us / n}')")
    done
    CPU[$target,$conns]=$(printf '%s\n' "${cpu_runs[@]}" | median)
    RPS[$target,$conns]=$(printf '%s\n' "${rps_runs[@]}" | median)
    P99[$target,$conns]=$(printf '%s\n' "${p99_runs[@]}" | median)
    RSS[$target,$conns]=$(rss_kib "$pid")
  done
done

echo
echo "Meridian gateway vs nginx vs HAProxy (wrk -t2, ${DURATION}s, median of $RUNS; loopback, shared cores)"
printf '%-8s %5s %10s %8s %12s %10s\n' target conns req/s p99_ms cpu_us/req RSS_KiB
for conns in $CONNS; do
  for target in nginx haproxy gateway; do
    printf '%-8s %5s %10s %8s %12s %10s\n' "$target" "$conns" "${RPS[$target,$conns]}" "${P99[$target,$conns]}" "${CPU[$target,$conns]}" "${RSS[$target,$conns]}"
  done
done
echo
for conns in $CONNS; do
  awk -v g="${RPS[gateway,$conns]}" -v n="${RPS[nginx,$conns]}" -v h="${RPS[haproxy,$conns]}" \
      -v gp="${P99[gateway,$conns]}" -v np="${P99[nginx,$conns]}" -v hp="${P99[haproxy,$conns]}" -v c="$conns" \
      'BEGIN {printf "c%-4s gateway/nginx req/s %.2fx (p99 %.2f vs %.2f ms)   gateway/haproxy req/s %.2fx (p99 %.2f vs %.2f ms)\n", c, g/n, gp, np, g/h, gp, hp}'
done
echo "gateway idle RSS: ${GATEWAY_IDLE_RSS} KiB (target < 15360)"
