#pragma once
// Owns: the front door's metrics. Counters and gauges live in the daemon's registry
// (replicator/metrics.hpp); request latency histograms labelled by route and status class are
// kept and rendered here (the registry's histograms have no labels). Every label set is created
// at startup, so recording is lock-free.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "replicator/metrics.hpp"

namespace couchgate::gateway::front {

class front_metrics {
 public:
  explicit front_metrics(replicator::registry& registry);
  // One answered request: route label (route.hpp), HTTP status, seconds from header to last byte.
  void request(std::string_view route, unsigned status, double seconds);
  std::string render() const;  // the labelled histograms, Prometheus text

  replicator::counter& session_cache_hits;
  replicator::counter& session_cache_misses;
  replicator::counter& route_cache_hits;    // live feeds routed by the route memo, no GET /_session
  replicator::counter& tls_refusals;        // 403: not over TLS and not allowed
  replicator::counter& rate_limited;        // 429: too many failed authentications from an address
  replicator::counter& user_limited;        // 429/503: the user's queue full, or its wait deadline passed
  replicator::counter& upstream_busy;       // 503: no upstream connection within the wait deadline
  replicator::counter& auth_failures;       // credentials CouchDB did not accept
  replicator::counter& feed_rechecks;       // parked feeds' credential re-checks sent (GET /_session, background)
  replicator::histogram& upstream_wait;     // seconds a request (not background work) waited for a pool connection
  replicator::histogram& feed_wake;         // seconds from a change announced to a parked feed to its answer sent
  // Where feed_wake's time goes, for reads that deliver a change (a woken feed's read):
  replicator::histogram& feed_turn_wait;    // waiting for a turn to read (feed_read_gate)
  replicator::histogram& feed_read;         // the read: pool wait plus CouchDB's answer, read whole

 private:
  static constexpr std::array<double, 17> bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                 0.5,    1,     2.5,    5,     10,   30,    60,   300};
  struct labelled_histogram {
    std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets{};
    std::atomic<std::uint64_t> count{0};
    std::atomic<double> sum{0};
  };
  static std::size_t route_index(std::string_view route);
  static std::size_t status_index(unsigned status);
  std::vector<std::vector<replicator::counter*>> requests_;  // [route][status]
  std::array<std::array<labelled_histogram, 5>, 7> latency_{};  // [route][status class 1xx..5xx]
};

}  // namespace couchgate::gateway::front
