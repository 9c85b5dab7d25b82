#!/usr/bin/env bash
# GeoDNS benchmark: Meridian's DNS against Knot + mod-geoip, gdnsd and PowerDNS (Lua records and
# the geoip backend), all configured for the same geo + weighted answer, measured the same way
# in the same run (see /work/shared/reference/baselines.md, Part A).
#
# Workload (every server): zone example.test (SOA, NS ns1, ns1 A 127.0.0.1, www A 192.0.2.10)
# and app.example.test A by client continent: EU/AF -> 192.0.2.1, NA/SA -> 192.0.2.2,
# AS/OC -> 192.0.2.3; a client not in the database gets a 50/30/20 weighted pick of the three
# (Knot's mod-geoip cannot combine geo and weights: it falls back to the static 192.0.2.1).
# Load: dnsperf -c 4 -T 2 -q 100 -l $DURATION, the single query `app.example.test A`, without
# ECS (127.0.0.1 is not in the database: the fallback path) and with ECS 85.214.1.0/24 (DE, EU).
#
# Usage: sudo bench/dns/run.sh            (root: installs packages with apt-get)
#   MMDB=path.mmdb   GeoIP2-Country-schema database (default: the shared test database; never
#                    committed: it is passed by path)
#   DURATION=15 RUNS=3   seconds per dnsperf run, runs per server and variant (median reported)
#   SERVERS="meridian knot-geoip gdnsd pdns-lua-geo pdns-geoip"   which to run; add
#                    meridian-rrl for Meridian with response rate limiting counting every
#                    client (loopback is exempt by default; the limit is never reached), so
#                    the ratio meridian / meridian-rrl is what rate limiting costs a client
#   SKIP_BUILD=1     use the already built target/release/examples/dns_bench
#   QUIET_PCT=25     wait (up to 60 s) until the machine is less busy than this before each run
#
# Runs go in rounds (every server once per variant in each round), so load from elsewhere on
# the machine hits all servers alike. Prints, per server: QPS (median, min-max), server CPU
# microseconds per query, idle RSS; how many of Meridian's UDP answers took its fast path; and
# Meridian's QPS and CPU/query as a ratio to each server's (median of the per-round ratios).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
MMDB=${MMDB:-/work/shared/data/geo-whois-asn-country-geoip2-ipv4.mmdb}
DURATION=${DURATION:-15}
RUNS=${RUNS:-3}
SERVERS=${SERVERS:-"meridian knot-geoip gdnsd pdns-lua-geo pdns-geoip"}
QUIET_PCT=${QUIET_PCT:-25}
ECS_OPT="8:0001180055d601" # family 1, source /24, scope 0, 85.214.1.0 (DE, EU)

declare -A PORT=([meridian]=5360 [meridian-rrl]=5361 [knot-geoip]=5321 [gdnsd]=5310 [pdns-lua-geo]=5302 [pdns-geoip]=5304)
declare -A PID=()

die() { echo "error: $*" >&2; exit 1; }
[[ -r "$MMDB" ]] || die "geo database $MMDB not readable (set MMDB=...)"
[[ $(id -u) == 0 ]] || die "run as root (packages are installed with apt-get, servers bind ports)"

# --- packages -------------------------------------------------------------------------------
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v knotd >/dev/null || need+=(knot)
[[ -e /usr/lib/x86_64-linux-gnu/knot/modules-3.2/geoip.so || -n $(ls /usr/lib/*/knot/modules-*/geoip.so 2>/dev/null) ]] || need+=(knot-module-geoip)
command -v pdns_server >/dev/null || need+=(pdns-server)
[[ -n $(ls /usr/lib/*/pdns/libgeoipbackend.so 2>/dev/null) ]] || need+=(pdns-backend-geoip)
[[ -n $(ls /usr/lib/*/pdns/libbindbackend.so 2>/dev/null) ]] || need+=(pdns-backend-bind)
command -v gdnsd >/dev/null || need+=(gdnsd)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    apt_log=$(mktemp /tmp/meridian-dnsbench-apt.XXXXXX)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >"$apt_log" 2>&1; then
        tail -20 "$apt_log" >&2
        die "installing ${need[*]} failed (log: $apt_log)"
    fi
