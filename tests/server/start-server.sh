#!/usr/bin/env bash
# Start a throw-away pouchdb-server (CouchDB-compatible, in memory) for the tests.
#
# Usage:   eval "$(tests/server/start-server.sh)"
# Stdout:  exactly one line of shell, for eval:
#            export COUCHDB_URL=http://127.0.0.1:PORT COUCHDB_USER=admin \
#                   COUCHDB_PASSWORD=... COUCHGATE_SERVER_PID=... COUCHGATE_SERVER_DIR=...
#          Everything else (npm output, progress, errors) goes to stderr.
# Exit:    0 when the server answers GET / and accepts the admin credentials;
#          1 otherwise (server output printed to stderr, server stopped, run dir removed).
# Stop:    tests/server/stop-server.sh "$COUCHGATE_SERVER_PID" "$COUCHGATE_SERVER_DIR"
#
# Environment (all optional):
#   COUCHGATE_SERVER_DIR   run dir (default tests/server/.run-<port>); it holds config.json,
#                          log.txt and server.out, and is the server's cwd.
#   COUCHGATE_SERVER_PORT  fixed port instead of a free one picked at random.
#   COUCHGATE_SERVER_TIMEOUT  readiness deadline in seconds (default 30).
#
# Why it is run this way (pouchdb-server 4.2.0 measurements): --in-memory keeps the fd
# count constant and leaves no database files; -n stops the log being echoed to stdout;
# the server rewrites its config file at startup (hashes the password, adds a uuid), so a
# fresh one is written every run; `GET /` answers 200 with an "express-pouchdb" key (there
# is no /_up); it is ready about 1 s after start.
set -euo pipefail

# Keep the real stdout on fd 3 for the final export line and send everything else
# (including npm's chatter) to stderr, so `eval "$(...)"` only ever sees the exports.
exec 3>&1 1>&2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deadline_s="${COUCHGATE_SERVER_TIMEOUT:-30}"
marker=".couchgate-test-server"   # stop-server.sh only deletes dirs carrying this file

log() { echo "start-server: $*" >&2; }
die() { log "$*"; exit 1; }

command -v node >/dev/null 2>&1 || die "node is not on PATH (run deploy/install-deps.sh)"
command -v curl >/dev/null 2>&1 || die "curl is not on PATH (run deploy/install-deps.sh)"

# --- 1. npm dependencies ---------------------------------------------------------------
# `npm ci` whenever node_modules is missing, incomplete, or older than the lock file.
"$here/../support/npm-ci.sh" "$here" node_modules/.bin/pouchdb-server || die "npm dependencies not installed"

