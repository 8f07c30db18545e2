#!/usr/bin/env bash
# Stop a pouchdb-server started by start-server.sh and remove its run dir.
#
# Usage: tests/server/stop-server.sh PID [DIR]
#   PID  the server's pid (COUCHGATE_SERVER_PID)
#   DIR  its run dir (COUCHGATE_SERVER_DIR); removed only if start-server.sh created it
# Sends SIGTERM, waits up to COUCHGATE_SERVER_STOP_TIMEOUT seconds (default 10), then
# SIGKILL. Exit 0 when the process is gone (or was already gone), 1 if it survived.
# Only signals PID if it still is a pouchdb-server, so a stale pid that the kernel has
# reused for something else is never killed.
set -euo pipefail

pid="${1:-}"
dir="${2:-}"
grace_s="${COUCHGATE_SERVER_STOP_TIMEOUT:-10}"
marker=".couchgate-test-server"

log() { echo "stop-server: $*" >&2; }

if [[ ! "$pid" =~ ^[1-9][0-9]*$ ]]; then
  log "usage: $0 PID [DIR]"
  exit 2
fi

# start-server.sh passes an absolute path on the server's command line; match that.
if [[ -n "$dir" && -d "$dir" ]]; then
  dir="$(cd "$dir" && pwd)"
fi

is_alive() {
  # kill -0 also succeeds for zombies (nobody reaps them when bash is PID 1 in a
  # container); a zombie is dead for our purposes.
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)" != "Z" ]]
}

is_ours() {
  # The cmdline of our server is: node .../pouchdb-server --in-memory ... --config DIR/config.json
  local cmd
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
  [[ "$cmd" == *pouchdb-server* ]] || return 1
  [[ -z "$dir" || "$cmd" == *"$dir/config.json"* ]]
}

wait_gone() {
  local limit_s="$1" start=$SECONDS
  while is_alive; do
    (( SECONDS - start >= limit_s )) && return 1
    sleep 0.1
  done
}

status=0
if is_alive; then
  if is_ours; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$grace_s"; then
      log "pid $pid ignored SIGTERM for ${grace_s}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      if ! wait_gone 5; then
        log "pid $pid is still alive after SIGKILL"
        status=1
      fi
    fi
  else
    log "pid $pid is not our pouchdb-server (pid reused?); not signalling it"
  fi
fi

# Remove the run dir, but only one that start-server.sh made (it carries the marker).
if [[ -n "$dir" && -d "$dir" ]]; then
  if [[ -f "$dir/$marker" ]]; then
    rm -rf -- "$dir"
  else
    log "$dir has no $marker file; not removing it"
  fi
fi
exit "$status"
