#!/usr/bin/env bash
# bench-l4.sh: `make bench-l4`. Measures, in one run on loopback, plain TCP proxying by four
# paths: direct (client → backend), the Flotilla agent, nginx `stream {}` and HAProxy
# `mode tcp`:
#   1. bulk throughput, iperf3 with 1 and 8 streams;
#   2. short connections (one request per TCP connection), wrk at concurrency 50, rate and
#      p50/p99 latency;
#   3. memory (VmRSS) and file descriptors per idle proxied connection, 10,000 connections.
# Each proxy gets one core (taskset -c 0; the agent with GOMAXPROCS=1); the load generators
# and backends share the other (taskset -c 1). It prints a table and writes it, with the
# machine facts and the exact commands, to BENCHMARKS.md. Everything it starts is stopped on
# exit (also on Ctrl-C) and its temporary directory is removed.
#
# Knobs (environment): BENCH_BULK_SECONDS (5), BENCH_RATE_SECONDS (10), BENCH_REPEAT (3: rounds
# of the throughput/rate measurements, the median is reported), BENCH_MEM_CONNS (10000),
# BENCH_OUT (BENCHMARKS.md), BIN (bin/), BENCH_AGENT_REV (what the agent was built from, for
# the report; default: git describe of this tree).
set -euo pipefail
cd "$(dirname "$0")/../.."
# The exact command, for BENCHMARKS.md: make's or the script's, with the knobs that were set.
CMD=""
for k in BIN BENCH_BULK_SECONDS BENCH_RATE_SECONDS BENCH_REPEAT BENCH_MEM_CONNS BENCH_OUT BENCH_AGENT_REV; do
  [[ -n ${!k:-} ]] && CMD+="$k=${!k} "
done
if [[ -n ${MAKELEVEL:-} ]]; then CMD+="make bench-l4"; else CMD+="bash e2e/bench/bench-l4.sh"; fi
ROOT=$PWD
BIN=${BIN:-$ROOT/bin}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
BULK_S=${BENCH_BULK_SECONDS:-5}
RATE_S=${BENCH_RATE_SECONDS:-10}
REPEAT=${BENCH_REPEAT:-3}
MEM_CONNS=${BENCH_MEM_CONNS:-10000}
# Instances per proxy for the memory measurement. The process limit is 20,000 open files;
# nginx and HAProxy need 2 per proxied connection, the agent 6 (two sockets plus, for each
# direction, the pipe that splice(2) holds while io.Copy waits), and the agent caps a cluster
# at 1,024 open connections by default (Envoy's circuit breaker), so 10 × 1,000 keeps every
# instance below both. Every proxy gets the same split.
MEM_INSTANCES=10
PROXY_CPU=0
LOAD_CPU=1
WRK_CONNS=50

# Ports (all on 127.0.0.1, below the ephemeral range 32768–60999).
P_IPERF=25201 P_HTTP=25202                 # backends
P_AGENT_BULK=25211 P_AGENT_HTTP=25212      # the agent
P_NGINX_BULK=25221 P_NGINX_HTTP=25222      # nginx stream
P_HAPROXY_BULK=25231 P_HAPROXY_HTTP=25232  # HAProxy
P_IDLE_BASE=25300                          # idle backends base+1..base+10
P_MEM_AGENT=25310 P_MEM_NGINX=25320 P_MEM_HAPROXY=25330 # memory instances base+1..base+10
P_AGENT_ADMIN=25340                        # agents' admin HTTP base+0..base+10
P_CP_XDS=25290 P_CP_ADMIN=25291            # control plane

