#!/usr/bin/env bash
# The `make run` demo: a control plane on its embedded store, one agent, two echo
# backends, and examples/quickstart.yaml applied with flotctl. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/bin}
STATE=${STATE:-$PWD/.run}
XDS=127.0.0.1:18000
ADMIN=127.0.0.1:18001
METRICS=127.0.0.1:18002
AGENT_ADMIN=127.0.0.1:9901
mkdir -p "$STATE/logs"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping demo fleet..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

start() { # name, command...
  local name=$1; shift
  "$@" >"$STATE/logs/$name.log" 2>&1 &
  pids+=($!)
}

# wait_for DESCRIPTION COMMAND...: retry COMMAND for up to 20s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "demo: $what did not come up; logs are in $STATE/logs" >&2
  tail -n 20 "$STATE"/logs/*.log >&2 || true
  exit 1
}

start backend-1 "$BIN/echo-backend" -name backend-1 -listen 127.0.0.1:9001
start backend-2 "$BIN/echo-backend" -name backend-2 -listen 127.0.0.1:9002
start controlplane "$BIN/flotilla-controlplane" --xds-addr "$XDS" --admin-addr "$ADMIN" --metrics-addr "$METRICS" --data-dir "$STATE/controlplane"
start agent "$BIN/flotilla-agent" --control-plane "$XDS" --node-id demo-agent --labels dc=local,role=edge \
  --data-dir "$STATE/agent" --admin-addr "$AGENT_ADMIN" --drain-timeout 5s

export FLOTILLA_SERVER=$ADMIN
wait_for "the control plane" "$BIN/flotctl" history --limit 1
"$BIN/flotctl" apply examples/quickstart.yaml -m "make run: quickstart"
"$BIN/flotctl" wait --for=converged --timeout 30s
wait_for "the agent's listener on 127.0.0.1:10000" bash -c 'exec 3<>/dev/tcp/127.0.0.1/10000' 
"$BIN/flotctl" agents

cat <<MSG

Flotilla is running: control plane (xDS $XDS, admin $ADMIN), agent demo-agent, backends on :9001 and :9002.
Send traffic through the agent's listener on 127.0.0.1:10000 (each line comes back from one backend, round robin):

    echo hello | nc -q1 127.0.0.1 10000
    # no nc? plain bash:  exec 3<>/dev/tcp/127.0.0.1/10000; echo hello >&3; head -1 <&3; exec 3>&-

Then try:  bin/flotctl agents    bin/flotctl history    curl -s http://$AGENT_ADMIN/config_dump
           bin/flotctl stats (a few seconds after some traffic)    curl -s http://$METRICS/metrics | grep flotilla_controlplane
           edit examples/quickstart.yaml and run  bin/flotctl diff examples/quickstart.yaml  and  bin/flotctl apply examples/quickstart.yaml -m "my change"
(FLOTILLA_SERVER=$ADMIN is the default, so flotctl finds this control plane.)  Logs: $STATE/logs/.  Ctrl-C stops all.
MSG
wait
