#pragma once
// Owns: the Prometheus families that describe the connection pool to CouchDB and couchgate's
// session with it (sockets, requests, outages, pacing, the held credential, logins), read from
// http_pool::stats() and session_auth::stats() when /metrics is scraped.
#include "replicator/metrics.hpp"
#include "replicator/transport/http_pool.hpp"
#include "replicator/transport/session_auth.hpp"

namespace couchgate::replicator {

// Registers the families once; `pool` and `auth` must outlive every later registry::render().
void register_transport_metrics(registry& metrics, const http_pool& pool, const session_auth& auth);

}  // namespace couchgate::replicator
