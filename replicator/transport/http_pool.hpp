#pragma once
// Owns: every socket couchgate opens to CouchDB. One libcurl multi handle driven by one thread,
// with keep-alive and a hard cap on connections (CURLMOPT_MAX_TOTAL_CONNECTIONS): requests past
// the cap wait inside libcurl for a free connection, they never open another. Feeds, replication
// and provisioning all go through the same pool, so the cap holds for the whole process.
// `feed_connections` of the cap are kept for change feeds (http_request::feed): other requests
// start at most max_connections - feed_connections at once and wait here, in submission order,
// beyond that, so a feed's next longpoll never queues behind work in libcurl's own FIFO (the
// `_db_updates` feed wakes the front door's parked clients: behind the fan-in's requests, the
// wake waited for the fan-in). Among the work waiting, follow-ups (http_request::follow_up: the
// next step of work already begun) start first, each kind in submission order.
// The real implementation of the transport seam (transport.hpp).
//
// Errors are values (http_response::kind); nothing here throws after construction.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <optional>
#include <vector>

#include "replicator/server_gate.hpp"
#include "replicator/transport/transport.hpp"
#include "replicator/transport/url.hpp"

namespace couchgate::replicator {

struct http_pool_stats {
  std::uint64_t requests = 0;
  std::uint64_t transport_errors = 0;
  std::int64_t open_sockets = 0;
  std::int64_t peak_sockets = 0;
  std::uint64_t sockets_opened = 0;
  std::int64_t in_flight = 0;
  std::int64_t queued = 0;          // submitted, not started (paced, waiting for the credential probe, or for a work connection)
  // The server_gate's state (see server_gate.hpp).
  std::uint64_t overloaded = 0;        // 429/503 answers
  std::uint64_t auth_rejections = 0;   // answers refusing the credential
  std::uint64_t credential_refused = 0;  // requests failed without being sent (credential on hold)
  std::chrono::milliseconds pace{0};   // current minimum interval between request starts
  std::chrono::milliseconds delay{0};  // how long until the next request may start (Retry-After)
  bool credential_held = false;        // nothing is sent until held_for has passed
  bool credential_accepted = false;    // the server has accepted the credential
  std::chrono::milliseconds held_for{0};
  std::uint64_t outages = 0;  // times CouchDB stopped answering (outage.hpp), each logged once
  bool unreachable = false;   // in one of those now
};

class http_pool final : public transport {
 public:
  struct options {
    std::string base_url;   // scheme://host:port[/prefix], no credentials
    std::string username;   // Basic auth on requests that carry no credential of their own
                            // (session_auth sets one); empty = none
    std::string password;
    std::size_t max_connections = 8;
    std::string user_agent = "couchgate";
    gate_options gate{};    // pacing on overload, hold on a refused credential
    std::size_t feed_connections = 0;  // of max_connections, kept for feeds (0: none kept)
  };

  explicit http_pool(options opts);
  ~http_pool();
  http_pool(const http_pool&) = delete;
  http_pool& operator=(const http_pool&) = delete;

  // Thread-safe. The callback runs on the pool's thread: keep it short.
  void submit(http_request req, callback done) override;

  // Stops the loop; pending and in-flight requests complete with error_kind::cancelled.
  void shutdown();
  http_pool_stats stats() const;
  const std::string& base_url() const { return opts_.base_url; }
  std::size_t max_connections() const { return opts_.max_connections; }

  struct impl;  // libcurl specifics live in the .cpp

 private:
  options opts_;
  std::unique_ptr<impl> impl_;
};

}  // namespace couchgate::replicator