log() { printf '[bench-l4 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Process handling: start, stop, forget, wait_listen and the cleanup on exit.
source e2e/bench/lib.sh # the working directory is the repository root

# tree PID: PID and its children (nginx: master and workers).
tree() { echo "$1"; pgrep -P "$1" || true; }

# rss_kb PID...: the summed VmRSS, in KiB, of the processes and their children.
rss_kb() {
  local p sum=0 kb
  for p in $(for q in "$@"; do tree "$q"; done); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    sum=$((sum + ${kb:-0}))
  done
  echo "$sum"
}

# fd_count PID...: the summed number of open files of the processes and their children.
fd_count() {
  local p sum=0
  for p in $(for q in "$@"; do tree "$q"; done); do
    sum=$((sum + $(ls "/proc/$p/fd" 2>/dev/null | wc -l)))
  done
  echo "$sum"
}

# median VALUE...: the median (the lower middle for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# ---------------------------------------------------------------------------------------
# Tools: install what is missing from Debian, nothing else.
# ---------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
[[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v wrk >/dev/null || missing+=(wrk)
command -v ss >/dev/null || missing+=(iproute2)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  log "installing from Debian: ${missing[*]}"
  [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
(($(nproc) >= 2)) || die "needs 2 cores (one for the proxy, one for the load), have $(nproc)"
for b in flotilla-controlplane flotilla-agent flotctl; do
  [[ -x $BIN/$b ]] || die "$BIN/$b missing: run make build"
done

TMP=$(mktemp -d /tmp/bench-l4.XXXXXX)
mkdir -p "$TMP/logs" "$TMP/bin"
ulimit -n "$(ulimit -Hn)"
log "building the Go helpers (e2e/bench/idleserver, e2e/bench/idleclient)"
CGO_ENABLED=0 go build -o "$TMP/bin/" ./e2e/bench/idleserver ./e2e/bench/idleclient

all_ports=($P_IPERF $P_HTTP $P_AGENT_BULK $P_AGENT_HTTP $P_NGINX_BULK $P_NGINX_HTTP
  $P_HAPROXY_BULK $P_HAPROXY_HTTP $P_CP_XDS $P_CP_ADMIN)
for i in $(seq 1 $MEM_INSTANCES); do
  all_ports+=($((P_IDLE_BASE + i)) $((P_MEM_AGENT + i)) $((P_MEM_NGINX + i)) $((P_MEM_HAPROXY + i)) $((P_AGENT_ADMIN + i)))
done
all_ports+=($P_AGENT_ADMIN)
for port in "${all_ports[@]}"; do
  if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is taken; stop what uses it"; fi
done

START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
TW_REUSE=$(sysctl -n net.ipv4.tcp_tw_reuse 2>/dev/null || cat /proc/sys/net/ipv4/tcp_tw_reuse)
log "load average: $LOAD_BEFORE (other work on this machine makes the numbers noisy)"
log "net.ipv4.tcp_tw_reuse = $TW_REUSE"
# Every short connection leaves a conntrack entry (TIME_WAIT kept 120 s by default); a full
# table drops packets and every path looks broken. Say so up front rather than measure it.
if [ -r /proc/sys/net/netfilter/nf_conntrack_count ]; then
  CT_COUNT=$(cat /proc/sys/net/netfilter/nf_conntrack_count)
  CT_MAX=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
  log "conntrack: $CT_COUNT of $CT_MAX entries in use (TIME_WAIT kept $(cat /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait 2>/dev/null || echo '?') s)"
  if [ "$CT_COUNT" -gt $((CT_MAX / 2)) ]; then
    die "the conntrack table is over half full ($CT_COUNT of $CT_MAX): wait for it to drain (or raise net.netfilter.nf_conntrack_max), else short connections get dropped"
  fi
fi
log "fairness: every proxy runs on CPU $PROXY_CPU only (taskset -c $PROXY_CPU, nginx worker_processes 1, haproxy nbthread 1, agent GOMAXPROCS=1); iperf3, wrk and the backends on CPU $LOAD_CPU"

# ---------------------------------------------------------------------------------------
# Config generators.
# ---------------------------------------------------------------------------------------

# nginx_stream_conf DIR "LISTEN_PORT UPSTREAM_PORT"...: a stream-only nginx, one worker.
nginx_stream_conf() {
  local dir=$1; shift
  mkdir -p "$dir"
  {
    echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    echo "daemon off; master_process on; worker_processes 1;"
    echo "worker_rlimit_nofile 16000; pid $dir/nginx.pid; error_log $dir/error.log warn;"
    echo "events { worker_connections 8000; }"
    echo "stream {"
    local pair
    for pair in "$@"; do
      set -- $pair
      echo "  server { listen 127.0.0.1:$1 backlog=4096; proxy_pass 127.0.0.1:$2; }"
    done
    echo "}"
  } >"$dir/nginx.conf"
}

# haproxy_conf FILE "LISTEN_PORT UPSTREAM_PORT"...: HAProxy mode tcp, one thread.
haproxy_conf() {
  local file=$1; shift
  {
    echo "global"
    echo "  nbthread 1"
    echo "  maxconn 6000"
    echo "defaults"
    echo "  mode tcp"
    echo "  timeout connect 5s"
    echo "  timeout client 10m"
    echo "  timeout server 10m"
    local pair
    for pair in "$@"; do
      set -- $pair
      echo "listen l$1"
      echo "  bind 127.0.0.1:$1"
      echo "  server s1 127.0.0.1:$2"
    done
  } >"$file"
}

# The agents' bundle: agent "main" proxies the two throughput paths, agents m1..mN one idle
# backend each (selected by the bench label).
{
  echo "listeners:"
  echo "  - { name: bulk, address: \"127.0.0.1:$P_AGENT_BULK\", agents: { bench: main }, tcp: { cluster: iperf } }"
  echo "  - { name: http, address: \"127.0.0.1:$P_AGENT_HTTP\", agents: { bench: main }, tcp: { cluster: http } }"
  for i in $(seq 1 $MEM_INSTANCES); do
    echo "  - { name: idle$i, address: \"127.0.0.1:$((P_MEM_AGENT + i))\", agents: { bench: m$i }, tcp: { cluster: idle$i } }"
  done
  echo "clusters:"
  echo "  - { name: iperf, endpoints: [\"127.0.0.1:$P_IPERF\"] }"
  echo "  - { name: http, endpoints: [\"127.0.0.1:$P_HTTP\"] }"
  for i in $(seq 1 $MEM_INSTANCES); do
    echo "  - { name: idle$i, endpoints: [\"127.0.0.1:$((P_IDLE_BASE + i))\"] }"
  done
} >"$TMP/bench.yaml"

# start_agent LABEL ADMIN_PORT: one agent with GOMAXPROCS=1 on the proxy CPU.
start_agent() {
  start "agent-$1" $PROXY_CPU env GOMAXPROCS=1 "$BIN/flotilla-agent" \
    --control-plane 127.0.0.1:$P_CP_XDS --node-id "bench-$1" --labels "bench=$1" \
    --data-dir "$TMP/agent-$1" --admin-addr "127.0.0.1:$2" --drain-timeout 1s
}

# start_proxy KIND NAME "LISTEN UPSTREAM"...: start one nginx or HAProxy instance on the
# proxy CPU; sets STARTED.
start_proxy() {
  local kind=$1 name=$2; shift 2
  case $kind in
    nginx)
      nginx_stream_conf "$TMP/$name" "$@"
      start "$name" $PROXY_CPU nginx -p "$TMP/$name" -c "$TMP/$name/nginx.conf" -e "$TMP/$name/error.log"
      ;;
    haproxy)
      haproxy_conf "$TMP/$name.cfg" "$@"
      start "$name" $PROXY_CPU haproxy -db -f "$TMP/$name.cfg"
      ;;
  esac
}

# ---------------------------------------------------------------------------------------
# Control plane (on the load CPU: it is idle during the measurements).
# ---------------------------------------------------------------------------------------
start controlplane $LOAD_CPU "$BIN/flotilla-controlplane" --xds-addr 127.0.0.1:$P_CP_XDS \
  --admin-addr 127.0.0.1:$P_CP_ADMIN --data-dir "$TMP/controlplane"
export FLOTILLA_SERVER=127.0.0.1:$P_CP_ADMIN
for i in $(seq 1 200); do
  "$BIN/flotctl" history --limit 1 >/dev/null 2>&1 && break
  ((i < 200)) || die "the control plane did not come up"
  sleep 0.1
done
"$BIN/flotctl" apply "$TMP/bench.yaml" -m "bench-l4" >"$TMP/logs/apply.log" 2>&1 || die "flotctl apply failed: $(cat "$TMP/logs/apply.log")"

declare -A R # results: R[row,path]

# ---------------------------------------------------------------------------------------
# 3. Memory and file descriptors per idle proxied connection.
# ---------------------------------------------------------------------------------------
PER_INSTANCE=$((MEM_CONNS / MEM_INSTANCES))
MEM_SPLIT="$MEM_CONNS connections = $MEM_INSTANCES proxy instances × $PER_INSTANCE, each with its own idleclient process (CPU $LOAD_CPU) and idle backend port; 2 idleserver processes (CPU $LOAD_CPU) hold the backend ends"
log "memory split: $MEM_SPLIT"
idle_ports=()
for i in $(seq 1 $MEM_INSTANCES); do idle_ports+=("127.0.0.1:$((P_IDLE_BASE + i))"); done
half=$((MEM_INSTANCES / 2))
start idleserver-1 $LOAD_CPU "$TMP/bin/idleserver" -max-run 8m -listen "$(IFS=,; echo "${idle_ports[*]:0:half}")"
IDLE_SRV=("$STARTED")
start idleserver-2 $LOAD_CPU "$TMP/bin/idleserver" -max-run 8m -listen "$(IFS=,; echo "${idle_ports[*]:half}")"
IDLE_SRV+=("$STARTED")
wait_listen $(seq $((P_IDLE_BASE + 1)) $((P_IDLE_BASE + MEM_INSTANCES)))

# mem_measure PATH BASE_PORT: start MEM_INSTANCES instances of PATH, open the idle
# connections through them, and record KiB and fds per connection.
mem_measure() {
  local path=$1 base=$2 i pids=() clients=() ports=()
  for i in $(seq 1 $MEM_INSTANCES); do
    case $path in
      agent) start_agent "m$i" $((P_AGENT_ADMIN + i)) ;;
      *) start_proxy "$path" "$path-mem$i" "$((base + i)) $((P_IDLE_BASE + i))" ;;
    esac
    pids+=("$STARTED")
    ports+=($((base + i)))
  done
  wait_listen "${ports[@]}"
  sleep 1 # let start-up work (config, first GC) finish before the "before" reading
  local before fds_before
  before=$(rss_kb "${pids[@]}")
  fds_before=$(fd_count "${pids[@]}")
  for i in $(seq 1 $MEM_INSTANCES); do
    start "idleclient-$path-$i" $LOAD_CPU "$TMP/bin/idleclient" -addr "127.0.0.1:$((base + i))" \
      -n $PER_INSTANCE -concurrency 50 -timeout 60s -max-run 5m
    clients+=("$STARTED")
  done
  local ok=0 n line
  for i in $(seq 1 $MEM_INSTANCES); do
    for _ in $(seq 1 700); do
      grep -q '^ready' "$TMP/logs/idleclient-$path-$i.log" && break
      sleep 0.1
    done
    line=$(grep '^ready' "$TMP/logs/idleclient-$path-$i.log" || true)
    [[ -n $line ]] || die "idleclient $i through $path did not finish opening connections"
    n=$(sed -E 's/.*ok=([0-9]+).*/\1/' <<<"$line")
    ok=$((ok + n))
    [[ $n == "$PER_INSTANCE" ]] || log "warning: $path instance $i: $line"
  done
  sleep 2 # let the proxies settle before the "after" reading
  local after fds_after
  after=$(rss_kb "${pids[@]}")
  fds_after=$(fd_count "${pids[@]}")
  stop "${clients[@]}"
  stop "${pids[@]}"
  ((ok > 0)) || die "no connection was proxied by $path"
  R[mem,$path]=$(awk -v a="$after" -v b="$before" -v n="$ok" 'BEGIN {printf "%.2f", (a - b) / n}')
  R[fds,$path]=$(awk -v a="$fds_after" -v b="$fds_before" -v n="$ok" 'BEGIN {printf "%.2f", (a - b) / n}')
  R[memok,$path]=$ok
  log "$path: $ok idle connections, RSS $before → $after KiB (${R[mem,$path]} KiB/conn), fds $fds_before → $fds_after (${R[fds,$path]}/conn)"
}

