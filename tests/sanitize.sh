#!/usr/bin/env bash
# The test suites under the sanitizers (.ci/run's sanitizer jobs).
#
# Usage: tests/sanitize.sh address   unit + integration suites under AddressSanitizer +
#                                    UndefinedBehaviorSanitizer (+ LeakSanitizer), build-asan
#                                    (only those two ctest entries: the package test would
#                                    build a whole Release package again, 5 min on 2 cores)
#        tests/sanitize.sh address-unit  the unit suite alone under ASan + UBSan, build-asan (what
#                                    .ci/run runs when its time budget cannot fit the integration suite)
#        tests/sanitize.sh thread    the unit suite under ThreadSanitizer, build-tsan
#        (extra arguments go to ctest, e.g. -R unit)
#
# Every finding is fatal: the code is built with -fno-sanitize-recover=all, and the reports of
# every instrumented process (the test binaries and the couchgate daemons the integration tests
# start) are written to <build dir>/sanitizer/<tool>.<pid>; any such file fails the run, even
# one from a daemon whose exit status no test looked at. Builds are Debug at -O1 (CMakeLists.txt,
# COUCHGATE_SANITIZE), without -Werror: instrumentation changes GCC's flow analysis and brings
# warnings the ordinary builds (.ci/run's -Werror builds) do not have.
# Suppressions: tests/sanitizer/*.supp, for third-party code only, each with the reason.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
mode="${1:-}"
shift || true
case "$mode" in
  address) dir=build-asan; sanitize=address,undefined; targets="unit_tests integration_tests couchgate"
           set -- -R '^(unit|integration)$' "$@" ;;
  address-unit) dir=build-asan; sanitize=address,undefined; targets="unit_tests"; set -- -R '^unit$' "$@" ;;
  thread) dir=build-tsan; sanitize=thread; targets="unit_tests"; set -- -R '^unit$' "$@" ;;
  *) echo "usage: tests/sanitize.sh address|address-unit|thread [ctest args...]" >&2; exit 2 ;;
esac
log() { echo "sanitize($mode): $*" >&2; }

reports="$repo/$dir/sanitizer"
mkdir -p "$dir"
rm -rf "$reports"
mkdir -p "$reports"
supp="$repo/tests/sanitizer"
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:abort_on_error=0"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
export TSAN_OPTIONS="log_path=$reports/tsan:halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp"

status=0
COUCHGATE_WERROR=0 COUCHGATE_BUILD_DIR="$dir" COUCHGATE_BUILD_TYPE=Debug COUCHGATE_SANITIZE="$sanitize" \
  COUCHGATE_BUILD_TARGETS="$targets" COUCHGATE_SKIP_BENCH=1 bash tests/run.sh "$@" || status=$?

shopt -s nullglob
found=("$reports"/*)
if (( ${#found[@]} )); then
  log "${#found[@]} sanitizer report(s):"
  for f in "${found[@]}"; do
    echo "----- $f" >&2
    head -n 80 "$f" >&2
  done
  status=1
fi
(( status == 0 )) && log "passed, no sanitizer reports" || log "FAILED (exit $status)"
exit "$status"
