#!/usr/bin/env bash
# Gateway benchmark: wrk against Meridian's gateway, nginx and HAProxy, each proxying the same
# nginx `return 200` backend on loopback, reproducing baselines.md Part B. Prints req/s, p99,
# the gateway/nginx and gateway/HAProxy ratios, CPU microseconds per request, RSS, and the
# gateway's idle RSS.
#
# Usage: bench/gateway/run.sh            (RUNS=3 DURATION=15 by default; median of runs)
#        RUNS=1 DURATION=10 SKIP_BUILD=1 bench/gateway/run.sh
# Runs alternate between the targets; each waits up to QUIET_WAIT=60 s for the machine to be
# under QUIET_BUSY=25 % busy, and the per-run lines show how busy it was.
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
[[ -x /usr/bin/time ]] || need+=(time)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# SKIP_BUILD=1 reuses an existing target/release/meridian; MERIDIAN=PATH benchmarks another
# binary (an older build, for a before/after comparison) and builds nothing.
if [[ -z "${MERIDIAN:-}" && "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release -j2 -p meridian >/dev/null 2>&1)
fi
MERIDIAN=${MERIDIAN:-$ROOT/target/release/meridian}

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

cpu_ticks() { # "utime stime" of a process and its children, in clock ticks
  local user=0 sys=0 u s
  for pid in $1 $(pgrep -P "$1" || true); do
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat" 2>/dev/null || echo 0 0)
    user=$((user + u)); sys=$((sys + s))
  done
  echo "$user $sys"
}
BACKEND_PID=$(cat "$WORK/backend/nginx.pid")
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# wrk output -> "req_per_sec p99_ms requests"; wrk's own CPU seconds go to $WORK/wrk.time
run_wrk() {
  /usr/bin/time -f '%U %S' -o "$WORK/wrk.time" wrk -t2 -c"$2" -d"${DURATION}s" --latency "http://127.0.0.1:$1/" | awk '
    /Requests\/sec/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    /requests in/ {n=$1}
    /Non-2xx|Socket errors/ {print "WARN " $0 > "/dev/stderr"}
    END {printf "%.0f %.2f %d\n", rps, p99, n}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Percent of both cores busy over one second (everything on the machine, /proc/stat).
busy_pct() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 1
  read -r -a b < <(head -1 /proc/stat)
  awk -v u1="${a[1]}" -v n1="${a[2]}" -v s1="${a[3]}" -v i1="${a[4]}" -v w1="${a[5]}" -v q1="${a[6]}" -v sq1="${a[7]}" -v st1="${a[8]}" \
      -v u2="${b[1]}" -v n2="${b[2]}" -v s2="${b[3]}" -v i2="${b[4]}" -v w2="${b[5]}" -v q2="${b[6]}" -v sq2="${b[7]}" -v st2="${b[8]}" \
      'BEGIN {busy = (u2-u1)+(n2-n1)+(s2-s1)+(q2-q1)+(sq2-sq1)+(st2-st1); idle = (i2-i1)+(w2-w1);
              printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0}'
}
# Waits (at most QUIET_WAIT seconds) until the machine is quiet (< QUIET_BUSY % busy) so other
# work skews a run as little as possible; prints the last busy figure.
wait_quiet() {
  local waited=0 busy
  busy=$(busy_pct)
  while ((busy >= QUIET_BUSY && waited < QUIET_WAIT)); do
    sleep 2
    waited=$((waited + 3))
    busy=$(busy_pct)
  done
  echo "$busy"
}
QUIET_BUSY=${QUIET_BUSY:-25}
QUIET_WAIT=${QUIET_WAIT:-60}

port_of() { case $1 in nginx) echo "$NGINX_PORT" ;; haproxy) echo "$HAPROXY_PORT" ;; gateway) echo "$GATEWAY_PORT" ;; esac; }
pid_of() { case $1 in nginx) echo "$NGINX_PID" ;; haproxy) echo "$HAPROXY_PID" ;; gateway) echo "$GATEWAY_PID" ;; esac; }