log "3. memory per idle proxied connection ($MEM_CONNS connections)"
mem_measure agent $P_MEM_AGENT
mem_measure nginx $P_MEM_NGINX
mem_measure haproxy $P_MEM_HAPROXY
stop "${IDLE_SRV[@]}"

# ---------------------------------------------------------------------------------------
# 1 and 2. Throughput and short connections, one path at a time.
# ---------------------------------------------------------------------------------------
start iperf3-server $LOAD_CPU iperf3 -s -p $P_IPERF
IPERF_SRV=$STARTED
mkdir -p "$TMP/www"
cat >"$TMP/www/nginx.conf" <<EOF
daemon off; master_process on; worker_processes 1;
pid $TMP/www/nginx.pid; error_log $TMP/www/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/www/client_body; proxy_temp_path $TMP/www/proxy;
  fastcgi_temp_path $TMP/www/fastcgi; uwsgi_temp_path $TMP/www/uwsgi; scgi_temp_path $TMP/www/scgi;
  server { listen 127.0.0.1:$P_HTTP backlog=4096; location / { return 200 "x"; } }
}
EOF
start http-backend $LOAD_CPU nginx -p "$TMP/www" -c "$TMP/www/nginx.conf" -e "$TMP/www/error.log"
HTTP_SRV=$STARTED
wait_listen $P_IPERF $P_HTTP

