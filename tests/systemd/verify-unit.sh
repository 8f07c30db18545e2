#!/usr/bin/env bash
# `systemd-analyze verify` on deploy/couchgate.service, with ExecStart pointed at the built
# binary (verify checks that it exists and is executable). Any message about the unit (an
# unknown key, a value systemd cannot parse and would ignore) fails the test, since systemd
# itself only warns and starts the service without that setting.
#
# Usage: tests/systemd/verify-unit.sh BINARY
# Exit: 0 clean, 1 problems, 77 skipped (no usable systemd-analyze here; ctest shows SKIPPED).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
binary="$(realpath "${1:?usage: verify-unit.sh BINARY}")"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "verify-unit: SKIPPED: systemd-analyze is not installed (Debian package systemd)" >&2
  exit 77
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A known-bad unit first: if this systemd-analyze cannot run here (no /proc, a sandbox), it
# says nothing about bad units either, and a clean answer for ours would prove nothing.
printf '[Service]\nExecStart=/bin/true\nNoSuchKey=1\n' >"$work/canary.service"
if ! canary="$(systemd-analyze verify --man=no "$work/canary.service" 2>&1)" && [[ -z "$canary" ]]; then
  echo "verify-unit: SKIPPED: systemd-analyze verify cannot run here" >&2
  exit 77
fi
if [[ "$canary" != *NoSuchKey* ]]; then
  echo "verify-unit: SKIPPED: systemd-analyze verify does not report unknown keys here: $canary" >&2
  exit 77
fi

sed "s|/usr/local/bin/couchgate|$binary|g" deploy/couchgate.service >"$work/couchgate.service"
status=0
out="$(systemd-analyze verify --man=no "$work/couchgate.service" 2>&1)" || status=$?
# Messages about other units (the targets it orders after) are not ours.
ours="$(grep -F 'couchgate.service' <<<"$out" || true)"
if (( status != 0 )) || [[ -n "$ours" ]]; then
  echo "verify-unit: FAILED (exit $status):" >&2
  echo "$out" >&2
  exit 1
fi
echo "verify-unit: deploy/couchgate.service: OK ($(systemd-analyze --version | head -n 1))"
