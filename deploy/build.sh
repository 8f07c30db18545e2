#!/usr/bin/env bash
# Build couchgate (daemon, tests, benchmark) into ./build.
#
# Usage: deploy/build.sh [install-deps options, e.g. --with-bench]
# Works from any directory; safe to run repeatedly (dependency install is a no-op when
# everything is present, and cmake only rebuilds what changed).
# COUCHGATE_SKIP_DEPS=1 skips the dependency check (e.g. a non-Debian dev machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${COUCHGATE_SKIP_DEPS:-}" ]]; then
  bash deploy/install-deps.sh "$@"
fi

echo "build: + cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "build: + cmake --build build -j$(nproc)" >&2
cmake --build build -j"$(nproc)"