fi
# Debian starts the packaged daemons on install; they would share the CPU.
for unit in knot pdns gdnsd; do systemctl stop "$unit" 2>/dev/null || true; done

# --- Meridian -------------------------------------------------------------------------------
if [[ -z ${SKIP_BUILD:-} ]]; then
    echo "building Meridian's bench server (release)..."
    (cd "$REPO" && cargo build --release -j2 -p meridian-hub --example dns_bench 2>&1 | tail -1)
fi
MERIDIAN_BIN="$REPO/target/release/examples/dns_bench"

WORK=$(mktemp -d /tmp/meridian-dnsbench.XXXXXX)
cleanup() {
    for name in "${!PID[@]}"; do kill "${PID[$name]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
echo "work dir: $WORK"

ZONE_BODY='$ORIGIN example.test.
$TTL 3600
@    IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 604800 60
@    IN NS  ns1.example.test.
ns1  IN A   127.0.0.1
www  IN A   192.0.2.10'

# --- Knot + mod-geoip -----------------------------------------------------------------------
setup_knot() {
    local dir=$WORK/knot-geoip
    mkdir -p "$dir"
    printf '%s\napp 30 IN A 192.0.2.1\n' "$ZONE_BODY" >"$dir/example.test.zone"
    cat >"$dir/geo.conf" <<EOF
app.example.test:
  - geo: "EU"
    A: 192.0.2.1
  - geo: "AF"
    A: 192.0.2.1
  - geo: "NA"
    A: 192.0.2.2
  - geo: "SA"
    A: 192.0.2.2
  - geo: "AS"
    A: 192.0.2.3
  - geo: "OC"
    A: 192.0.2.3
EOF
    cat >"$dir/knot.conf" <<EOF
server:
    listen: 127.0.0.1@${PORT[knot-geoip]}
    rundir: $dir
    udp-workers: 2
    tcp-workers: 1
    background-workers: 1
    edns-client-subnet: on
log:
  - target: stderr
    any: warning
database:
    storage: $dir
mod-geoip:
  - id: geo
    config-file: $dir/geo.conf
    ttl: 30
    mode: geodb
    geodb-file: $MMDB
    geodb-key: [ continent/code ]
template:
  - id: default
    storage: $dir
zone:
  - domain: example.test
    file: $dir/example.test.zone
    module: mod-geoip/geo
EOF
    knotd -c "$dir/knot.conf" >"$dir/log" 2>&1 &
    PID[knot-geoip]=$!
}

# --- gdnsd ----------------------------------------------------------------------------------
setup_gdnsd() {
    local dir=$WORK/gdnsd
    mkdir -p "$dir/zones" "$dir/run" "$dir/state"
    printf '%s\napp 30 DYNA geoip!app\n' "$ZONE_BODY" >"$dir/zones/example.test"
    cat >"$dir/config" <<EOF
options => {
  listen => [ 127.0.0.1:${PORT[gdnsd]} ]
  udp_threads => 2
  tcp_threads => 1
  run_dir => $dir/run
  state_dir => $dir/state
}
plugins => {
  geoip => {
    maps => {
      cont => {
        geoip2_db => $MMDB
        datacenters => [eu, na, ap, wfb]
        map => {
          default => [wfb]
          EU => [eu, na, ap]
          AF => [eu, na, ap]
          NA => [na, eu, ap]
          SA => [na, eu, ap]
          AS => [ap, eu, na]
          OC => [ap, na, eu]
        }
      }
    }
    resources => {
      app => {
        map => cont
        dcmap => {
          eu => 192.0.2.1
          na => 192.0.2.2
          ap => 192.0.2.3
          wfb => %weighted!app_w
        }
      }
    }
  }
  weighted => {
    app_w => {
      eu = [ 192.0.2.1, 50 ]
      na = [ 192.0.2.2, 30 ]
      ap = [ 192.0.2.3, 20 ]
    }
  }
}
EOF
    gdnsd -c "$dir" start >"$dir/log" 2>&1 &
    PID[gdnsd]=$!
}

# --- PowerDNS -------------------------------------------------------------------------------
PDNS_COMMON="guardian=no
daemon=no
disable-syslog=yes
loglevel=3
receiver-threads=2
distributor-threads=2
reuseport=yes
edns-subnet-processing=yes
enable-lua-records=shared
geoip-database-files=mmdb:$MMDB"

setup_pdns_lua_geo() {
    local dir=$WORK/pdns-lua-geo
    mkdir -p "$dir"
    cat >"$dir/example.test.zone" <<EOF
$ZONE_BODY
app 30 IN LUA A ";if continent('EU') or continent('AF') then return '192.0.2.1' elseif continent('NA') or continent('SA') then return '192.0.2.2' elseif continent('AS') or continent('OC') then return '192.0.2.3' else return pickwrandom({{50,'192.0.2.1'},{30,'192.0.2.2'},{20,'192.0.2.3'}}) end"
EOF
    echo "zone \"example.test\" { type master; file \"$dir/example.test.zone\"; };" >"$dir/named.conf"
    # An empty geoip zones file: the geoip backend is only loaded to provide continent().
    echo "domains: []" >"$dir/geo.yaml"
    cat >"$dir/pdns.conf" <<EOF
$PDNS_COMMON
launch=bind,geoip
bind-config=$dir/named.conf
geoip-zones-file=$dir/geo.yaml
local-address=127.0.0.1:${PORT[pdns-lua-geo]}
socket-dir=$dir
EOF
    pdns_server --config-dir="$dir" >"$dir/log" 2>&1 &
    PID[pdns-lua-geo]=$!
}

setup_pdns_geoip() {
    local dir=$WORK/pdns-geoip
    mkdir -p "$dir"
    cat >"$dir/geo.yaml" <<EOF
domains:
- domain: example.test
  ttl: 30
  records:
    example.test:
      - soa: ns1.example.test. hostmaster.example.test. 1 3600 600 604800 60
      - ns:
          content: ns1.example.test.
          ttl: 3600
    ns1.example.test:
      - a: 127.0.0.1
    www.example.test:
      - a: 192.0.2.10
    eu.app.example.test:
      - a: 192.0.2.1
    af.app.example.test:
      - a: 192.0.2.1
    na.app.example.test:
      - a: 192.0.2.2
    sa.app.example.test:
      - a: 192.0.2.2
    as.app.example.test:
      - a: 192.0.2.3
    oc.app.example.test:
      - a: 192.0.2.3
    default.app.example.test:
      - lua: A "pickwrandom({{50,'192.0.2.1'},{30,'192.0.2.2'},{20,'192.0.2.3'}})"
  services:
    app.example.test: [ '%cn.app.example.test', 'default.app.example.test' ]
EOF
    cat >"$dir/pdns.conf" <<EOF
$PDNS_COMMON
launch=geoip
geoip-zones-file=$dir/geo.yaml
local-address=127.0.0.1:${PORT[pdns-geoip]}
socket-dir=$dir
EOF
    pdns_server --config-dir="$dir" >"$dir/log" 2>&1 &
    PID[pdns-geoip]=$!
}

setup_meridian() {
    local dir=$WORK/meridian
    mkdir -p "$dir"
    "$MERIDIAN_BIN" --setup bench --listen "127.0.0.1:${PORT[meridian]}" --mmdb "$MMDB" --udp-sockets 2 \
        >"$dir/log" 2>&1 &
    PID[meridian]=$!
}

setup_meridian_rrl() {
    local dir=$WORK/meridian-rrl
    mkdir -p "$dir"
    "$MERIDIAN_BIN" --setup bench --listen "127.0.0.1:${PORT[meridian-rrl]}" --mmdb "$MMDB" --udp-sockets 2 \
        --rrl >"$dir/log" 2>&1 &
    PID[meridian-rrl]=$!
}

# --- helpers --------------------------------------------------------------------------------
wait_ready() { # name
    local name=$1 port=${PORT[$1]}
    for _ in $(seq 1 100); do
        if dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" www.example.test A 2>/dev/null | grep -q 192.0.2.10; then
            return 0
        fi
        kill -0 "${PID[$name]}" 2>/dev/null || { cat "$WORK/$name/log" >&2; die "$name exited"; }
        sleep 0.1
    done
    cat "$WORK/$name/log" >&2
    die "$name did not answer on port $port"
}

check_answers() { # name: print what each subnet gets, so a misconfiguration is visible
    local port=${PORT[$1]} line="" subnet
    for subnet in 85.214.1.0/24 8.8.8.0/24 200.160.0.0/24 101.32.0.0/24; do
        line+="$subnet→$(dig +short +time=2 +tries=1 @127.0.0.1 -p "$port" app.example.test A +subnet=$subnet | head -1) "
    done
    local scope
    scope=$(dig +time=2 +tries=1 @127.0.0.1 -p "$port" app.example.test A +subnet=8.8.8.0/24 | grep -o 'CLIENT-SUBNET: [^ ]*' | head -1 || true)
    echo "  $1: $line ${scope:-no ECS echoed}"
}

cpu_ticks() { # pid → utime+stime of the whole process (all threads)
    awk '{print $14 + $15}' "/proc/$1/stat"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

busy_pct() { # CPU busy % over 1 s
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    local idle=$((b[4] + b[5] - a[4] - a[5])) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $((total > 0 ? 100 * (total - idle) / total : 0))
}

wait_quiet() {
    local busy
    for _ in $(seq 1 60); do
        busy=$(busy_pct)
        ((busy < QUIET_PCT)) && { echo "$busy"; return; }
    done
    echo "$busy"
}

CLK_TCK=$(getconf CLK_TCK)
echo "app.example.test A" >"$WORK/queries.txt"

run_one() { # name ecs(yes|no) → "qps cpu_us_per_query busy_before"
    local name=$1 ecs=$2 port=${PORT[$1]} pid=${PID[$1]} extra=() busy t0 t1 out qps completed
    [[ $ecs == yes ]] && extra=(-E "$ECS_OPT")
    busy=$(wait_quiet)
    t0=$(cpu_ticks "$pid")
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$DURATION" -c 4 -T 2 -q 100 "${extra[@]}" 2>&1)
    t1=$(cpu_ticks "$pid")
    qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
    completed=$(awk '/Queries completed/ {print $3}' <<<"$out")
    local lost
    lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
    awk -v q="$qps" -v c="$completed" -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v b="$busy" -v l="$lost" \
        'BEGIN { printf "%.0f %.2f %s %s\n", q, (c > 0 ? t / hz * 1e6 / c : 0), b, l }'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

meridian_counts() { # → "udp_responses fast_path" from dns_bench's latest stats line
    awk '/^stats / { split($2, u, "="); split($3, f, "="); udp = u[2]; fast = f[2] }
         END { print udp + 0, fast + 0 }' "$WORK/meridian/log"
}

# --- run ------------------------------------------------------------------------------------
for name in $SERVERS; do
    case $name in
        meridian) setup_meridian ;;
        meridian-rrl) setup_meridian_rrl ;;
        knot-geoip) setup_knot ;;
        gdnsd) setup_gdnsd ;;
        pdns-lua-geo) setup_pdns_lua_geo ;;
        pdns-geoip) setup_pdns_geoip ;;
        *) die "unknown server $name" ;;
    esac
