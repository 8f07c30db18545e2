// Owns: the front door's metrics (see front_metrics.hpp).
#include "gateway/front/front_metrics.hpp"

#include <cstdio>
#include <cstdlib>

namespace couchgate::gateway::front {
namespace {
constexpr std::array<std::string_view, 7> routes{"me", "shared", "root", "session", "uuids", "preflight", "other"};
constexpr std::array<unsigned, 27> statuses{100, 200, 201, 202, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405,
                                            406, 409, 412, 413, 415, 416, 417, 429, 431, 500, 502, 503, 504};
constexpr std::string_view request_metric = "couchgate_front_requests_total";
constexpr std::string_view latency_metric = "couchgate_front_request_duration_seconds";

}  // namespace

front_metrics::front_metrics(replicator::registry& r)
    : session_cache_hits(r.add_counter("couchgate_front_session_cache_hits_total",
                                       "Front door requests whose user came from the _session cache")),
      session_cache_misses(r.add_counter("couchgate_front_session_cache_misses_total",
                                         "Front door requests that asked CouchDB's GET /_session who the caller is")),
      route_cache_hits(r.add_counter("couchgate_front_route_cache_hits_total",
                                     "Live _changes feeds whose user came from the route memo (front.route_cache_ttl) "
                                     "after the _session cache had expired")),
      tls_refusals(r.add_counter("couchgate_front_tls_refusals_total",
                                 "Requests refused with 403 because they did not arrive over TLS")),
      rate_limited(r.add_counter("couchgate_front_rate_limited_total",
                                 "Requests refused with 429 after too many failed authentications from the address")),
      user_limited(r.add_counter("couchgate_front_user_limited_total",
                                 "Requests refused because the user had too many requests in flight and queued "
                                 "(429), or waited in the user's queue past front.user_queue_timeout (503)")),
      upstream_busy(r.add_counter("couchgate_front_upstream_busy_total",
                                  "Requests answered 503 because no upstream connection freed up in time")),
      auth_failures(r.add_counter("couchgate_front_auth_failures_total", "Credentials CouchDB did not accept")),
      feed_rechecks(r.add_counter("couchgate_front_feed_rechecks_total",
                                  "Credential re-checks (GET /_session) of parked live _changes feeds, asked as "
                                  "background work (one per credential at a time)")),
      upstream_wait(r.add_histogram("couchgate_front_upstream_wait_seconds",
                                    "Time front-door requests (not background re-checks) waited for a connection "
                                    "of the upstream pool")),
      feed_wake(r.add_histogram("couchgate_front_feed_wake_seconds",
                                "Time from a change announced to a parked live feed (_db_updates or the sweep) "
                                "to the feed's answer written to its client")),
      feed_turn_wait(r.add_histogram("couchgate_front_feed_turn_wait_seconds",
                                     "Time a woken live feed waited for a turn to read from CouchDB (at most twice "
                                     "front.upstream.max_connections feeds read at once)")),
      feed_read(r.add_histogram("couchgate_front_feed_read_seconds",
                                "Time a woken live feed's _changes read took: waiting for a pool connection, then "
                                "CouchDB's whole answer")) {
  for (const auto route : routes) {
    std::vector<replicator::counter*> row;
    for (const unsigned s : statuses) {
      row.push_back(&r.add_counter(std::string(request_metric), "Front door requests by route and status",
                                   "route=\"" + std::string(route) + "\",status=\"" + std::to_string(s) + "\""));
    }
    row.push_back(&r.add_counter(std::string(request_metric), "Front door requests by route and status",
                                 "route=\"" + std::string(route) + "\",status=\"other\""));
    requests_.push_back(std::move(row));
  }
}

std::size_t front_metrics::route_index(std::string_view route) {
  for (std::size_t i = 0; i < routes.size(); ++i) {
    if (routes[i] == route) return i;
  }
  return 6;  // other
}

std::size_t front_metrics::status_index(unsigned status) {
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    if (statuses[i] == status) return i;
  }
  return statuses.size();
}

void front_metrics::request(std::string_view route, unsigned status, double seconds) {
  const std::size_t r = route_index(route);
  requests_[r][status_index(status)]->inc();
  const std::size_t cls = status >= 100 && status < 600 ? status / 100 - 1 : 4;
  auto& h = latency_[r][cls];
  std::size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i]) ++i;
  h.buckets[i].fetch_add(1, std::memory_order_relaxed);
  h.count.fetch_add(1, std::memory_order_relaxed);
  double cur = h.sum.load(std::memory_order_relaxed);
  while (!h.sum.compare_exchange_weak(cur, cur + seconds, std::memory_order_relaxed)) {
  }
}

std::string front_metrics::render() const {
  const std::string name(latency_metric);
  std::string out = "# HELP " + name + " Front door request latency (header received to last byte sent) by route and status class\n";
  out += "# TYPE " + name + " histogram\n";
  for (std::size_t r = 0; r < routes.size(); ++r) {
    for (std::size_t c = 0; c < 5; ++c) {
      const auto& h = latency_[r][c];
      const std::uint64_t count = h.count.load(std::memory_order_relaxed);
      if (count == 0) continue;
      const std::string labels = "route=\"" + std::string(routes[r]) + "\",status=\"" + std::to_string(c + 1) + "xx\"";
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < h.buckets.size(); ++i) {
        cumulative += h.buckets[i].load(std::memory_order_relaxed);
        const std::string le = i < bounds.size() ? replicator::prometheus_number(bounds[i]) : "+Inf";
        out += name + "_bucket{" + labels + ",le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
      }
      out += name + "_sum{" + labels + "} " + replicator::prometheus_number(h.sum.load(std::memory_order_relaxed)) + "\n";
      out += name + "_count{" + labels + "} " + std::to_string(count) + "\n";
    }
  }
  return out;
}

}  // namespace couchgate::gateway::front
