# lib.sh: process handling shared by the bench-*.sh scripts (source it after defining
# log and die, and set TMP to the run's temporary directory before starting anything).
#
#   start NAME CPU COMMAND...  run COMMAND in the background, pinned to CPU ("-": not
#                              pinned), appending to $TMP/logs/NAME.log; sets STARTED
#   stop PID...                TERM the processes, wait for them, forget them
#   forget PID...              drop processes that are gone from those cleanup stops
#   wait_listen PORT...        wait up to 20s for a listener on each 127.0.0.1:PORT
#
# On exit (also Ctrl-C) cleanup stops every process still known, last started first, shows
# the tail of every log if the run failed, and removes $TMP. STOP_WAIT_S (default 5) is how
# long a process may take to exit after TERM before it and its children are killed.

TMP=""
PIDS=()
STOP_WAIT_S=${STOP_WAIT_S:-5}

cleanup() {
  local rc=$? i p f
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do stop_wait "$p"; done
  if [[ -n $TMP && -d $TMP ]]; then
    if ((rc != 0)); then
      log "logs of the failed run:"
      for f in "$TMP"/logs/*.log; do [[ -s $f ]] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }; done
    fi
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop_wait PID: wait up to STOP_WAIT_S for PID to exit after a TERM, then KILL it and its
# children (nginx workers do not outlive a master that stops normally, but would a killed one).
stop_wait() {
  local p=$1 kids
  for _ in $(seq 1 $((STOP_WAIT_S * 10))); do
    kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kids=$(pgrep -P "$p" || true)
  kill -KILL "$p" $kids 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

stop() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do stop_wait "$p"; done
  forget "$@"
}

forget() {
  local p q keep=()
  for q in "${PIDS[@]}"; do
    for p in "$@"; do [[ $q == "$p" ]] && continue 2; done
    keep+=("$q")
  done
  PIDS=("${keep[@]}")
}

start() {
  local name=$1 cpu=$2
  shift 2
  if [[ $cpu == - ]]; then
    "$@" >>"$TMP/logs/$name.log" 2>&1 &
  else
    taskset -c "$cpu" "$@" >>"$TMP/logs/$name.log" 2>&1 &
  fi
  STARTED=$!
  PIDS+=("$STARTED")
}

wait_listen() {
  local port
  for port in "$@"; do
    for _ in $(seq 1 200); do
      ss -Hltn "sport = :$port" | grep -q . && continue 2
      sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$port after 20s"
  done
}
