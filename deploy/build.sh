#!/usr/bin/env bash
# Build couchgate (daemon, tests, benchmark) into ./build.
#
# Usage: deploy/build.sh [install-deps options, e.g. --with-bench]
# Works from any directory; safe to run repeatedly (dependency install is a no-op when
# everything is present, and cmake only rebuilds what changed).
#
# Environment:
#   COUCHGATE_SKIP_DEPS=1       skip the dependency check (e.g. a non-Debian dev machine)
#   COUCHGATE_WERROR=1          treat compiler warnings as errors (CI; off for users and packagers)
#   COUCHGATE_BUILD_DIR=dir     build directory (default: build)
#   COUCHGATE_BUILD_TYPE=type   CMAKE_BUILD_TYPE (default: RelWithDebInfo)
#   COUCHGATE_BUILD_TESTING=OFF build the daemon alone (no tests; configuring fails if anything looks for doctest)
#   COUCHGATE_SANITIZE=list     build with -fsanitize=list (address,undefined or thread; tests/sanitize.sh)
#   COUCHGATE_BUILD_TARGETS="t1 t2"  build only these targets (e.g. unit_tests)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${COUCHGATE_SKIP_DEPS:-}" ]]; then
  bash deploy/install-deps.sh "$@"
fi

dir="${COUCHGATE_BUILD_DIR:-build}"
args=(-S . -B "$dir" -DCMAKE_BUILD_TYPE="${COUCHGATE_BUILD_TYPE:-RelWithDebInfo}"
      -DCOUCHGATE_WERROR="$([[ "${COUCHGATE_WERROR:-}" == 1 ]] && echo ON || echo OFF)"
      -DBUILD_TESTING="${COUCHGATE_BUILD_TESTING:-ON}"
      -DCOUCHGATE_SANITIZE="${COUCHGATE_SANITIZE:-}")
target=()
if [[ -n "${COUCHGATE_BUILD_TARGETS:-}" ]]; then
  # shellcheck disable=SC2206  # a list of target names
  target=(--target ${COUCHGATE_BUILD_TARGETS})
fi
if [[ "${COUCHGATE_BUILD_TESTING:-ON}" == OFF ]]; then
  target=(--target couchgate)
  # The daemon alone must not need any test dependency: fail the configure if it looks for doctest.
  args+=(-DCMAKE_DISABLE_FIND_PACKAGE_doctest=ON)
fi
echo "build: + cmake ${args[*]}" >&2
cmake "${args[@]}"
# Parallel jobs: one per core, and for a sanitizer build no more than memory allows: GCC 12
# compiling the front door's coroutines with ASan + UBSan (gateway/front/forwarder.cpp) peaks
# at about 4 GB (measured 2026-12-01, -O1 -g1), so each job gets 4.5 GB of MemAvailable.
jobs="$(nproc)"
if [[ -n "${COUCHGATE_SANITIZE:-}" ]]; then
  avail_kb="$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)"
  by_memory=$(( avail_kb / (4608 * 1024) ))
  (( by_memory >= 1 )) || by_memory=1
  if (( by_memory < jobs )); then
    echo "build: $((avail_kb / 1024)) MB available: $by_memory parallel job(s) for the sanitizer build (of $jobs cores)" >&2
    jobs=$by_memory
  fi
fi
echo "build: + cmake --build $dir -j$jobs ${target[*]}" >&2
cmake --build "$dir" -j"$jobs" "${target[@]}"
