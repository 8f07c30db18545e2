#!/usr/bin/env bash
# THE test command (README and .ci/run call it): build, run every test, smoke-run the
# benchmark.
#
# Usage: tests/run.sh [ctest args...]        e.g. tests/run.sh -R unit
#
# Server: if COUCHDB_URL is set, the tests use that server (e.g. a real CouchDB 3.x, with
# COUCHDB_USER/COUCHDB_PASSWORD) and COUCHGATE_TEST_SERVER stays unset. Otherwise a
# throw-away pouchdb-server is started (tests/server/start-server.sh), stopped again on
# exit, and COUCHGATE_TEST_SERVER=pouchdb tells the integration tests to adapt to its
# known gaps.
# COUCHGATE_SKIP_BENCH=1 skips the benchmark smoke run.
# Log scan: the tests write their files and the logs of every daemon they start under a fresh
# run dir (COUCHGATE_TEST_RUN_DIR) and register each password, Basic value, cookie and token they
# use in COUCHGATE_TEST_SECRETS; at the end tests/scan-logs.sh scans every log of the run (those,
# ctest's test output, the test server's log; COUCHGATE_TEST_SERVER_LOG names an external
# server's) for them. The run dir is removed when everything passed.
# COUCHGATE_BUILD_DIR=dir tests the build in dir (default build; deploy/build.sh builds it), e.g.
# a sanitizer build (tests/sanitize.sh).
# Exit status: ctest's; if ctest passed, the benchmark smoke run's; then the log scan's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

log() { echo "run-tests: $*" >&2; }

# Build first, so the test server doesn't sit idle during a long compile.
bash deploy/build.sh

server_pid=""
server_dir=""

# shellcheck disable=SC2317  # only called from the traps below
stop_our_server() {
  local status=$? p cmd survivors=""
  trap - EXIT INT TERM
  # A TERM that lands while start-server.sh runs is handled right after it returns, before
  # the variables below are set: take the pid/dir from its output then.
  if [[ -z "$server_pid" && -n "${server_env:-}" ]]; then
    eval "$server_env"
    server_pid="$COUCHGATE_SERVER_PID"
    server_dir="$COUCHGATE_SERVER_DIR"
  fi
  [[ -n "$server_pid" ]] || exit "$status"

  # The server has no supervisor; if it died during the tests (it can crash on some
  # requests), its output explains why integration tests failed.
  # (A dead process can linger as a zombie until reaped; kill -0 alone would miss it.)
  if ! kill -0 "$server_pid" 2>/dev/null \
     || [[ "$(awk '{print $3}' "/proc/$server_pid/stat" 2>/dev/null || true)" == "Z" ]]; then
    log "pouchdb-server (pid $server_pid) had already exited; its output:"
    tail -n 50 "$server_dir/server.out" "$server_dir/log.txt" >&2 2>/dev/null || true
  fi
  bash tests/server/stop-server.sh "$server_pid" "$server_dir" || status=1

  # No stray processes: nothing may still run with our run dir's config on its command line.
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)"
    if [[ "$cmd" == *pouchdb-server*"$server_dir/config.json"* ]]; then
      survivors+=" ${p#/proc/}"
    fi
  done
  if [[ -n "$survivors" ]]; then
    log "pouchdb-server process(es) still running after stop:$survivors; killing them"
    # shellcheck disable=SC2086  # a list of pids
    kill -KILL $survivors 2>/dev/null || true
    (( status != 0 )) || status=1
  fi
  exit "$status"
}

if [[ -z "${COUCHDB_URL:-}" ]]; then
  # Installed before the start so an interrupt during startup still cleans up; the exit
  # codes follow the shell convention (128 + signal).
  trap stop_our_server EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # Assign first, eval second: `eval "$(cmd)"` would hide a failing cmd from set -e.
  server_env="$(bash tests/server/start-server.sh)"
  eval "$server_env"
  server_pid="$COUCHGATE_SERVER_PID"
  server_dir="$COUCHGATE_SERVER_DIR"
  export COUCHGATE_TEST_SERVER=pouchdb
  log "using pouchdb-server at $COUCHDB_URL (pid $server_pid)"
else
  unset COUCHGATE_TEST_SERVER
  # (sed strips any user:password@ from the URL before printing it)
  log "using the server at $(sed -E 's#//[^/@]*@#//#' <<<"$COUCHDB_URL"); not starting one"
fi

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/couchgate-tests.XXXXXX")"
export COUCHGATE_TEST_RUN_DIR="$run_dir"
export COUCHGATE_TEST_SECRETS="$run_dir/secrets.txt"
( umask 077; : >"$COUCHGATE_TEST_SECRETS" )
# The server's admin credentials, as given (the tests register what they derive from them).
if [[ -n "${COUCHDB_PASSWORD:-}" ]]; then
  printf '%s\n' "$COUCHDB_PASSWORD" >>"$COUCHGATE_TEST_SECRETS"
  printf '%s\n' "$(printf '%s:%s' "${COUCHDB_USER:-}" "$COUCHDB_PASSWORD" | base64 -w0)" >>"$COUCHGATE_TEST_SECRETS"
fi
rm -f "${COUCHGATE_BUILD_DIR:-build}/Testing/Temporary/LastTest.log"
log "test files and logs in $run_dir"

status=0
ctest --test-dir "${COUCHGATE_BUILD_DIR:-build}" --output-on-failure "$@" || status=$?

bench="${COUCHGATE_BUILD_DIR:-build}/tests/couchgate_bench"
if (( status != 0 )); then
  log "ctest failed (exit $status); skipping the benchmark smoke run"
elif [[ -n "${COUCHGATE_SKIP_BENCH:-}" ]]; then
  log "COUCHGATE_SKIP_BENCH is set; skipping the benchmark smoke run"
elif [[ ! -x "$bench" ]]; then
  log "$bench not built; skipping the benchmark smoke run"
else
  log "benchmark smoke run: $bench --smoke --out build/bench-smoke.json"
  "$repo/$bench" --smoke --out build/bench-smoke.json || status=$?
  (( status == 0 )) || log "benchmark smoke run failed (exit $status)"
fi

# Every log line of the run, scanned for every secret the tests registered.
scan_paths=("$run_dir" "${COUCHGATE_BUILD_DIR:-build}/Testing/Temporary")
[[ -n "$server_dir" ]] && scan_paths+=("$server_dir")
[[ -n "${COUCHGATE_TEST_SERVER_LOG:-}" ]] && scan_paths+=("$COUCHGATE_TEST_SERVER_LOG")
if bash tests/scan-logs.sh "$COUCHGATE_TEST_SECRETS" "${scan_paths[@]}"; then
  (( status != 0 )) || rm -rf "$run_dir"
else
  log "log scan failed: see above (files kept in $run_dir)"
  (( status != 0 )) || status=1
fi

exit "$status"