done
declare -A RSS=()
echo "answers per ECS subnet (DE, US, BR, HK) and the ECS scope for 8.8.8.0/24:"
for name in $SERVERS; do
    wait_ready "$name"
    check_answers "$name"
    RSS[$name]=$(rss_kib "${PID[$name]}")
done

# Rounds, not servers, are the outer loop: each round runs every server once per variant, so
# load from elsewhere on the machine (other builds) hits all servers alike, and Meridian's
# ratio to each server is taken within a round before the median over rounds.
declare -A RUNQ=() RUNC=() FAST=() UDP=()
for run in $(seq 1 "$RUNS"); do
    for ecs in no yes; do
        for name in $SERVERS; do
            [[ $name == meridian ]] && read -r udp0 fast0 < <(meridian_counts)
            read -r q c busy lost < <(run_one "$name" "$ecs")
            if [[ $name == meridian ]]; then
                sleep 1.5 # the server flushes its counters when idle (200 ms); dns_bench prints them (500 ms)
                read -r udp1 fast1 < <(meridian_counts)
                UDP[$ecs]=$((${UDP[$ecs]:-0} + udp1 - udp0))
                FAST[$ecs]=$((${FAST[$ecs]:-0} + fast1 - fast0))
            fi
            RUNQ[$name,$ecs,$run]=$q RUNC[$name,$ecs,$run]=$c
            echo "  round $run $name ecs=$ecs: $q qps, $c us CPU/query, busy before ${busy}%, lost $lost"
        done
    done
