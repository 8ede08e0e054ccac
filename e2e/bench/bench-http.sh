#!/usr/bin/env bash
# bench-http.sh: `make bench-http`. Measures, in one run on loopback, HTTP/1.1 reverse
# proxying by four paths: direct (wrk → backend), the Flotilla agent (an http listener,
# route "/" to the backend cluster), nginx `http {}` (upstream keep-alive) and HAProxy
# `mode http` (http-reuse always): requests/s and p50/p99 latency of
# `wrk -t1 -c100 --latency` with keep-alive against a small Go backend (e2e/bench/httpbackend,
# 1 KiB body). Each proxy gets one core (taskset -c 0; the agent with GOMAXPROCS=1); wrk and
# the backend share the other (taskset -c 1, the backend with GOMAXPROCS=1). The proxies'
# CPU use during each run is read from /proc, to show which side is the bottleneck, and so
# is what other processes took from the proxy core, to show when a run was disturbed.
# It prints a table and writes it, with the machine facts and the exact command, into
# BENCHMARKS.md between the markers <!-- bench-http:begin --> and <!-- bench-http:end -->
# (appended when they are missing); the rest of the file is left as it was. Everything it
# starts is stopped on exit (also on Ctrl-C) and its temporary directory is removed.
#
# Knobs (environment): BENCH_S (10: seconds per wrk run), BENCH_REPEAT (3: rounds, the median
# is reported; the rounds interleave the paths), BENCH_CONNS (100), BENCH_PATHS ("direct agent
# nginx haproxy": a subset skips the others, e.g. before the agent speaks HTTP),
# BENCH_QUIET_WAIT (60: seconds to wait, before each run, for other work on the machine to
# leave the proxy core alone; 0 does not wait), BENCH_OUT
# (BENCHMARKS.md), BIN (bin/), BENCH_AGENT_REV (what the agent was built from, for the report;
# default: git describe of this tree).
set -euo pipefail
cd "$(dirname "$0")/../.."
# The exact command, for BENCHMARKS.md: make's or the script's, with the knobs that were set.
CMD=""
for k in BIN BENCH_S BENCH_REPEAT BENCH_CONNS BENCH_PATHS BENCH_QUIET_WAIT BENCH_OUT BENCH_AGENT_REV; do
  [[ -n ${!k:-} ]] && CMD+="$k=${!k} "
done
if [[ -n ${MAKELEVEL:-} ]]; then CMD+="make bench-http"; else CMD+="bash e2e/bench/bench-http.sh"; fi
ROOT=$PWD
BIN=${BIN:-$ROOT/bin}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
RATE_S=${BENCH_S:-10}
REPEAT=${BENCH_REPEAT:-3}
CONNS=${BENCH_CONNS:-100}
QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
read -r -a PATHS <<<"${BENCH_PATHS:-direct agent nginx haproxy}"
PROXY_CPU=0
LOAD_CPU=1
BODY=1024
BEGIN_MARK='<!-- bench-http:begin -->'
END_MARK='<!-- bench-http:end -->'

# Ports (all on 127.0.0.1, below the ephemeral range 32768–60999; apart from bench-l4's).
P_BACKEND=25401
P_AGENT=25411 P_AGENT_ADMIN=25412
P_NGINX=25421
P_HAPROXY=25431
P_CP_XDS=25490 P_CP_ADMIN=25491

log() { printf '[bench-http %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for p in "${PATHS[@]}"; do
  case $p in direct | agent | nginx | haproxy) ;; *) die "BENCH_PATHS: unknown path $p (direct, agent, nginx, haproxy)" ;; esac
