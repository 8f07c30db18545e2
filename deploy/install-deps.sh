#!/usr/bin/env bash
# Install couchgate's build and test dependencies on Debian 12 (bookworm).
#
# Idempotent: every package is checked with dpkg-query first, and apt-get (including
# `apt-get update`) only runs when something is actually missing, so on a prepared
# machine this is a fast no-op that needs neither root nor network.
#
# Usage: deploy/install-deps.sh [--with-bench] [--no-node]
#   --with-bench  also install gnuplot-nox (plots for the benchmark reports)
#   --no-node     skip what only the tests use: nodejs/npm (the test server), lintian,
#                 prometheus (promtool); the Docker build stage doesn't need them
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

with_bench=0
with_node=1
for arg in "$@"; do
  case "$arg" in
    --with-bench) with_bench=1 ;;
    --no-node) with_node=0 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-deps: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# Everything CMakeLists.txt finds, plus the tools the scripts and tests call
# (git, curl for readiness probes, iproute2/procps for ss/ps/pgrep in tests).
packages=(
  build-essential cmake pkg-config git ca-certificates curl iproute2 procps
  libcurl4-openssl-dev libcpp-httplib-dev libspdlog-dev
  libyaml-cpp-dev doctest-dev nlohmann-json3-dev libcli11-dev libsystemd-dev
  libunistring-dev libsimdjson-dev file dpkg-dev
  libboost-dev libssl-dev openssl
)
# file + dpkg-dev (dpkg-shlibdeps): CPack's .deb, whose Depends the Docker image installs.
# Operations tests (tests/package, tests/integration/test_operations.cpp): lintian for the
# .deb, prometheus for promtool (the only Debian package that ships it: ~19 MB download,
# ~96 MB installed; its server is not wanted, see below). The Docker build stage (--no-node)
# skips them.
if (( with_node )); then
  packages+=(lintian prometheus)
fi
if (( with_bench )); then
  packages+=(gnuplot-nox)
fi
# openssl: the front-door tests generate their certificates with the CLI.
packages+=(openssl)
# The fuzz targets (tests/fuzz.sh, a job of .ci/run): clang with libFuzzer and clang's sanitizer
# runtimes (libclang_rt.fuzzer/asan/ubsan are in libclang-rt-14-dev, which --no-install-recommends
# would not bring). The GCC sanitizer builds (tests/sanitize.sh) need nothing more: gcc-12's
# libasan8, libubsan1 and libtsan2 come with build-essential. Not for the Docker build stage.
if (( with_node )); then
  packages+=(clang libclang-rt-14-dev)
fi
# node/npm run pouchdb-server for the tests. A machine may already have them from
# somewhere other than Debian (nodesource, nvm, a CI image): use whatever is on PATH
# rather than installing Debian's packages next to it, which could conflict.
if (( with_node )); then
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
fi

is_installed() {
  # "install ok installed" is the only state in which the files are really there
  # (half-configured or removed-but-config-kept packages don't count).
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for pkg in "${packages[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done

if (( ${#missing[@]} == 0 )); then
  echo "install-deps: all ${#packages[@]} packages already installed; nothing to do" >&2
  exit 0
fi

# Root (CI, Docker) runs apt directly; everyone else goes through sudo. sudo resets the
# environment, so DEBIAN_FRONTEND is passed explicitly via env.
if [[ "$(id -u)" -eq 0 ]]; then
  as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
  echo "install-deps: need root to install: ${missing[*]} (and sudo is not available)" >&2
  exit 1
fi

echo "install-deps: installing: ${missing[*]}" >&2
echo "install-deps: + apt-get update" >&2
"${as_root[@]}" apt-get update -q
# --no-install-recommends keeps images and CI machines lean; everything needed is listed.
echo "install-deps: + apt-get install -y --no-install-recommends ${missing[*]}" >&2
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

# prometheus came only for promtool: on a machine booted with systemd its postinst enabled and
# started a Prometheus server on :9090. Stop and disable it when this run installed it (a
# prometheus the machine had before is left alone).
if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
  echo "install-deps: prometheus was installed for promtool only; disabling its server" >&2
  "${as_root[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi

# Catch typos / unavailable packages that apt might otherwise not flag.
still_missing=()
for pkg in "${missing[@]}"; do
  is_installed "$pkg" || still_missing+=("$pkg")
done
if (( ${#still_missing[@]} )); then
  echo "install-deps: still not installed after apt-get: ${still_missing[*]}" >&2
  exit 1
fi
echo "install-deps: done" >&2