done

declare -A QPS=() CPU=() RANGE=()
for name in $SERVERS; do
    for ecs in no yes; do
        qs=$(for run in $(seq 1 "$RUNS"); do echo "${RUNQ[$name,$ecs,$run]}"; done)
        cs=$(for run in $(seq 1 "$RUNS"); do echo "${RUNC[$name,$ecs,$run]}"; done)
        QPS[$name,$ecs]=$(median <<<"$qs")
        CPU[$name,$ecs]=$(median <<<"$cs")
        RANGE[$name,$ecs]="$(sort -n <<<"$qs" | head -1)-$(sort -n <<<"$qs" | tail -1)"
    done
done

echo
echo "GeoDNS benchmark: median of $RUNS x ${DURATION}s dnsperf runs (-c 4 -T 2 -q 100), $(nproc) CPUs shared by load and server"
printf '%-14s %10s %15s %9s %10s %15s %9s %10s\n' server "QPS no-ECS" range "us CPU/q" "QPS ECS" range "us CPU/q" "idle RSS"
for name in $SERVERS; do
    printf '%-14s %10s %15s %9s %10s %15s %9s %7s KiB\n' "$name" \
        "${QPS[$name,no]}" "${RANGE[$name,no]}" "${CPU[$name,no]}" \
        "${QPS[$name,yes]}" "${RANGE[$name,yes]}" "${CPU[$name,yes]}" "${RSS[$name]}"
