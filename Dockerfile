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
# Or the whole stack (CouchDB 3.5 + couchgate): docker compose -f deploy/docker-compose.yml up
#
# Tip: a .dockerignore with build/, tests/server/node_modules/ and tests/server/.run-*/
# keeps the build context small (the build below uses its own build dir, so a host build/
# copied in does no harm, it only costs time).

# ---- build stage ------------------------------------------------------------------------
FROM debian:12 AS build
WORKDIR /src

# Dependencies first, in their own layer, so source edits don't reinstall them. The same
# script as on developer machines and CI; node/npm only run the test server, so not here.
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN bash deploy/install-deps.sh --no-node && rm -rf /var/lib/apt/lists/*

COPY . .
# /build, not /src/build: a build/ dir from the host (CMakeCache for another path) may
# have come in with the context. Only the daemon is built; tests run in CI, not here.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target couchgate \
 && install -D -m 0755 -s /build/couchgate /out/couchgate

# ---- runtime stage ----------------------------------------------------------------------
FROM debian:12-slim

# Shared libraries the binary links against (the -dev packages' runtime halves; header-only
# deps such as nlohmann-json and CLI11 need nothing). ca-certificates for https CouchDB URLs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcurl4 libcpp-httplib0.11 libspdlog1.10 libyaml-cpp0.7 libsystemd0 libsimdjson14 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --system --user-group --uid 10001 --home-dir /nonexistent --no-create-home \
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
# No HEALTHCHECK: the slim image has no HTTP client; let the orchestrator probe the admin
# API on :8490 instead.
ENTRYPOINT ["couchgate"]
CMD ["run", "--config", "/etc/couchgate/couchgate.yaml"]
