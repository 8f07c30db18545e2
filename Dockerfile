# couchgate container image.
#
#   docker build -t couchgate .
#   docker run --rm -p 127.0.0.1:8490:8490 \
#     -e COUCHDB_URL=http://couchdb:5984 -e COUCHDB_USER=admin -e COUCHDB_PASSWORD=... \
#     -e COUCHGATE_ADMIN_TOKEN="$(openssl rand -hex 32)" couchgate
#
# The admin API listens on 0.0.0.0 in the container, so it needs a bearer token: set
# COUCHGATE_ADMIN_TOKEN (at least 16 characters); without it couchgate exits 2 saying so.
# /healthz and /readyz answer without it; everything else needs `Authorization: Bearer <token>`.
#
# Configuration: /etc/couchgate/couchgate.yaml (deploy/couchgate.docker.yaml; mount your own
# file over it) plus the environment: COUCHDB_URL / COUCHDB_USER / COUCHDB_PASSWORD, and
# COUCHGATE_ADMIN_ADDRESS / COUCHGATE_ADMIN_PORT for the admin API. The image's config binds the
# admin API to 0.0.0.0, right inside the container's own network namespace; with
# `--network host` that would be every address of the host, so there set
# COUCHGATE_ADMIN_ADDRESS=127.0.0.1.
#
# Or the whole stack (CouchDB 3.5 + couchgate): see deploy/docker-compose.yml.
#
# BUILD_IMAGE / RUNTIME_IMAGE: Debian 12 images to build on (tests/docker/run.sh passes one
# made with debootstrap when no registry is reachable).
ARG BUILD_IMAGE=debian:12
ARG RUNTIME_IMAGE=debian:12-slim

# ---- build stage ------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build
WORKDIR /src

# Dependencies first, in their own layer, so source edits don't reinstall them. The same
# script as on developer machines and CI; --no-node leaves out what only the tests use.
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN bash deploy/install-deps.sh --no-node && rm -rf /var/lib/apt/lists/*

# .dockerignore keeps .git, build dirs and tests out of the context.
COPY . .
# /build, not /src/build: a build/ dir from the host (CMakeCache for another path) may
# have come in with the context. Only the daemon is built; tests run in CI, not here.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target couchgate \
 && install -D -m 0755 -s /build/couchgate /out/couchgate
# The runtime packages are what dpkg-shlibdeps finds the binary needs (the .deb's Depends, as
# cmake/packaging.cmake builds it), not a hand-kept list that drifts from what is linked.
RUN cd /build && cpack -G DEB -B /build/deb >/dev/null \
 && dpkg-deb -f /build/deb/*.deb Depends | tr ',' '\n' | sed -E 's/\(.*\)//; s/\|.*//; s/[[:space:]]//g' \
    | grep -vx -e adduser -e '' | sort -u >/out/runtime-packages \
 && cat /out/runtime-packages

# ---- runtime stage ----------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

# Shared libraries only (no -dev packages, no compiler); ca-certificates for https CouchDB URLs.
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive xargs -a /tmp/runtime-packages apt-get install -y --no-install-recommends \
      ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/runtime-packages

# A real group with the same id: `USER 10001:10001` then runs with a named gid.
RUN groupadd --system --gid 10001 couchgate \
 && useradd --system --uid 10001 --gid couchgate --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin couchgate

COPY --from=build /out/couchgate /usr/local/bin/couchgate
# The container config: admin API on 0.0.0.0 (inside the container's own network
# namespace; publish the port on 127.0.0.1 on the host) and CouchDB at http://couchdb:5984.
# Credentials come from COUCHDB_USER / COUCHDB_PASSWORD (COUCHDB_URL overrides the URL), the
# admin API's token from COUCHGATE_ADMIN_TOKEN (empty = unset: couchgate refuses to start).
COPY deploy/couchgate.docker.yaml /etc/couchgate/couchgate.yaml

# Fail the image build, not the first start, if a runtime library is missing above.
RUN ! ldd /usr/local/bin/couchgate | grep -F 'not found'

USER 10001:10001
EXPOSE 8490
# `couchgate health` reads the same config and environment as the daemon and asks its admin API
# for /healthz: no curl in the image. (Exit 1 = unhealthy, also for a broken config.)
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["couchgate", "health", "--config", "/etc/couchgate/couchgate.yaml", "--timeout", "5"]
ENTRYPOINT ["couchgate"]
CMD ["run", "--config", "/etc/couchgate/couchgate.yaml"]
