#!/usr/bin/env bash
# The Debian package, as an operator gets it: CPack builds the .deb from a configured and built
# tree, then this checks its control data (runtime dependencies found by dpkg-shlibdeps, the
# conffile, maintainer scripts that create the user and enable but do not start the unit), its
# file list, runs lintian (no errors allowed), unpacks it into a scratch root and runs the
# binary from there: `couchgate --version` and `couchgate check-config` on the shipped config.
#
# Usage: tests/package/run.sh [BUILD_DIR]    (default: build; ctest passes its own)
# Also checks `cmake --install --prefix /usr` into a DESTDIR (the unit names the prefix's binary).
# Needs: cpack, dpkg-deb, dpkg-shlibdeps (dpkg-dev), lintian (deploy/install-deps.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build="$(realpath "${1:-build}")"

log() { echo "package-test: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

for tool in cpack dpkg-deb dpkg-shlibdeps lintian; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (deploy/install-deps.sh installs it)"
done
[[ -f "$build/CPackConfig.cmake" ]] || fail "$build is not a configured build dir (no CPackConfig.cmake)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "+ cpack -G DEB --config $build/CPackConfig.cmake -B $work/out"
(cd "$build" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out") >"$work/cpack.log" 2>&1 \
  || { cat "$work/cpack.log" >&2; fail "cpack failed"; }
debs=("$work"/out/*.deb)
(( ${#debs[@]} == 1 )) && [[ -f "${debs[0]}" ]] || fail "expected one .deb, got: ${debs[*]}"
deb="${debs[0]}"
version="$(sed -n 's/^project(couchgate VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"
log "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

# ---- cmake --install (what the .deb is made from), into a DESTDIR
DESTDIR="$work/destdir" cmake --install "$build" --prefix /usr >"$work/install.log" 2>&1 \
  || { cat "$work/install.log" >&2; fail "cmake --install failed"; }
for f in usr/bin/couchgate lib/systemd/system/couchgate.service etc/couchgate/couchgate.yaml usr/share/man/man8/couchgate.8.gz; do
  [[ -f "$work/destdir/$f" ]] || fail "cmake --install did not install /$f"
done
grep -qx "ExecStart=/usr/bin/couchgate run --config /etc/couchgate/couchgate.yaml" "$work/destdir/lib/systemd/system/couchgate.service" \
  || fail "cmake --install --prefix /usr: the unit does not start /usr/bin/couchgate"

# ---- control data
control="$(dpkg-deb -f "$deb")"
depends="$(dpkg-deb -f "$deb" Depends)"
log "Depends: $depends"
[[ "$(dpkg-deb -f "$deb" Version)" == "$version-1" ]] || fail "Version is not $version-1:"$'\n'"$control"
# What the binary links (from ldd of the built binary) must each be a dependency: dpkg-shlibdeps
# found them. libcurl and yaml-cpp are linked by every build; libsystemd when it was found.
dep_names="$(tr ',' '\n' <<<"$depends" | sed -E 's/\(.*\)//; s/[[:space:]]//g')"
expected=(libcurl4 libyaml-cpp0.7 libstdc++6 libc6 adduser)
if ldd "$build/couchgate" | grep -q libsystemd; then expected+=(libsystemd0); fi
for dep in "${expected[@]}"; do
  grep -qFx "$dep" <<<"$dep_names" || fail "Depends lacks $dep: $depends"
done
# Runtime libraries only: no -dev package, no compiler.
! grep -E -- '-dev$|^(gcc|g\+\+|cpp)(-[0-9]+)?$' <<<"$dep_names" || fail "Depends names build-time packages: $depends"
dpkg-deb -e "$deb" "$work/control"
grep -qx '/etc/couchgate/couchgate.yaml' "$work/control/conffiles" || fail "couchgate.yaml is not a conffile"
for script in postinst prerm postrm; do
  [[ -x "$work/control/$script" ]] || fail "$script missing or not executable"
  sh -n "$work/control/$script" || fail "$script: sh syntax error"
done
grep -q 'adduser --system' "$work/control/postinst" || fail "postinst does not create the system user"
grep -q "deb-systemd-helper enable 'couchgate.service'" "$work/control/postinst" || fail "postinst does not enable the unit"
# Enabled, not started: nothing starts it on a first install (try-restart only acts on a
# running service, during upgrades).
if grep -Eq "(systemctl|deb-systemd-invoke|invoke-rc.d)[^#]*[[:space:]](start|restart|enable --now)([[:space:]]|'|$)" "$work/control/postinst"; then
  fail "postinst starts the service"
fi

# ---- files
dpkg-deb -c "$deb" | awk '{print $NF}' >"$work/files"
for f in ./usr/bin/couchgate ./lib/systemd/system/couchgate.service ./etc/couchgate/couchgate.yaml \
         ./usr/share/man/man8/couchgate.8.gz ./usr/share/doc/couchgate/copyright ./usr/share/doc/couchgate/changelog.Debian.gz \
         ./usr/share/couchgate/prometheus-alerts.yml ./usr/share/couchgate/grafana-dashboard.json; do
  grep -qx "$f" "$work/files" || fail "the package lacks $f; it has:"$'\n'"$(cat "$work/files")"
done

# ---- lintian: errors fail; warnings and info are shown
lintian_status=0
lintian --fail-on error --display-info "$deb" >"$work/lintian.txt" 2>&1 || lintian_status=$?
if [[ -s "$work/lintian.txt" ]]; then
  log "lintian says:"
  cat "$work/lintian.txt" >&2
fi
(( lintian_status == 0 )) || fail "lintian found errors (exit $lintian_status)"
! grep -q '^E: ' "$work/lintian.txt" || fail "lintian found errors"

# ---- unpacked into a scratch root, run from there
dpkg -x "$deb" "$work/root"
root="$work/root"
grep -qx "ExecStart=/usr/bin/couchgate run --config /etc/couchgate/couchgate.yaml" \
  "$root/lib/systemd/system/couchgate.service" || fail "the packaged unit does not start /usr/bin/couchgate"
got="$("$root/usr/bin/couchgate" --version)"
[[ "$got" == "couchgate $version" ]] || fail "couchgate --version said '$got', expected 'couchgate $version'"
out="$(env -u COUCHDB_URL -u COUCHDB_USER -u COUCHDB_PASSWORD "$root/usr/bin/couchgate" check-config "$root/etc/couchgate/couchgate.yaml" 2>&1)" \
  || fail "check-config of the packaged config failed: $out"
[[ "$out" == *": OK" ]] || fail "check-config said: $out"
man -l "$root/usr/share/man/man8/couchgate.8.gz" >/dev/null 2>&1 || log "note: man could not render the page (man-db not installed?)"
log "OK: $(basename "$deb"): --version '$got', check-config OK, lintian without errors"
