#!/usr/bin/env bash
# Install the front-door client tests' npm dependencies (PouchDB 9, pure JS) from
# package-lock.json, when node_modules is missing or older than the lock file.
#
# Usage: tests/clients/install.sh      (test_front_sync.cpp runs it before any client script)
# Exit:  0 when node_modules is ready; 1 otherwise (npm's output on stderr).
#
# The install itself (locked, serialised, only when needed) is tests/support/npm-ci.sh's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

command -v node >/dev/null 2>&1 || { echo "clients/install: node is not on PATH (run deploy/install-deps.sh)" >&2; exit 1; }
exec "$here/../support/npm-ci.sh" "$here" node_modules/pouchdb-core/package.json
