#pragma once
// Owns: every socket couchgate opens to CouchDB. One libcurl multi handle driven by one thread,
// with keep-alive and a hard cap on connections (CURLMOPT_MAX_TOTAL_CONNECTIONS): requests past
// the cap wait inside libcurl for a free connection, they never open another. Feeds, replication
// and provisioning all go through the same pool, so the cap holds for the whole process.
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

namespace couchgate::replicator {

enum class error_kind {
  none,      // a response arrived (look at the status)
  network,   // could not connect, connection reset, DNS...
  timeout,   // total or idle timeout
  cancelled, // the pool shut down
  credential_held,  // not sent: CouchDB refused the credential recently (see server_gate.hpp)
};

struct http_request {
  std::string method = "GET";
  std::string target;  // path + query, already percent-encoded, starting with '/'
  std::string body;
  std::string content_type = "application/json";
  std::string accept = "application/json";
  std::chrono::milliseconds timeout{30000};        // whole request
  std::chrono::milliseconds idle_timeout{0};       // abort when no byte arrives for this long (feeds)
};

struct http_response {
  error_kind kind = error_kind::none;
  long status = 0;
  std::string body;
  std::string error;  // transport error text; never contains credentials
  std::string retry_after_header;  // the Retry-After header as sent ("" = none)
  std::optional<std::chrono::milliseconds> retry_after;  // it, parsed (seconds or HTTP-date)
  bool credential_rejected = false;  // the server refused the credential (is_credential_rejection)
  bool transport_ok() const { return kind == error_kind::none; }
  bool ok() const { return kind == error_kind::none && status >= 200 && status < 300; }
};

struct http_pool_stats {
  std::uint64_t requests = 0;
  std::uint64_t transport_errors = 0;
  std::int64_t open_sockets = 0;
  std::int64_t peak_sockets = 0;
  std::uint64_t sockets_opened = 0;
  std::int64_t in_flight = 0;
  std::int64_t queued = 0;          // submitted, not started (paced or waiting for the credential probe)
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

class http_pool {
 public:
  struct options {
    std::string base_url;   // scheme://host:port[/prefix], no credentials
    std::string username;   // basic auth; empty = none
    std::string password;
    std::size_t max_connections = 8;
    std::string user_agent = "couchgate";
    gate_options gate{};    // pacing on overload, hold on a refused credential
  };

  explicit http_pool(options opts);
  ~http_pool();
  http_pool(const http_pool&) = delete;
  http_pool& operator=(const http_pool&) = delete;

  using callback = std::function<void(http_response)>;
  // Thread-safe. The callback runs on the pool's thread: keep it short.
  void submit(http_request req, callback done);
  std::future<http_response> request(http_request req);
  http_response perform(http_request req) { return request(std::move(req)).get(); }

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

// Percent-encodes a path segment (database name or document id): everything but unreserved
// characters. `_design/` and `_local/` prefixes of document ids keep their slash.
std::string encode_segment(std::string_view s);
std::string encode_doc_id(std::string_view id);
std::string encode_query_value(std::string_view s);
// The inverse: "%41" -> "A" (either hex case; '+' stays '+'); nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view s);
// "/" + encode_segment(db): a database's path. (Out of line on purpose: GCC 12 at -O3 reports a
// false -Wrestrict positive for `"/" + std::string&&` once inlined into some callers.)
std::string db_path(std::string_view db);

}  // namespace couchgate::replicator
