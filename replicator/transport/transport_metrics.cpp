// Owns: the pool's and the session's /metrics families (see transport_metrics.hpp).
#include "replicator/transport/transport_metrics.hpp"

#include <chrono>

namespace couchgate::replicator {

namespace {

double seconds(std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000.0; }

}  // namespace

void register_transport_metrics(registry& metrics, const http_pool& pool, const session_auth& auth) {
  struct pool_family {
    const char* name;
    const char* help;
    bool counter;
    double (*read)(const http_pool_stats&);
  };
  static constexpr pool_family families[] = {
      {"couchgate_couchdb_connections", "Open connections to CouchDB", false,
       [](const http_pool_stats& s) { return static_cast<double>(s.open_sockets); }},
      {"couchgate_couchdb_connections_peak", "Most connections to CouchDB open at once", false,
       [](const http_pool_stats& s) { return static_cast<double>(s.peak_sockets); }},
      {"couchgate_couchdb_requests_total", "HTTP requests sent to CouchDB", true,
       [](const http_pool_stats& s) { return static_cast<double>(s.requests); }},
      {"couchgate_couchdb_transport_errors_total", "Requests that failed below HTTP", true,
       [](const http_pool_stats& s) { return static_cast<double>(s.transport_errors); }},
      {"couchgate_couchdb_outages_total", "Times CouchDB stopped answering (each logged once)", true,
       [](const http_pool_stats& s) { return static_cast<double>(s.outages); }},
      {"couchgate_couchdb_unreachable", "1 while CouchDB does not answer", false,
       [](const http_pool_stats& s) { return s.unreachable ? 1.0 : 0.0; }},
      {"couchgate_couchdb_overloaded_total", "Answers saying CouchDB is overloaded (429, 503)", true,
       [](const http_pool_stats& s) { return static_cast<double>(s.overloaded); }},
      {"couchgate_couchdb_pace_seconds", "Current minimum interval between requests to CouchDB (0 = not slowed)", false,
       [](const http_pool_stats& s) { return seconds(s.pace); }},
      {"couchgate_couchdb_overload_delay_seconds", "Time until the next request may start (Retry-After)", false,
       [](const http_pool_stats& s) { return seconds(s.delay); }},
      {"couchgate_couchdb_queued_requests", "Requests waiting for the pace or the credential probe", false,
       [](const http_pool_stats& s) { return static_cast<double>(s.queued); }},
      {"couchgate_couchdb_auth_rejections_total", "Answers refusing couchgate's credential (401, account locked)", true,
       [](const http_pool_stats& s) { return static_cast<double>(s.auth_rejections); }},
      {"couchgate_couchdb_credential_held", "1 while nothing is sent because CouchDB refused the credential", false,
       [](const http_pool_stats& s) { return s.credential_held ? 1.0 : 0.0; }},
      {"couchgate_couchdb_requests_refused_total", "Requests failed without being sent while the credential was held",
       true, [](const http_pool_stats& s) { return static_cast<double>(s.credential_refused); }},
  };
  for (const auto& f : families) {
    auto fn = [&pool, read = f.read] { return read(pool.stats()); };
    if (f.counter) {
      metrics.add_counter_callback(f.name, f.help, fn);
    } else {
      metrics.add_callback(f.name, f.help, fn);
    }
  }
  metrics.add_callback("couchgate_couchdb_connections_max", "Configured connection cap",
                       [&pool] { return static_cast<double>(pool.max_connections()); });
  metrics.add_counter_callback("couchgate_couchdb_logins_total", "POST /_session sent (cookie authentication)",
                               [&auth] { return static_cast<double>(auth.stats().logins); });
  metrics.add_counter_callback("couchgate_couchdb_session_retries_total",
                               "Requests sent again after a 401 and a new login",
                               [&auth] { return static_cast<double>(auth.stats().retried); });
}

}  // namespace couchgate::replicator