done
[[ $RATE_S =~ ^[1-9][0-9]*$ ]] || die "BENCH_S must be a whole number of seconds, got $RATE_S"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT must be a positive number, got $REPEAT"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNS must be a positive number, got $CONNS"
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "BENCH_QUIET_WAIT must be a whole number of seconds, got $QUIET_WAIT"
has_path() { local p; for p in "${PATHS[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }

# Process handling: start, stop, forget, wait_listen and the cleanup on exit.
source e2e/bench/lib.sh # the working directory is the repository root

# wait_http PORT: wait up to 30s for GET http://127.0.0.1:PORT/ to answer 200 with the
# backend's body (a listener can be up before its routes are).
wait_http() {
  local code=""
  for i in $(seq 1 300); do
    code=$(curl -s -o "$TMP/probe.out" -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/" || true)
    if [[ $code == 200 ]] && (($(wc -c <"$TMP/probe.out") == BODY)); then return 0; fi
    sleep 0.1
  done
  die "GET http://127.0.0.1:$1/ did not answer 200 with $BODY bytes within 30s (last status: ${code:-none}; body: $(head -c 200 "$TMP/probe.out" 2>/dev/null))"
}

# tree PID: PID and its children (nginx: master and workers).
tree() { echo "$1"; pgrep -P "$1" || true; }

# cpu_ticks PID...: summed utime+stime (clock ticks) of the processes and their children.
cpu_ticks() {
  local p sum=0 t
  for p in $(for q in "$@"; do tree "$q"; done); do
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
    t=$(sed -E 's/^.*\) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

# cpu_busy CPU: busy clock ticks of one CPU so far (user, nice, system, irq, softirq and
# steal from /proc/stat), whoever used them.
cpu_busy() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# median VALUE...: the median (the lower middle for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# ---------------------------------------------------------------------------------------
# Tools: install what is missing from Debian, nothing else.
# ---------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v ss >/dev/null || missing+=(iproute2)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  log "installing from Debian: ${missing[*]}"
  [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
(($(nproc) >= 2)) || die "needs 2 cores (one for the proxy, one for the load), have $(nproc)"
if has_path agent; then
  for b in flotilla-controlplane flotilla-agent flotctl; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: run make build"
  done
fi

TMP=$(mktemp -d /tmp/bench-http.XXXXXX)
mkdir -p "$TMP/logs" "$TMP/bin"
ulimit -n "$(ulimit -Hn)"
log "building the Go backend (e2e/bench/httpbackend)"
CGO_ENABLED=0 go build -o "$TMP/bin/" ./e2e/bench/httpbackend

for port in $P_BACKEND $P_AGENT $P_AGENT_ADMIN $P_NGINX $P_HAPROXY $P_CP_XDS $P_CP_ADMIN; do
  if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is taken; stop what uses it"; fi
done

START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
CLK_TCK=$(getconf CLK_TCK)
log "load average: $LOAD_BEFORE (other work on this machine makes the numbers noisy)"
# wrk keeps its connections open, so the table barely grows here; a full table still drops
# the connection set-ups and every path would look broken. Say so up front.
if [ -r /proc/sys/net/netfilter/nf_conntrack_count ]; then
  CT_COUNT=$(cat /proc/sys/net/netfilter/nf_conntrack_count)
  CT_MAX=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
  log "conntrack: $CT_COUNT of $CT_MAX entries in use"
  if [ "$CT_COUNT" -gt $((CT_MAX / 2)) ]; then
    die "the conntrack table is over half full ($CT_COUNT of $CT_MAX): wait for it to drain (or raise net.netfilter.nf_conntrack_max)"
  fi
fi
log "fairness: every proxy runs on CPU $PROXY_CPU only (taskset -c $PROXY_CPU, nginx worker_processes 1, haproxy nbthread 1, agent GOMAXPROCS=1); wrk and the backend (GOMAXPROCS=1) on CPU $LOAD_CPU"

# ---------------------------------------------------------------------------------------
# Configs. Every proxy forwards HTTP/1.1 over a pool of keep-alive upstream connections and
# adds the headers a reverse proxy is usually set up to add (X-Forwarded-For,
# X-Forwarded-Proto, X-Real-IP), which the agent adds by default; no access logs.
# ---------------------------------------------------------------------------------------
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off; master_process on; worker_processes 1;
worker_rlimit_nofile 16000; pid $TMP/nginx/nginx.pid; error_log $TMP/nginx/error.log warn;
events { worker_connections 8000; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/client_body; proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi; uwsgi_temp_path $TMP/nginx/uwsgi; scgi_temp_path $TMP/nginx/scgi;
  upstream backend { server 127.0.0.1:$P_BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF

cat >"$TMP/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 6000
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 1m
  timeout server 1m
  timeout http-keep-alive 1m
frontend web
  bind 127.0.0.1:$P_HAPROXY
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Real-IP %[src]
  default_backend backend
backend backend
  server s1 127.0.0.1:$P_BACKEND
EOF

# The agent's bundle: one http listener, everything at its defaults, route "/" to the backend.
cat >"$TMP/bench.yaml" <<EOF
listeners:
  - name: web
    address: "127.0.0.1:$P_AGENT"
    http:
      routes:
        - match: { prefix: / }
          cluster: backend
clusters:
  - name: backend
    endpoints: ["127.0.0.1:$P_BACKEND"]
EOF

# ---------------------------------------------------------------------------------------
# Backend, and the control plane when the agent is measured (on the load CPU: it is idle
# during the measurements).
# ---------------------------------------------------------------------------------------
start backend $LOAD_CPU env GOMAXPROCS=1 "$TMP/bin/httpbackend" -listen 127.0.0.1:$P_BACKEND -size $BODY -max-run 2h
BACKEND_PID=$STARTED
wait_listen $P_BACKEND
wait_http $P_BACKEND

if has_path agent; then
  start controlplane $LOAD_CPU "$BIN/flotilla-controlplane" --xds-addr 127.0.0.1:$P_CP_XDS \
    --admin-addr 127.0.0.1:$P_CP_ADMIN --data-dir "$TMP/controlplane"
  CP_PID=$STARTED
  export FLOTILLA_SERVER=127.0.0.1:$P_CP_ADMIN
  for i in $(seq 1 200); do
    "$BIN/flotctl" history --limit 1 >/dev/null 2>&1 && break
    ((i < 200)) || die "the control plane did not come up"
    sleep 0.1
  done
  "$BIN/flotctl" apply "$TMP/bench.yaml" -m "bench-http" >"$TMP/logs/apply.log" 2>&1 ||
    die "flotctl apply failed: $(cat "$TMP/logs/apply.log")"
fi

# start_path PATH: start the proxy of PATH on the proxy CPU and wait until it proxies;
# sets STARTED (empty for direct) and PORT.
start_path() {
  STARTED=""
  case $1 in
    direct) PORT=$P_BACKEND ;;
    agent)
      PORT=$P_AGENT
      start agent $PROXY_CPU env GOMAXPROCS=1 "$BIN/flotilla-agent" \
        --control-plane 127.0.0.1:$P_CP_XDS --node-id bench-http --labels bench=http \
        --data-dir "$TMP/agent" --admin-addr "127.0.0.1:$P_AGENT_ADMIN" --drain-timeout 1s
      ;;
    nginx)
      PORT=$P_NGINX
      start nginx $PROXY_CPU nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
      ;;
    haproxy)
      PORT=$P_HAPROXY
      start haproxy $PROXY_CPU haproxy -db -f "$TMP/haproxy.cfg"
      ;;
  esac
  wait_listen "$PORT"
  wait_http "$PORT"
}

# wrk_run PORT: one wrk run against 127.0.0.1:PORT; prints "rate p50_ms p99_ms errors".
wrk_run() {
  local txt="$TMP/wrk-$1.txt"
  timeout --foreground $((RATE_S + 30)) taskset -c $LOAD_CPU wrk -t 1 -c "$CONNS" -d "${RATE_S}s" --latency \
    "http://127.0.0.1:$1/" >"$txt" 2>&1 || die "wrk against port $1 failed: $(cat "$txt")"
  cat "$txt" >>"$TMP/logs/wrk.log"
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

# wait_quiet: wait up to QUIET_WAIT seconds for the proxy core to be quiet (other
# processes using less than 10% of it over a second), so that a burst of work elsewhere on
# the machine (a compile, a test run) does not land in a measurement; logs when it gives up.
wait_quiet() {
  local b0 b1 pct i
  ((QUIET_WAIT > 0)) || return 0
  for ((i = 0; i < QUIET_WAIT; i++)); do
    b0=$(cpu_busy $PROXY_CPU)
    sleep 1
    b1=$(cpu_busy $PROXY_CPU)
    pct=$((100 * (b1 - b0) / CLK_TCK))
    ((pct < 10)) && return 0
  done
  log "warning: core $PROXY_CPU still ${pct}% busy with other work after ${QUIET_WAIT}s; measuring anyway"
}

# measure_path PATH: one round for one path (start its proxy, one wrk run, stop it);
# appends to the per-path lists RATE, P50, P99, CPU, CPUREQ, OTHER and adds to ERR.
declare -A RATE P50 P99 CPU CPUREQ OTHER ERR
measure_path() {
  local path=$1 pid out r t0=0 t1=0 b0 b1 cpu other
  wait_quiet
  start_path "$path"
  pid=$STARTED
  if [[ -n $pid ]]; then t0=$(cpu_ticks "$pid"); fi
  b0=$(cpu_busy $PROXY_CPU)
  out=$(wrk_run "$PORT")
  b1=$(cpu_busy $PROXY_CPU)
  if [[ -n $pid ]]; then t1=$(cpu_ticks "$pid"); fi
  if [[ -n $pid ]]; then stop "$pid"; fi
  read -r -a r <<<"$out"
  [[ -n ${r[0]:-} ]] || die "could not read wrk's output against port $PORT: $(cat "$TMP/wrk-$PORT.txt")"
  # Shares of the proxy core over the run: what the proxy used, and what everything else
  # on the machine took from it (the proxy is pinned there, the others are not).
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$RATE_S" 'BEGIN {printf "%.0f", 100 * d / hz / s}')
  other=$(awk -v b=$((b1 - b0)) -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$RATE_S" \
    'BEGIN {o = 100 * (b - d) / hz / s; printf "%.0f", (o < 0 ? 0 : (o > 100 ? 100 : o))}')
  RATE[$path]+=" ${r[0]}" P50[$path]+=" ${r[1]}" P99[$path]+=" ${r[2]}" OTHER[$path]+=" $other"
  if [[ -n $pid ]]; then
    CPU[$path]+=" $cpu"
    # Proxy CPU time per request, in µs: what a request costs the proxy, which other load
    # on the machine changes much less than the rate.
    CPUREQ[$path]+=" $(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v rate="${r[0]}" -v s="$RATE_S" \
      'BEGIN {printf "%.1f", (rate > 0 ? 1e6 * d / hz / (rate * s) : 0)}')"
  else
    cpu="—" # direct: no proxy
  fi
  ERR[$path]=$((${ERR[$path]:-0} + r[3]))
  log "$path: ${r[0]} req/s, p50 ${r[1]} ms, p99 ${r[2]} ms, non-2xx/socket errors ${r[3]}, proxy CPU $cpu% of core $PROXY_CPU, others $other% of it (load $(cut -d' ' -f1 /proc/loadavg))"
}

# The rounds interleave the paths, so that load from elsewhere on the machine spreads over
# all of them rather than hitting one; each proxy is started before its run and stopped after.
log "wrk -t1 -c$CONNS -d${RATE_S}s --latency, keep-alive, $BODY-byte responses; paths: ${PATHS[*]}; $REPEAT round(s)"
LOADS=""
for round in $(seq 1 "$REPEAT"); do
  log "round $round of $REPEAT"
  LOADS+="${LOADS:+, }$(cut -d' ' -f1 /proc/loadavg)"
  for path in "${PATHS[@]}"; do measure_path "$path"; done
done
[[ -n ${CP_PID:-} ]] && stop "$CP_PID"
stop "$BACKEND_PID"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A R # results: R[row,path]
for path in "${PATHS[@]}"; do
  R[rate,$path]=$(median ${RATE[$path]})
  R[p50,$path]=$(median ${P50[$path]})
  R[p99,$path]=$(median ${P99[$path]})
  R[cpu,$path]=$(median ${CPU[$path]:-})
  R[cpureq,$path]=$(median ${CPUREQ[$path]:-})
  R[other,$path]=$(median ${OTHER[$path]})
  R[errors,$path]=${ERR[$path]}
done

# ---------------------------------------------------------------------------------------
# Table and BENCHMARKS.md.
# ---------------------------------------------------------------------------------------
# row KEY LABEL DIGITS [RATIOS(yes|no)]: one markdown table row; "—" where a path was not
# measured.
row() {
  local key=$1 label=$2 digits=$3 ratios=${4:-yes}
  awk -v label="$label" -v dg="$digits" -v rs="$ratios" -v d="${R[$key,direct]:-}" -v a="${R[$key,agent]:-}" \
    -v n="${R[$key,nginx]:-}" -v h="${R[$key,haproxy]:-}" 'BEGIN {
    f = "%." dg "f"
    printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", label, cell(d), cell(a), cell(n), cell(h),
      ratio(a, n), ratio(a, h), ratio(a, d)
  }
  function cell(v) { return (v == "") ? "—" : sprintf(f, v) }
  function ratio(x, y) { return (rs != "yes" || x == "" || y == "" || y + 0 == 0) ? "—" : sprintf("%.2f×", x / y) }'
}

# verdict KEY LABEL BETTER(high|low): PASS/MISS of the agent against the better of nginx
# and HAProxy (issue 4's target).
verdict() {
  local key=$1 label=$2 better=$3
  local a=${R[$key,agent]:-} n=${R[$key,nginx]:-} h=${R[$key,haproxy]:-}
  if [[ -z $a || (-z $n && -z $h) ]]; then
    echo "- NOT MEASURED **$label**: needs the agent and nginx or HAProxy (BENCH_PATHS)"
    return
  fi
  awk -v label="$label" -v better="$better" -v a="$a" -v n="$n" -v h="$h" 'BEGIN {
    if (n == "") n = h; if (h == "") h = n
    if (better == "high") {
      best = (n > h) ? n : h; ok = (a >= best)
      why = sprintf("agent/best(nginx,haproxy) = %.3f× (target ≥ 1.0×)", a / best)
    } else {
      best = (n < h) ? n : h; ok = (a <= best)
      why = sprintf("agent/best(nginx,haproxy) = %.3f× (target ≤ 1.0×, lower is better)", a / best)
    }
    printf "- %s **%s**: %s\n", (ok ? "PASS" : "MISS"), label, why
  }'
}

TABLE=$(
  echo "| measurement | direct | agent | nginx | haproxy | agent/nginx | agent/haproxy | agent/direct |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  row rate "requests/s, keep-alive, c=$CONNS" 0
  row p50 "p50 latency (ms, lower is better)" 3
  row p99 "p99 latency (ms, lower is better)" 3
  row cpureq "proxy CPU per request (µs, lower is better; steadier than the rate on a busy machine)" 1
  row cpu "proxy CPU (% of its core)" 0 no
  row other "other processes on the proxy core (%, noise: should be near 0)" 0 no
)
VERDICTS=$(
  verdict rate "requests/s" high
  verdict p50 "p50 latency" low
  verdict p99 "p99 latency" low
)

RAW=$(
  echo "| path | requests/s | p50 (ms) | p99 (ms) | proxy CPU/request (µs) | proxy CPU (%) | others on its core (%) |"
  echo "|---|---|---|---|---|---|---|"
  for path in "${PATHS[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$path" "$(echo ${RATE[$path]} | sed 's/ /, /g')" \
      "$(echo ${P50[$path]} | sed 's/ /, /g')" "$(echo ${P99[$path]} | sed 's/ /, /g')" \
      "$(echo ${CPUREQ[$path]:-—} | sed 's/ /, /g')" "$(echo ${CPU[$path]:-—} | sed 's/ /, /g')" \
      "$(echo ${OTHER[$path]} | sed 's/ /, /g')"
  done
)

v() { { "$@" 2>&1 || true; } | sed -n 1p; }
NGINX_V=$(v nginx -v | sed 's/^nginx version: //')
HAPROXY_V=$(v haproxy -v | awk '{print $1, $3}')
WRK_V=$(v wrk -v | awk '{print $1, $2}')
GO_V=$(go version | awk '{print $3}')
AGENT_V="not measured"
if has_path agent; then
  AGENT_V="$(v "$BIN/flotilla-agent" --version) built from ${BENCH_AGENT_REV:-$(git describe --always --dirty 2>/dev/null || echo "an unknown tree")}"
fi
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
ERRS=""
for path in "${PATHS[@]}"; do ERRS+="${ERRS:+, }$path ${R[errors,$path]}"; done

SECTION="$TMP/section.md"
cat >"$SECTION" <<EOF
$BEGIN_MARK
# HTTP benchmarks

Written by [e2e/bench/bench-http.sh](e2e/bench/bench-http.sh) (\`make bench-http\`) on $START_DATE;
run it again to refresh this section (it replaces only the text between its markers). The
target is issue 4's ("Faster than nginx and HAProxy").

## Results

$TABLE

Target (agent ≥ 1.0× the better of nginx and HAProxy):

$VERDICTS

## How it was measured

- Command: \`$CMD\` (\`make bench-http\` builds bin/ and runs the script; this run:
  BENCH_REPEAT=$REPEAT: each cell is the median of $REPEAT rounds, the rounds interleaving the paths
  ${PATHS[*]}).
- Machine: $(nproc) cores ($CPU_MODEL), kernel $(uname -r), $GO_V; nginx $NGINX_V, $HAPROXY_V,
  $WRK_V; agent $AGENT_V. Load average before/after: $LOAD_BEFORE / $LOAD_AFTER; 1-min load at
  the start of each round: $LOADS (the benchmark itself accounts for about 2). Other jobs
  on the same cores make single runs noisy: read the rounds below, compare quiet runs.
- Load: \`wrk -t 1 -c $CONNS -d ${RATE_S}s --latency http://127.0.0.1:PORT/\`: HTTP/1.1, keep-alive, GET /.
  Non-2xx responses and socket errors (connect, read, write, timeout), summed over the rounds:
  $ERRS.
- Backend: e2e/bench/httpbackend (Go net/http, GOMAXPROCS=1), $BODY-byte text/plain body with
  Content-Length, keep-alive.
- Fairness: each proxy gets one core: \`taskset -c $PROXY_CPU\` for the proxy (nginx \`worker_processes 1\`,
  HAProxy \`nbthread 1\`, the agent with \`GOMAXPROCS=1\`); \`taskset -c $LOAD_CPU\` for wrk and the backend.
  Everything is on 127.0.0.1; each proxy is started and stopped around its own run. On the direct
  path wrk and the backend share core $LOAD_CPU with nothing on core $PROXY_CPU; a proxied path adds the
  proxy on its own core and a second loopback hop. "Proxy CPU" is utime+stime of the proxy's
  processes (nginx: master and worker) over the run from /proc/PID/stat, as a share of its
  core (and divided by the requests served, "proxy CPU per request"): near 100% means the proxy is the bottleneck, well below means wrk and the backend on
  core $LOAD_CPU are (or others took the core). "Other processes on the proxy core" is the
  core's busy time in /proc/stat minus the proxy's: work from elsewhere on the machine that
  competed with the proxy (direct: core $PROXY_CPU is otherwise idle). Runs where it is not near 0
  are disturbed. Before each run the script waits up to ${QUIET_WAIT}s for the proxy core to be quiet
  (under 10% busy over a second).
- Proxies, all forwarding HTTP/1.1 to the backend over reused keep-alive connections and adding
  X-Forwarded-For, X-Forwarded-Proto and X-Real-IP, no access log:
  - agent: control plane + agent from bin/, the bundle applied with \`flotctl apply\`: one \`http\`
    listener, \`routes: [{ match: { prefix: / }, cluster: backend }]\`, every other setting at its default;
  - nginx: \`upstream backend { server …; keepalive 64; }\`, \`proxy_http_version 1.1\`,
    \`proxy_set_header Connection ""\`, \`keepalive_requests 1000000\`, \`worker_processes 1\`;
  - HAProxy: \`mode http\`, \`nbthread 1\`, \`http-reuse always\`, \`option http-keep-alive\`,
    \`option forwardfor\`.

## Every round

$RAW
$END_MARK
EOF

# Replace the old section (between the markers) or append; leave the rest of OUT as it was.
if [[ -f $OUT ]] && grep -qF "$BEGIN_MARK" "$OUT"; then
  grep -qF "$END_MARK" "$OUT" || die "$OUT has $BEGIN_MARK without $END_MARK: fix it by hand"
  awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v sec="$SECTION" '
    $0 == b {while ((getline l < sec) > 0) print l; skip = 1; next}
    $0 == e {skip = 0; next}
    !skip' "$OUT" >"$TMP/out.md"
else
  { if [[ -s $OUT ]]; then cat "$OUT"; echo; fi; cat "$SECTION"; } >"$TMP/out.md"
fi
cat "$TMP/out.md" >"$OUT"

echo
echo "$TABLE"
echo
echo "$VERDICTS"
echo
log "written to $OUT (load average now $LOAD_AFTER)"
