#!/usr/bin/env bash
# Install a test directory's npm dependencies exactly as its package-lock.json pins them,
# when `marker` (a file npm ci creates) is missing or node_modules is older than the lock file.
#
# Usage: tests/support/npm-ci.sh DIR MARKER     (MARKER relative to DIR)
# Exit:  0 when DIR/node_modules is ready; 1 otherwise (why, and npm's output, on stderr).
# Stdout stays empty (tests/server/start-server.sh's stdout is eval'd).
#
# --ignore-scripts: nothing the tests use needs an install script (pouchdb-server's sqlite3
# would compile from source for ~80 s and only --sqlite needs it; the clients use memdown).
# flock serialises concurrent installs (npm ci deletes node_modules first); it locks the lock
# file itself (opened read-only), so no extra file is left in the tree.
set -euo pipefail
exec 1>&2

dir="${1:?usage: npm-ci.sh DIR MARKER}"
marker="${2:?usage: npm-ci.sh DIR MARKER}"
die() { echo "npm-ci ($dir): $*" >&2; exit 1; }
[[ -f "$dir/package-lock.json" ]] || die "no package-lock.json"

install_if_needed() {
  if [[ -e "$dir/$marker" && ! "$dir/package-lock.json" -nt "$dir/node_modules" ]]; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || die "npm is not on PATH (run deploy/install-deps.sh)"
  echo "npm-ci: npm ci --ignore-scripts in $dir"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund) || die "npm ci failed"
  # npm ci recreates node_modules; make its mtime explicit so the check above stays stable
  # even if npm reuses the directory.
  touch "$dir/node_modules"
  [[ -e "$dir/$marker" ]] || die "npm ci finished but $marker is missing"
}

if command -v flock >/dev/null 2>&1; then
  exec 9<"$dir/package-lock.json"
  flock 9
fi
install_if_needed