echo "load before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews absolute numbers)"
echo "per run (targets alternate; busy = % of the machine busy in the second before the run):"
declare -A RPS P99 RSS CPU RPS_RUNS P99_RUNS CPU_RUNS SPLIT SPLIT_RUNS
for conns in $CONNS; do
  for target in nginx haproxy gateway; do
    wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$(port_of "$target")/" >/dev/null # warm-up
    RPS_RUNS[$target]=""; P99_RUNS[$target]=""; CPU_RUNS[$target]=""; SPLIT_RUNS[$target]=""
  done
  # Round robin over the targets, so drifting background load hits all of them alike.
  for run in $(seq 1 "$RUNS"); do
    for target in nginx haproxy gateway; do
      port=$(port_of "$target"); pid=$(pid_of "$target")
      busy=$(wait_quiet)
      read -r u0 s0 < <(cpu_ticks "$pid"); read -r bu0 bs0 < <(cpu_ticks "$BACKEND_PID")
      read -r rps p99 n < <(run_wrk "$port" "$conns")
      read -r u1 s1 < <(cpu_ticks "$pid"); read -r bu1 bs1 < <(cpu_ticks "$BACKEND_PID")
      cpu=$(awk -v t=$((u1 + s1 - u0 - s0)) -v n="$n" -v us="$TICK_US" 'BEGIN {printf "%.1f", t * us / n}')
      # "proxy user, proxy kernel, backend, wrk" microseconds per request, for the CPU budget.
      split=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v b=$((bu1 + bs1 - bu0 - bs0)) -v n="$n" \
        -v us="$TICK_US" -v w="$(awk '{print $1 + $2}' "$WORK/wrk.time")" \
        'BEGIN {printf "%.1f/%.1f/%.1f/%.1f", u * us / n, s * us / n, b * us / n, w * 1e6 / n}')
      RPS_RUNS[$target]+=" $rps"; P99_RUNS[$target]+=" $p99"; CPU_RUNS[$target]+=" $cpu"
      SPLIT_RUNS[$target]+=" $cpu:$split"
      printf '  c%-4s run %s %-8s %8s req/s  p99 %7s ms  %5s us/req  busy %s%%\n' \
        "$conns" "$run" "$target" "$rps" "$p99" "$cpu" "$busy"
    done
  done
  for target in nginx haproxy gateway; do
    RPS[$target,$conns]=$(printf '%s\n' ${RPS_RUNS[$target]} | median)
    P99[$target,$conns]=$(printf '%s\n' ${P99_RUNS[$target]} | median)
    CPU[$target,$conns]=$(printf '%s\n' ${CPU_RUNS[$target]} | median)
    # The split of the run whose proxy CPU per request is the median.
    SPLIT[$target,$conns]=$(printf '%s\n' ${SPLIT_RUNS[$target]} | sort -t: -k1,1n |
      awk -F: '{a[NR]=$2} END {print a[int((NR+1)/2)]}')
    RSS[$target,$conns]=$(rss_kib "$(pid_of "$target")")
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
echo
# The whole machine's CPU per request: wrk, the nginx backend and the proxy share the two cores,
# so req/s is bounded by 2 cores / (their CPU per request). A proxy that spent no user-space CPU
# at all, and only nginx's kernel CPU (the same socket reads, writes and wake-ups), would reach
# at most the "ceiling" below times nginx's req/s.
echo "CPU per request, us (median run): proxy user / proxy kernel / nginx backend / wrk"
for conns in $CONNS; do
  for target in nginx haproxy gateway; do
    printf '  c%-4s %-8s %s\n' "$conns" "$target" "${SPLIT[$target,$conns]}"
  done
  awk -v s="${SPLIT[nginx,$conns]}" -v c="$conns" 'BEGIN {split(s, x, "/");
    printf "  c%-4s ceiling for any proxy with nginx'"'"'s kernel CPU and no user-space CPU: %.2fx nginx req/s\n",
      c, (x[1] + x[2] + x[3] + x[4]) / (x[2] + x[3] + x[4])}'
done
echo "gateway idle RSS: ${GATEWAY_IDLE_RSS} KiB (target < 15360)"