# iperf_bps PORT STREAMS: receiver bits/s of one iperf3 run through 127.0.0.1:PORT.
iperf_bps() {
  local json="$TMP/iperf-$1-$2.json"
  timeout --foreground $((BULK_S + 20)) taskset -c $LOAD_CPU iperf3 -c 127.0.0.1 -p "$1" -P "$2" -t "$BULK_S" -J >"$json" ||
    die "iperf3 through port $1 failed: $(grep -m1 '"error"' "$json" || true)"
  # end.sum_received.bits_per_second: the first bits_per_second after "sum_received".
  awk '/"sum_received"/ {f=1} f && /"bits_per_second"/ {gsub(/[^0-9.e+]/, "", $2); print $2; exit}' "$json"
}

# wrk_run PORT: one wrk run through 127.0.0.1:PORT; prints "rate p50_ms p99_ms errors".
wrk_run() {
  local txt="$TMP/wrk-$1.txt"
  timeout --foreground $((RATE_S + 30)) taskset -c $LOAD_CPU wrk -c $WRK_CONNS -t 1 -d "${RATE_S}s" --latency \
    -H 'Connection: close' "http://127.0.0.1:$1/" >"$txt" 2>&1 || die "wrk through port $1 failed: $(cat "$txt")"
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v + 0
    }
    /^ +50%/ {p50 = ms($2)} /^ +99%/ {p99 = ms($2)}
    /^Requests\/sec:/ {rate = $2}
    /Socket errors:/ {gsub(/,/, ""); err += $4 + $6 + $8 + $10}
    /Non-2xx or 3xx/ {err += $NF}
    END {printf "%s %.3f %.3f %d\n", rate, p50, p99, err}' "$txt"
}