# --- helpers ---------------------------------------------------------------------------
free_port() {
  # Ask the kernel for an unused loopback port (python3 isn't guaranteed; node is).
  node -e 'const s=require("net").createServer();
           s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

random_password() {
  # 32 hex chars: no characters that need quoting in URLs, JSON or shell.
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

is_alive() {
  # kill -0 also succeeds for zombies (possible when nobody reaps, e.g. bash as PID 1).
  local pid="$1" state
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

server_using() {
  # Pid of a live pouchdb-server whose --config lives in run dir $1, if any. Guards against
  # wiping the dir of a running server (e.g. COUCHGATE_SERVER_DIR still exported from an
  # earlier `eval` in the same shell).
  local want="$1/config.json" p cmd
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)"
    if [[ "$cmd" == *pouchdb-server*"$want"* ]]; then
      echo "${p#/proc/}"
      return 0
    fi
  done
  return 1
}

dump_output() {
  local dir="$1" f
  for f in server.out log.txt; do
    if [[ -s "$dir/$f" ]]; then
      echo "----- $dir/$f (last 100 lines) -----" >&2
      tail -n 100 "$dir/$f" >&2 || true
    fi
  done
  echo "----- end of server output -----" >&2
}

# --- 2. start, with a retry if someone grabs the picked port first -----------------------
attempts=3
[[ -n "${COUCHGATE_SERVER_PORT:-}" ]] && attempts=1
for (( attempt = 1; attempt <= attempts; attempt++ )); do
  port="${COUCHGATE_SERVER_PORT:-$(free_port)}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "could not pick a port (got '$port')"
  url="http://127.0.0.1:$port"
  rundir="${COUCHGATE_SERVER_DIR:-$here/.run-$port}"

  # A fresh run dir every time. Refuse to wipe a directory we didn't create, or one a
  # running server still uses.
  if [[ -e "$rundir" ]]; then
    [[ -d "$rundir" ]] || die "$rundir exists and is not a directory"
    rundir="$(cd "$rundir" && pwd)"
    if other="$(server_using "$rundir")"; then
      die "$rundir is in use by running pouchdb-server pid $other (stale COUCHGATE_SERVER_DIR? stop it with stop-server.sh)"
    fi
    if [[ -f "$rundir/$marker" ]]; then
      rm -rf -- "$rundir"
    elif [[ -d "$rundir" && -z "$(ls -A "$rundir")" ]]; then
      rmdir -- "$rundir"
    else
      die "$rundir exists and was not created by start-server.sh; refusing to reuse it"
    fi
  fi
  mkdir -p -- "$rundir"
  rundir="$(cd "$rundir" && pwd)"   # absolute: the server runs with cwd=rundir
  : >"$rundir/$marker"

  password="$(random_password)"
  # Written by node so that any path is JSON-escaped correctly.
  node -e 'const [f,pw,logf]=process.argv.slice(1);
           require("fs").writeFileSync(f, JSON.stringify({admins:{admin:pw},log:{file:logf}},null,2)+"\n");' \
    "$rundir/config.json" "$password" "$rundir/log.txt"

  log "starting pouchdb-server on $url (run dir $rundir)"
  # cwd=rundir so anything the server writes lands there and is removed with it.
  # `trap - INT QUIT`: bash ignores SIGINT/SIGQUIT in background jobs; undo that so the
  # server behaves like a normal process. fd 3 (our captured stdout) is closed so the
  # caller's $(...) doesn't wait for the server to exit.
  (
    trap - INT QUIT
    cd "$rundir"
    exec "$here/node_modules/.bin/pouchdb-server" --in-memory -n \
      --host 127.0.0.1 --port "$port" --config "$rundir/config.json"
  ) >"$rundir/server.out" 2>&1 </dev/null 3>&- 9>&- &
  pid=$!

  # --- 3. wait until it answers (and really is our pouchdb-server) ---------------------
  ready=0
  start=$SECONDS
  while (( SECONDS - start < deadline_s )); do
    if ! is_alive "$pid"; then
      break
    fi
    if body="$(curl -fsS --max-time 2 "$url/" 2>/dev/null)" && [[ "$body" == *express-pouchdb* ]]; then
      # The admin account must work too, or every test fails in confusing ways.
      if curl -fsS --max-time 2 -u "admin:$password" "$url/_session" 2>/dev/null | grep -q '"_admin"'; then
        ready=1
        break
      fi
    fi
    sleep 0.2
  done

  if (( ready )); then
    log "ready on $url after $(( SECONDS - start ))s (pid $pid)"
    printf 'export COUCHDB_URL=%q COUCHDB_USER=admin COUCHDB_PASSWORD=%q COUCHGATE_SERVER_PID=%q COUCHGATE_SERVER_DIR=%q\n' \
      "$url" "$password" "$pid" "$rundir" >&3
    exit 0
  fi

  # Failed: keep the evidence on stderr, then leave nothing behind.
  if is_alive "$pid"; then
    log "server did not become ready within ${deadline_s}s"
  else
    log "server exited during startup"
  fi
  dump_output "$rundir"
  # A listen error is reported as EADDRINUSE without -n; with -n pouchdb-server 4.2.0
  # crashes in its own error handler ("stopTailingLog is not a function"), which only
  # happens on a listen error.
  port_taken=0
  grep -Eqs 'EADDRINUSE|already in use|stopTailingLog is not a function' "$rundir/server.out" && port_taken=1
  bash "$here/stop-server.sh" "$pid" "$rundir" || true
  if (( port_taken && attempt < attempts )); then
    log "port $port was taken meanwhile; retrying with another port"
    continue
  fi
  break
done
exit 1
