#!/usr/bin/env bash
# Quick start (README command 1): build couchgate and run it in the foreground.
#
# Usage: deploy/quickstart.sh [extra couchgate args...]
#
# If COUCHDB_URL is set (with COUCHDB_USER/COUCHDB_PASSWORD), couchgate talks to that
# CouchDB. Otherwise a throw-away in-memory pouchdb-server is started for it and stopped
# again when couchgate exits (Ctrl-C). Note that pouchdb-server only approximates
# CouchDB 3.x (no _db_updates, integer seqs, ...): use a real CouchDB for anything serious.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "quickstart: $*" >&2; }

config="deploy/couchgate.quickstart.yaml"   # defaults + front door + sign-up
[[ -f "$config" ]] || { log "$config is missing"; exit 1; }

bash deploy/build.sh

server_pid=""
server_dir=""
child=""
embedded=""

# shellcheck disable=SC2317  # only called from the traps below
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$child" ]] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if [[ -z "$server_pid" && -n "${server_env:-}" ]]; then
    eval "$server_env"   # interrupted right after start-server.sh returned
    server_pid="$COUCHGATE_SERVER_PID"
    server_dir="$COUCHGATE_SERVER_DIR"
  fi
  if [[ -n "$server_pid" ]]; then
    log "stopping pouchdb-server (pid $server_pid)"
    bash tests/server/stop-server.sh "$server_pid" "$server_dir" || status=1
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z "${COUCHDB_URL:-}" ]]; then
  log "COUCHDB_URL is not set; starting a local in-memory pouchdb-server"
  server_env="$(bash tests/server/start-server.sh)"
  eval "$server_env"   # exports COUCHDB_URL/USER/PASSWORD, which couchgate reads
  server_pid="$COUCHGATE_SERVER_PID"
  server_dir="$COUCHGATE_SERVER_DIR"
  embedded=1
else
  # Never print credentials: strip any user:password@ from the URL.
  log "CouchDB: $(sed -E 's#//[^/@]*@#//#' <<<"$COUCHDB_URL")"
fi
log "admin API: http://127.0.0.1:8490; front door (clients): http://127.0.0.1:6984 (plain HTTP, loopback only)"

# The embedded server is a throw-away one on this machine, so its generated admin password is
# shown once, with commands to watch couchgate work (user "alice" -> database userdb-616c696365,
# the example config's prefix + hex of the name; her documents appear in couchgate-central as
# "alice:<id>"). Never done for a COUCHDB_URL of yours.
if [[ -n "$embedded" ]]; then
  hostport="${COUCHDB_URL#http://}"
  admin_url="http://${COUCHDB_USER}:${COUCHDB_PASSWORD}@${hostport}"
  cat >&2 <<EOT

================================================================================================
Embedded CouchDB-compatible server (pouchdb-server, in memory, gone when you press Ctrl-C):
  $admin_url
  (user $COUCHDB_USER, password $COUCHDB_PASSWORD; shown once, here)

Try it from another terminal while couchgate runs:

  # 1. Sign up through couchgate's front door (unique name and e-mail; couchgate creates the
  #    _users document and her database before it answers):
  curl -s -X POST http://127.0.0.1:6984/_signup -H 'Content-Type: application/json' \\
       -d '{"name":"alice","password":"alice-secret","email":"alice@example.org"}'
  #    (or as an admin, straight into _users; couchgate provisions that user too:
  #     curl -s -X PUT '$admin_url/_users/org.couchdb.user:bob' -H 'Content-Type: application/json' \\
  #          -d '{"name":"bob","password":"bob-secret","roles":[],"type":"user"}')

  # 2. See her database and its _security (alice is its only member):
  curl -s '$admin_url/_all_dbs'; curl -s '$admin_url/userdb-616c696365/_security'

  # 3. Write a document as alice through the front door (/me is her own database, whatever its
  #    name), then see it arrive in the central database as "alice:hello" (this server has no
  #    _db_updates, so couchgate looks for changes every 5 s):
  curl -s -X PUT http://alice:alice-secret@127.0.0.1:6984/me/hello \\
       -H 'Content-Type: application/json' -d '{"text":"hello"}'; sleep 6
  curl -s '$admin_url/couchgate-central/_all_docs?include_docs=true'

  # PouchDB syncs the same way: new PouchDB('http://alice:alice-secret@127.0.0.1:6984/me')
================================================================================================

EOT
fi
log "running: build/couchgate run --config $config $*   (Ctrl-C to stop)"

# Not exec: this shell must stay to run the cleanup trap. couchgate runs as a background
# child and we wait for it, so INT/TERM reach our traps at once (bash defers traps while
# a foreground command runs); they are forwarded to couchgate, then we keep waiting for it
# to shut down cleanly.
# - `trap - INT QUIT` undoes bash's SIG_IGN for background jobs, so a forwarded SIGINT
#   works like Ctrl-C on a foreground program.
# - setsid puts couchgate in its own session, so a terminal Ctrl-C reaches it exactly once
#   (forwarded by us) instead of twice. The subshell is not a process-group leader, so
#   setsid doesn't fork and $! stays couchgate's pid.
launcher=()
command -v setsid >/dev/null 2>&1 && launcher=(setsid)
( trap - INT QUIT; exec "${launcher[@]}" build/couchgate run --config "$config" "$@" ) &
child=$!
trap 'log "SIGINT: stopping couchgate"; kill -INT "$child" 2>/dev/null || true' INT
trap 'log "SIGTERM: stopping couchgate"; kill -TERM "$child" 2>/dev/null || true' TERM

status=0
while :; do
  wait "$child" && status=0 || status=$?
  # wait also returns (>128) when a trapped signal arrives; only stop once couchgate exited.
  kill -0 "$child" 2>/dev/null || break
done
child=""
log "couchgate exited with status $status"
exit "$status"