# measure_path PATH BULK_PORT HTTP_PORT: one round of rows 1 and 2 for one path; appends
# to the per-path lists B1, B8, RATE, P50, P99 and adds to ERR.
declare -A B1 B8 RATE P50 P99 ERR
measure_path() {
  local path=$1 out r
  out=$(iperf_bps "$2" 1)
  B1[$path]+=" $out"
  out=$(iperf_bps "$2" 8)
  B8[$path]+=" $out"
  out=$(wrk_run "$3")
  read -r -a r <<<"$out"
  RATE[$path]+=" ${r[0]}" P50[$path]+=" ${r[1]}" P99[$path]+=" ${r[2]}"
  ERR[$path]=$((${ERR[$path]:-0} + r[3]))
  log "$path: bulk ×1 $(awk -v v="$(iperf_last "${B1[$path]}")" 'BEGIN {printf "%.2f", v / 1e9}') Gbit/s, ×8 $(awk -v v="$(iperf_last "${B8[$path]}")" 'BEGIN {printf "%.2f", v / 1e9}') Gbit/s, ${r[0]} conn/s, p50 ${r[1]} ms, p99 ${r[2]} ms, wrk errors ${r[3]} (load $(cut -d' ' -f1 /proc/loadavg))"
}
iperf_last() { echo "${1##* }"; }

