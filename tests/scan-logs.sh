#!/usr/bin/env bash
# The whole test run's log scan (tests/run.sh calls it last): no log line of the run may
# contain a secret the tests used. The tests register every password, Basic-auth value,
# AuthSession cookie and bearer token they use in SECRETS (one a line; tests/support/harness
# register_secret, tests/clients/lib.js record_secrets); the logs are every file under the
# given paths named like one: *.log, *.out, stdout/stderr captures (`out`, `err`) and the
# test server's log.txt — the daemons' logs (tests start couchgate with its stdout and stderr in
# files under COUCHGATE_TEST_RUN_DIR), the client scripts' output, ctest's test output and
# the server's log.
#
# Usage: tests/scan-logs.sh SECRETS PATH...
# Exit:  0 when nothing was found; 1 naming each FILE:LINE with a secret (the secret itself is
#        never printed) or when there was nothing to scan with or in; 2 on bad usage.
set -euo pipefail

(( $# >= 2 )) || { echo "usage: $0 SECRETS PATH..." >&2; exit 2; }
secrets="$1"
shift
log() { echo "scan-logs: $*" >&2; }

patterns="$(mktemp)"
files="$(mktemp)"
trap 'rm -f "$patterns" "$files"' EXIT
# Short values would match by chance: the register keeps none under 6 characters anyway.
if [[ -f "$secrets" ]]; then
  awk 'length($0) >= 6' "$secrets" | sort -u >"$patterns"
fi
if [[ ! -s "$patterns" ]]; then
  log "no secrets registered in $secrets: the scan would prove nothing"
  exit 1
fi

for p in "$@"; do
  [[ -e "$p" ]] || continue
  find "$p" -type f \( -name '*.log' -o -name '*.out' -o -name out -o -name err -o -name 'log.txt' \) -print0
done >"$files"

nfiles="$(tr -cd '\0' <"$files" | wc -c)"
if (( nfiles == 0 )); then
  log "no log files under $*: the scan would prove nothing"
  exit 1
fi
nlines="$(xargs -0 cat -- <"$files" | wc -l)"

# -F fixed strings, -a binary files as text, -H/-n file and line; only FILE:LINE is kept.
hits="$(xargs -0 grep -aHnF -f "$patterns" -- <"$files" | cut -d: -f1,2 || true)"
if [[ -n "$hits" ]]; then
  log "a test secret appears in these log lines (the values are in $secrets):"
  echo "$hits" | sed 's/^/  /' >&2
  exit 1
fi
log "$nfiles log files, $nlines lines, $(wc -l <"$patterns") secrets: none found"