done
if [[ " $SERVERS " == *" meridian "* ]]; then
    echo
    for ecs in no yes; do
        awk -v e="$ecs" -v f="${FAST[$ecs]:-0}" -v u="${UDP[$ecs]:-0}" \
            'BEGIN { printf "Meridian, ECS=%s: %d of %d UDP answers from the fast path (%.1f%%)\n", e, f, u, (u > 0 ? 100 * f / u : 0) }'
    done
    echo
    echo "Ratios, Meridian / other: median over rounds of the ratio within each round"
    echo "(QPS: >1 means Meridian answers more; CPU: <1 means Meridian spends less per query)"
    printf '%-14s %12s %12s %14s %14s\n' vs "QPS no-ECS" "QPS ECS" "CPU/q no-ECS" "CPU/q ECS"
    for name in $SERVERS; do
        [[ $name == meridian ]] && continue
        cells=()
        for metric in Q C; do
            for ecs in no yes; do
                ratios=$(for run in $(seq 1 "$RUNS"); do
                    if [[ $metric == Q ]]; then
                        echo "${RUNQ[meridian,$ecs,$run]} ${RUNQ[$name,$ecs,$run]}"
                    else
                        echo "${RUNC[meridian,$ecs,$run]} ${RUNC[$name,$ecs,$run]}"
                    fi
                done | awk '$2 > 0 { printf "%.4f\n", $1 / $2 }')
                cells+=("$(median <<<"$ratios" | awk 'NF { printf "%.2fx", $1 } !NF { print "n/a" }')")
            done
        done
        printf '%-14s %12s %12s %14s %14s\n' "$name" "${cells[@]}"
    done
fi