# The rounds interleave the paths (direct, agent, nginx, HAProxy, then again), so that load
# from elsewhere on the machine spreads over all of them rather than hitting one; each proxy
# is started before its measurements and stopped after them in every round.
log "1+2. bulk throughput (iperf3 -P 1|8 -t $BULK_S) and short connections (wrk -c $WRK_CONNS -d ${RATE_S}s), $REPEAT round(s)"
LOADS=""
for round in $(seq 1 "$REPEAT"); do
  log "round $round of $REPEAT"
  LOADS+="${LOADS:+, }$(cut -d' ' -f1 /proc/loadavg)"
  measure_path direct $P_IPERF $P_HTTP

  start_agent main $P_AGENT_ADMIN
  pid=$STARTED
  wait_listen $P_AGENT_BULK $P_AGENT_HTTP
  measure_path agent $P_AGENT_BULK $P_AGENT_HTTP
  stop "$pid"

  start_proxy nginx nginx-main "$P_NGINX_BULK $P_IPERF" "$P_NGINX_HTTP $P_HTTP"
  pid=$STARTED
  wait_listen $P_NGINX_BULK $P_NGINX_HTTP
  measure_path nginx $P_NGINX_BULK $P_NGINX_HTTP
  stop "$pid"

  start_proxy haproxy haproxy-main "$P_HAPROXY_BULK $P_IPERF" "$P_HAPROXY_HTTP $P_HTTP"
  pid=$STARTED
  wait_listen $P_HAPROXY_BULK $P_HAPROXY_HTTP
  measure_path haproxy $P_HAPROXY_BULK $P_HAPROXY_HTTP
  stop "$pid"
done
stop "$IPERF_SRV" "$HTTP_SRV"
for path in direct agent nginx haproxy; do
  R[bulk1,$path]=$(median ${B1[$path]})
  R[bulk8,$path]=$(median ${B8[$path]})
  R[rate,$path]=$(median ${RATE[$path]})
  R[p50,$path]=$(median ${P50[$path]})
  R[p99,$path]=$(median ${P99[$path]})
  R[errors,$path]=${ERR[$path]}
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# Table and BENCHMARKS.md.
# ---------------------------------------------------------------------------------------
# row KEY LABEL SCALE BETTER(high|low) DIRECT(yes|no) DIGITS: one markdown table row; sets
# VERDICT to the target's PASS/MISS line.
row() {
  local key=$1 label=$2 scale=$3 better=$4 withdirect=$5 digits=$6
  local d=${R[$key,direct]:-} a=${R[$key,agent]} n=${R[$key,nginx]} h=${R[$key,haproxy]}
  awk -v key="$key" -v label="$label" -v s="$scale" -v better="$better" -v wd="$withdirect" \
    -v dg="$digits" -v d="$d" -v a="$a" -v n="$n" -v h="$h" 'BEGIN {
    f = "%." dg "f"
    dcol = (wd == "yes") ? sprintf(f, d / s) : "—"
    an = (n > 0) ? sprintf("%.2f×", a / n) : "—"
    ah = (h > 0) ? sprintf("%.2f×", a / h) : "—"
    ad = (wd == "yes" && d > 0) ? sprintf("%.2f×", a / d) : "—"
    printf "| %s | %s | " f " | " f " | " f " | %s | %s | %s |\n", label, dcol, a / s, n / s, h / s, an, ah, ad
  }'
}

