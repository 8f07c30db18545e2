#!/usr/bin/env bash
# The container image, built and run as an operator would (not part of .ci/run: it needs a
# Docker engine, root, and Debian's package mirror).
#
#  1. Docker: Debian's docker.io (installed if missing); dockerd started here if no engine
#     answers (and stopped again at the end).
#  2. A Debian 12 base image from Debian's own packages (debootstrap bookworm, docker import),
#     since no image registry is reachable; cached as couchgate-base:bookworm.
#  3. docker build of the Dockerfile on it (--network host), image size reported.
#  4. The image: runs as 10001:10001 with a named group, holds no compiler, no -dev package and
#     no curl; `couchgate --version` runs.
#  5. The container against the test server on the host (--network host; the admin API moved to
#     a free loopback port by COUCHGATE_ADMIN_ADDRESS/_PORT, config mounted read-only): it
#     becomes healthy through its HEALTHCHECK (`couchgate health`), provisions a user, whose
#     documents arrive in the central database; docker kill; more documents and a second user
#     while it is down; docker start; everything arrives, nothing is lost.
#  6. deploy/docker-compose.yml checked with `config` by every Compose found (docker-compose
#     1.29 from Debian, the v2 plugin if present).
#  7. The .deb made in the build stage, installed with apt in a fresh Debian 12 container: its
#     maintainer scripts create the user, enable (not start) the unit, and purge cleanly.
#
# Usage: tests/docker/run.sh            (as root, on Debian 12)
# Server: COUCHDB_URL/COUCHDB_USER/COUCHDB_PASSWORD if set (must be reachable from the host
#   network, i.e. from this machine), else a pouchdb-server started by tests/server.
# Exit: 0 passed, 1 failed, 3 no Docker engine can run on this machine (the reason printed),
#   4 a prerequisite could not be installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$(pwd)"

