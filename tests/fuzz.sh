#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang and runs each for a bounded time
# (.ci/run's fuzz job).
#
# Usage: tests/fuzz.sh [target...]     default: every target
# Environment:
#   COUCHGATE_FUZZ_SECONDS=20   run time per target
#   COUCHGATE_SKIP_DEPS=1       skip deploy/install-deps.sh (it installs clang and libclang-rt-14-dev)
#
# Each target starts from its seed corpus, tests/fuzz/corpus/<target>/, which is only read: new
# inputs go to build-fuzz/corpus/<target>/. A crash, leak, UB or timeout stops the target and
# fails the run; the input is saved as build-fuzz/artifacts/<target>-crash-<sha1>. After fixing
# the bug, copy that file into tests/fuzz/corpus/<target>/: the unit suite replays every corpus
# file through the same code (tests/unit/test_fuzz_corpus.cpp), so it stays a regression test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { echo "fuzz: $*" >&2; }

if [[ -z "${COUCHGATE_SKIP_DEPS:-}" ]]; then
  bash deploy/install-deps.sh
fi
seconds="${COUCHGATE_FUZZ_SECONDS:-20}"
dir=build-fuzz
all=(changes db_updates bulk_get revs_diff route config front_request error_answer)
targets=("$@")
(( ${#targets[@]} )) || targets=("${all[@]}")

cxx="$(command -v clang++ || command -v clang++-14 || true)"
[[ -n "$cxx" ]] || { log "clang++ not found (deploy/install-deps.sh installs clang)"; exit 1; }
log "+ cmake (clang: $cxx, -fsanitize=fuzzer-no-link,address,undefined) in $dir"
cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
  -DCOUCHGATE_FUZZ=ON -DCOUCHGATE_SANITIZE=fuzzer-no-link,address,undefined >/dev/null
log "+ cmake --build $dir --target fuzz_all -j$(nproc)"
cmake --build "$dir" --target fuzz_all -j"$(nproc)"

export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
mkdir -p "$dir/artifacts"
status=0
for t in "${targets[@]}"; do
  seeds="tests/fuzz/corpus/$t"
  work="$dir/corpus/$t"
  [[ -d "$seeds" ]] || { log "no seed corpus $seeds"; status=1; continue; }
  mkdir -p "$work"
  log "$t: ${seconds}s from $(find "$seeds" -type f | wc -l) seeds"
  if "$dir/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$dir/artifacts/$t-" "$work" "$seeds" \
       >"$dir/fuzz-$t.log" 2>&1; then
    log "$t: $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$dir/fuzz-$t.log" | grep -Eo '[0-9]+$' || echo '?') runs, no finding"
  else
    status=1
    log "$t: FAILED; the end of its log ($dir/fuzz-$t.log):"
    tail -n 60 "$dir/fuzz-$t.log" >&2
    ls -1 "$dir/artifacts/$t-"* 2>/dev/null | sed 's/^/fuzz:   input: /' >&2 || true
  fi
done
exit "$status"