# verdict KEY LABEL BETTER DIRECT_MIN MAX_ABS: PASS/MISS against the issue-3 targets.
verdict() {
  local key=$1 label=$2 better=$3 dmin=$4 maxabs=$5
  awk -v label="$label" -v better="$better" -v dmin="$dmin" -v maxabs="$maxabs" \
    -v d="${R[$key,direct]:-0}" -v a="${R[$key,agent]}" -v n="${R[$key,nginx]}" -v h="${R[$key,haproxy]}" 'BEGIN {
    ok = 1
    if (better == "high") {
      best = (n > h) ? n : h; why = sprintf("agent/best(nginx,haproxy) = %.3f× (target ≥ 1.0×)", a / best)
      if (a < best) ok = 0
    } else {
      best = (n < h) ? n : h; why = sprintf("agent/best(nginx,haproxy) = %.3f× (target ≤ 1.0×, lower is better)", a / best)
      if (a > best) ok = 0
    }
    if (dmin != "") { why = why sprintf("; agent/direct = %.3f× (target ≥ %.1f×)", a / d, dmin); if (a < dmin * d) ok = 0 }
    if (maxabs != "") { why = why sprintf("; %.2f KiB (target ≤ %s KiB)", a, maxabs); if (a > maxabs) ok = 0 }
    printf "- %s **%s**: %s\n", (ok ? "PASS" : "MISS"), label, why
  }'
}

TABLE=$(
  echo "| measurement | direct | agent | nginx | haproxy | agent/nginx | agent/haproxy | agent/direct |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  row bulk1 "bulk, 1 stream (Gbit/s)" 1e9 high yes 2
  row bulk8 "bulk, 8 streams (Gbit/s)" 1e9 high yes 2
  row rate "short connections, c=50 (conn/s)" 1 high yes 0
  row p50 "short connections p50 latency (ms, lower is better)" 1 low yes 3
  row p99 "short connections p99 latency (ms, lower is better)" 1 low yes 3
  row mem "memory per idle proxied connection (KiB RSS, lower is better)" 1 low no 2
  row fds "open files per idle proxied connection (for information)" 1 low no 2
)
VERDICTS=$(
  verdict bulk1 "bulk, 1 stream" high 0.9 ""
  verdict bulk8 "bulk, 8 streams" high 0.9 ""
  verdict rate "short-connection rate" high "" ""
  verdict p50 "short-connection p50 latency" low "" ""
  verdict p99 "short-connection p99 latency" low "" ""
  verdict mem "memory per idle connection" low "" 16
  for path in agent nginx haproxy; do
    if ((R[memok,$path] != PER_INSTANCE * MEM_INSTANCES)); then
      echo "- MISS **memory per idle connection is incomplete**: $path proxied only ${R[memok,$path]} of $((PER_INSTANCE * MEM_INSTANCES)) connections (see the run's log)"
    fi
  done
)

RAW=$(
  echo "| path | bulk ×1 (Gbit/s) | bulk ×8 (Gbit/s) | conn/s | p50 (ms) | p99 (ms) |"
  echo "|---|---|---|---|---|---|"
  for path in direct agent nginx haproxy; do
    printf '| %s | %s | %s | %s | %s | %s |\n' "$path" \
      "$(printf '%s\n' ${B1[$path]} | awk '{printf "%s%.2f", (NR > 1 ? ", " : ""), $1 / 1e9}')" \
      "$(printf '%s\n' ${B8[$path]} | awk '{printf "%s%.2f", (NR > 1 ? ", " : ""), $1 / 1e9}')" \
      "$(echo ${RATE[$path]} | sed 's/ /, /g')" "$(echo ${P50[$path]} | sed 's/ /, /g')" \
      "$(echo ${P99[$path]} | sed 's/ /, /g')"
  done
)

v() { { "$@" 2>&1 || true; } | sed -n 1p; }
NGINX_V=$(v nginx -v | sed 's/^nginx version: //')
HAPROXY_V=$(v haproxy -v | awk '{print $1, $3}')
IPERF_V=$(v iperf3 --version | awk '{print $1, $2}')
WRK_V=$(v wrk -v | awk '{print $1, $2}')
GO_V=$(go version | awk '{print $3}')
AGENT_V="$(v "$BIN/flotilla-agent" --version) built from ${BENCH_AGENT_REV:-$(git describe --always --dirty 2>/dev/null || echo "an unknown tree")}"
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
ERRS="direct ${R[errors,direct]}, agent ${R[errors,agent]}, nginx ${R[errors,nginx]}, haproxy ${R[errors,haproxy]}"