log() { echo "docker-test: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

base_image="couchgate-base:bookworm"
image="couchgate:test"
work="$(mktemp -d /tmp/couchgate-docker-XXXXXX)"
chmod 0755 "$work"  # the container's user 10001 reads the mounted config from here
container="couchgate-test-$$"
started_dockerd_pid=""
server_pid=""
server_dir=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$started_dockerd_pid" ]] || docker info >/dev/null 2>&1; then
    docker rm -f "$container" >/dev/null 2>&1 || true
  fi
  if [[ -n "$server_pid" ]]; then bash tests/server/stop-server.sh "$server_pid" "$server_dir" || true; fi
  if [[ -n "$started_dockerd_pid" ]]; then
    log "stopping the dockerd this script started (pid $started_dockerd_pid)"
    kill "$started_dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$started_dockerd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls a command every 0.5 s until it succeeds or `seconds` pass.
eventually() {
  local seconds="$1"; shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 0.5
  done
}

# ---- 1. Docker engine -------------------------------------------------------------------
need_packages=()
command -v dockerd >/dev/null 2>&1 || need_packages+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_packages+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || need_packages+=(docker-compose)  # Compose 1.29, to check the compose file
if (( ${#need_packages[@]} )); then
  [[ "$(id -u)" -eq 0 ]] || { log "needs root to install ${need_packages[*]}"; exit 4; }
  log "+ apt-get install ${need_packages[*]}"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_packages[@]}"; } >&2 \
    || { log "cannot install ${need_packages[*]}"; exit 4; }
fi
if ! docker info >/dev/null 2>&1; then
  log "no Docker engine answers; starting dockerd"
  dockerd >"$work/dockerd.log" 2>&1 &
  started_dockerd_pid=$!
  if ! eventually 60 docker info >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    log "dockerd cannot run on this machine; its log:"
    tail -n 30 "$work/dockerd.log" >&2
    exit 3
  fi
fi
log "Docker engine $(docker version --format '{{.Server.Version}}')"

# ---- 2. base image from Debian's packages ---------------------------------------------
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  log "+ debootstrap --variant=minbase bookworm ($mirror) → docker import $base_image"
  # minbase lacks passwd (useradd) and ca-certificates, which the Dockerfile needs.
  debootstrap --variant=minbase --include=passwd,ca-certificates bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/cache/apt/*.bin "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | docker import - "$base_image" >/dev/null
  rm -rf "$work/rootfs"
fi

# ---- 3. build ---------------------------------------------------------------------------
log "+ docker build --network host -t $image (on $base_image)"
build_start=$SECONDS
docker build --network host --build-arg BUILD_IMAGE="$base_image" --build-arg RUNTIME_IMAGE="$base_image" \
  -t "$image" . >"$work/build.log" 2>&1 || { tail -n 60 "$work/build.log" >&2; fail "docker build failed"; }
size_bytes="$(docker image inspect --format '{{.Size}}' "$image")"
log "built $image in $((SECONDS - build_start)) s: $((size_bytes / 1024 / 1024)) MiB"
log "build context: $(grep -Eo '(Sending build context to Docker daemon|transferring context:) +[0-9.]+ ?[kMG]?B' "$work/build.log" | tail -n 1 || echo unknown)"

# ---- 4. what is in the image ---------------------------------------------------------
[[ "$(docker image inspect --format '{{.Config.User}}' "$image")" == "10001:10001" ]] || fail "image user is not 10001:10001"
ids="$(docker run --rm --network none --entrypoint id "$image")"
[[ "$ids" == "uid=10001(couchgate) gid=10001(couchgate) groups=10001(couchgate)" ]] || fail "id in the image: $ids"
leftovers="$(docker run --rm --network none --entrypoint sh "$image" -c \
  'dpkg-query -W -f="\${Package}\n" | grep -E -- "-dev$|^(gcc|g\+\+|cpp|cmake|make|curl|wget)(-[0-9.]+)?$" || true
   ls -d /src /build /var/cache/apt/*.bin /var/lib/apt/lists/*_Packages 2>/dev/null || true')"
[[ -z "$leftovers" ]] || fail "the runtime image holds build tools, sources or apt caches: $leftovers"
base_bytes="$(docker image inspect --format '{{.Size}}' "$base_image")"
log "image $((size_bytes / 1024 / 1024)) MiB = base $((base_bytes / 1024 / 1024)) MiB + $(((size_bytes - base_bytes) / 1024 / 1024)) MiB (runtime libraries, binary, config)"
docker run --rm --network none "$image" --version | grep -q '^couchgate ' || fail "couchgate --version"
[[ "$(docker image inspect --format '{{json .Config.Healthcheck.Test}}' "$image")" == *'"health"'* ]] \
  || fail "no HEALTHCHECK through couchgate health"

# ---- 5. running against the test server ---------------------------------------------
if [[ -z "${COUCHDB_URL:-}" ]]; then
  server_env="$(bash tests/server/start-server.sh)"
  eval "$server_env"
  server_pid="$COUCHGATE_SERVER_PID"
  server_dir="$COUCHGATE_SERVER_DIR"
fi
auth=(-u "$COUCHDB_USER:$COUCHDB_PASSWORD")
couch() { curl -sS --max-time 30 "${auth[@]}" -H 'Content-Type: application/json' "$@"; }
couch_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 30 "${auth[@]}" -H 'Content-Type: application/json' "$@"; }

stamp="$(date +%s)$$"
prefix="u${stamp}-"
central="c${stamp}-central"
role="r${stamp}"
admin_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || echo $((20000 + RANDOM % 20000)))"
# The admin API's bearer token, as an operator passes it (required when it binds beyond loopback).
admin_token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
cat >"$work/couchgate.yaml" <<YAML
# tests/docker/run.sh: names unique to this run; the URL and credentials come from the environment.
state_db: s${stamp}-state
provisioning:
  db_prefix: "${prefix}"
  select:
    roles_any: ["${role}"]
fanin:
  central_db: ${central}
  sweep_interval: 200ms
admin_api:
  address: 0.0.0.0
  port: 8490
YAML
chmod 0644 "$work/couchgate.yaml"

run_container() {
  # --network host: the container reaches the host's loopback test server; the admin API is
  # moved off 0.0.0.0:8490 by the environment, which is what an operator does there.
  docker run -d --name "$container" --network host \
    --health-interval 1s --health-timeout 5s --health-start-period 60s \
    -v "$work/couchgate.yaml:/etc/couchgate/couchgate.yaml:ro" \
    -e COUCHDB_URL="$COUCHDB_URL" -e COUCHDB_USER="$COUCHDB_USER" -e COUCHDB_PASSWORD="$COUCHDB_PASSWORD" \
    -e COUCHGATE_ADMIN_ADDRESS=127.0.0.1 -e COUCHGATE_ADMIN_PORT="$admin_port" -e COUCHGATE_ADMIN_TOKEN="$admin_token" \
    "$image" >/dev/null
}
healthy() {
  if [[ "$(docker inspect --format '{{.State.Status}}' "$container" 2>/dev/null)" == exited ]]; then
    docker logs "$container" 2>&1 | tail -n 40 >&2
    fail "the container exited: $(docker inspect --format 'exit code {{.State.ExitCode}}' "$container")"
  fi
  [[ "$(docker inspect --format '{{.State.Health.Status}}' "$container" 2>/dev/null)" == healthy ]]
}
ready() { [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin_port/readyz")" == 200 ]]; }

userdb() { printf '%s%s' "$prefix" "$(printf '%s' "$1" | od -An -tx1 | tr -d ' \n')"; }
add_user() {
  local code
  code="$(couch_status -X PUT "$COUCHDB_URL/_users/org.couchdb.user:$1" \
    -d "{\"name\":\"$1\",\"password\":\"pw-$1\",\"roles\":[\"$role\"],\"type\":\"user\"}")"
  [[ "$code" == 201 ]] || fail "creating user $1: HTTP $code"
}
db_exists() { [[ "$(couch_status "$COUCHDB_URL/$1")" == 200 ]]; }
write_docs() {  # db first last
  local db="$1" i docs=""
  for ((i = $2; i <= $3; i++)); do docs+="${docs:+,}{\"_id\":\"doc-$i\",\"n\":$i}"; done
  couch -X POST "$COUCHDB_URL/$db/_bulk_docs" -d "{\"docs\":[$docs]}" | grep -q '"ok":true' || fail "writing docs into $db"
}
central_count() {
  couch "$COUCHDB_URL/$central/_all_docs?limit=0" | sed -n 's/.*"total_rows":\([0-9]*\).*/\1/p'
}
central_has() { [[ "$(central_count)" == "$1" ]]; }

log "+ docker run --network host $image (admin API 127.0.0.1:$admin_port, server $COUCHDB_URL)"
run_container
eventually 120 healthy || { docker logs "$container" 2>&1 | tail -n 40 >&2; fail "the container never became healthy"; }
eventually 60 ready || { docker logs "$container" 2>&1 | tail -n 40 >&2; fail "the daemon never became ready"; }
log "healthy (HEALTHCHECK: $(docker inspect --format '{{(index .State.Health.Log 0).Output}}' "$container" | tr -d '\n'))"
if ss -ltn 2>/dev/null | grep -q '0.0.0.0:8490 '; then fail "the admin API still listens on 0.0.0.0:8490"; fi

alice="alice-$stamp"
add_user "$alice"
eventually 60 db_exists "$(userdb "$alice")" || { docker logs "$container" 2>&1 | tail -n 40 >&2; fail "no database for $alice"; }
write_docs "$(userdb "$alice")" 1 20
eventually 60 central_has 20 || { docker logs "$container" 2>&1 | tail -n 40 >&2; fail "central has $(central_count) docs, expected 20"; }
log "20 documents of $alice arrived in $central"

log "+ docker kill; writes and a new user while the container is down; docker start"
docker kill "$container" >/dev/null
write_docs "$(userdb "$alice")" 21 40
bob="bob-$stamp"
add_user "$bob"
docker start "$container" >/dev/null
eventually 60 db_exists "$(userdb "$bob")" || { docker logs "$container" 2>&1 | tail -n 40 >&2; fail "no database for $bob after the restart"; }
write_docs "$(userdb "$bob")" 1 10
eventually 90 central_has 50 || { docker logs "$container" 2>&1 | tail -n 40 >&2; fail "central has $(central_count) docs after the restart, expected 50"; }
eventually 60 healthy || fail "not healthy after the restart"
log "after kill + start: all 50 documents in $central, nothing lost"
if docker logs "$container" 2>&1 | grep -qF -e "$COUCHDB_PASSWORD" -e "$admin_token"; then fail "the container's log shows a secret"; fi

# ---- 6. compose file ------------------------------------------------------------------
composes=0
if command -v docker-compose >/dev/null 2>&1; then
  COUCHGATE_ADMIN_TOKEN="$admin_token" docker-compose -f deploy/docker-compose.yml config -q || fail "docker-compose $(docker-compose version --short) rejects deploy/docker-compose.yml"
  log "docker-compose $(docker-compose version --short): deploy/docker-compose.yml OK"
  composes=$((composes + 1))
fi
if docker compose version >/dev/null 2>&1; then
  COUCHGATE_ADMIN_TOKEN="$admin_token" docker compose -f deploy/docker-compose.yml config -q || fail "docker compose (v2) rejects deploy/docker-compose.yml"
  log "$(docker compose version): deploy/docker-compose.yml OK"
  composes=$((composes + 1))
fi
(( composes > 0 )) || log "note: no Compose found (Debian: apt-get install docker-compose); compose file not checked"

# ---- 7. the .deb's maintainer scripts, for real (dpkg in a Debian 12 container) ---------
# The build stage made the .deb (its Depends chose the runtime packages); install it with apt
# in a fresh container: the system user and group exist, the unit is enabled (the symlink
# deb-systemd-helper makes) but nothing started it, the config is root:couchgate 0640, and
# remove + purge run cleanly.
docker build --network host --build-arg BUILD_IMAGE="$base_image" --target build -t "$image-build" . >"$work/build-stage.log" 2>&1 \
  || { tail -n 30 "$work/build-stage.log" >&2; fail "docker build --target build"; }
docker run --rm --network none --entrypoint sh "$image-build" -c 'cat /build/deb/*.deb' >"$work/couchgate.deb"
chmod 0644 "$work/couchgate.deb"
deb_check='set -e
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /pkg/couchgate.deb >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
getent passwd couchgate | grep -q ":/nonexistent:/usr/sbin/nologin$"
getent group couchgate >/dev/null
test -L /etc/systemd/system/multi-user.target.wants/couchgate.service
test "$(stat -c %U:%G:%a /etc/couchgate/couchgate.yaml)" = root:couchgate:640
! grep -qx couchgate /proc/[0-9]*/comm 2>/dev/null
couchgate --version
su -s /bin/sh couchgate -c "couchgate check-config /etc/couchgate/couchgate.yaml"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q couchgate >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; exit 1; }
test ! -e /etc/systemd/system/multi-user.target.wants/couchgate.service
test ! -e /usr/bin/couchgate'
out="$(docker run --rm --network host -v "$work/couchgate.deb:/pkg/couchgate.deb:ro" --entrypoint sh "$base_image" -c "$deb_check" 2>&1)" \
  || fail "installing the .deb in a Debian 12 container: $out"
log ".deb installed with apt in a Debian 12 container: user couchgate, unit enabled not started, config root:couchgate 0640, purge clean"

log "PASSED: image $image $((size_bytes / 1024 / 1024)) MiB ($size_bytes bytes)"
