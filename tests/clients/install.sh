#!/usr/bin/env bash
# Install the front-door client tests' npm dependencies (PouchDB 9, pure JS) from
# package-lock.json, when node_modules is missing or older than the lock file.
#
# Usage: tests/clients/install.sh      (test_front_sync.cpp runs it before any client script)
# Exit:  0 when node_modules is ready; 1 otherwise (npm's output on stderr).
#
# --ignore-scripts: nothing here needs an install script (no native module: the in-memory
# adapter is memdown); flock serialises concurrent installs (npm ci deletes node_modules
# first), as tests/server/start-server.sh does.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "clients/install: $*" >&2; exit 1; }
command -v node >/dev/null 2>&1 || die "node is not on PATH (run deploy/install-deps.sh)"

install_if_needed() {
  local marker="$here/node_modules/pouchdb-core/package.json"
  if [[ -f "$marker" && ! "$here/package-lock.json" -nt "$here/node_modules" ]]; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || die "npm is not on PATH (run deploy/install-deps.sh)"
  echo "clients/install: npm ci --ignore-scripts in $here" >&2
  (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund) >&2 || die "npm ci failed"
  touch "$here/node_modules"
  [[ -f "$marker" ]] || die "npm ci finished but $marker is missing"
}

if command -v flock >/dev/null 2>&1; then
  exec 9<"$here/package-lock.json"
  flock 9
  install_if_needed
else
  install_if_needed
fi