# Other benchmarks (bench-http.sh, bench-fleet.sh) keep their sections of the file between
# their <!-- NAME:begin --> and <!-- NAME:end --> markers: carry them over.
OTHER_SECTIONS=""
if [[ -f $OUT ]]; then
  OTHER_SECTIONS=$(awk '/^<!-- [a-z0-9-]+:begin -->$/ {f = 1} f {print} /^<!-- [a-z0-9-]+:end -->$/ {f = 0; print ""}' "$OUT")
fi
cat >"$OUT" <<EOF
# L4 benchmarks

Written by [e2e/bench/bench-l4.sh](e2e/bench/bench-l4.sh) (\`make bench-l4\`) on $START_DATE; run it
again to refresh this file. Targets are those of issue 3 ("Faster than nginx and HAProxy").

## Results

$TABLE

Targets (agent ≥ 1.0× the better of nginx and HAProxy on every row, ≥ 0.9× direct on bulk
throughput, ≤ 16 KiB per idle connection):

$VERDICTS

## How it was measured

- Command: \`$CMD\` (\`make bench-l4\` builds bin/ and runs the script; this run: BENCH_REPEAT=$REPEAT:
  each throughput/rate cell is the median of $REPEAT rounds, the rounds interleaving the four paths).
- Machine: $(nproc) cores ($CPU_MODEL), kernel $(uname -r), $GO_V; nginx $NGINX_V, $HAPROXY_V, $IPERF_V,
  $WRK_V; agent $AGENT_V. Load average before/after: $LOAD_BEFORE / $LOAD_AFTER; 1-min load at
  the start of each round: $LOADS (the benchmark itself accounts for about 2). Other jobs running
  on the same 2 cores make single runs noisy: read the rounds below, compare quiet runs.
- Fairness: each proxy gets one core: \`taskset -c $PROXY_CPU\` for the proxy (nginx \`worker_processes 1\`,
  HAProxy \`nbthread 1\`, the agent with \`GOMAXPROCS=1\`); \`taskset -c $LOAD_CPU\` for iperf3, wrk and the
  backends. Everything is on 127.0.0.1; the proxies listen on different ports and each is started
  and stopped around its own measurements. On the direct path the client and the backend share
  core $LOAD_CPU with nothing on core $PROXY_CPU; a proxied path adds the proxy on its own core and a second
  loopback TCP hop. Default buffers everywhere (no HAProxy splice option,
  no nginx tuning); the agent copies with splice(2).
- Bulk: backend \`iperf3 -s\`; \`iperf3 -c 127.0.0.1 -p PORT -P 1|8 -t $BULK_S -J\` through each path; the
  receiver's bits/s (end.sum_received).
- Short connections: backend nginx \`return 200 "x"\` (http{}, one worker, core $LOAD_CPU);
  \`wrk -c $WRK_CONNS -t 1 -d ${RATE_S}s --latency -H 'Connection: close' http://127.0.0.1:PORT/\`: every
  request is a new TCP connection through the proxy. wrk socket errors and non-2xx responses: $ERRS.
  net.ipv4.tcp_tw_reuse = $TW_REUSE (the backend closes first, so TIME_WAIT stays on the server sides).
- Memory: $MEM_SPLIT. Each client sends one byte and reads the backend's one-byte answer, so
  every connection is proxied end to end, then holds it. VmRSS from /proc/PID/status, summed
  over the instances (nginx: master and worker), 1 s after start and 2 s after the last
  connection is up: (after − before) / connections. Connections held: agent ${R[memok,agent]},
  nginx ${R[memok,nginx]}, haproxy ${R[memok,haproxy]}. RSS leaves out kernel memory (socket buffers,
  splice pipes), which all three also use. Open files counted in /proc/PID/fd the same way.

## Every round

$RAW
EOF
[[ -z $OTHER_SECTIONS ]] || printf '\n%s\n' "$OTHER_SECTIONS" >>"$OUT"

echo
echo "$TABLE"
echo
echo "$VERDICTS"
echo
log "written to $OUT (load average now $LOAD_AFTER)"
