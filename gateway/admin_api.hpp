#pragma once
// Owns: the admin API, on 127.0.0.1 by default:
//   GET /healthz              200 while the process runs
//   GET /readyz               200 once CouchDB answered and the first reconcile finished, else 503
//   GET /metrics              Prometheus text
//   GET /status               JSON summary
//   GET /status/users/<name>  one user's database, provisioning and replication state
//   GET /failures             documents not replicated (refused by the central database or
//                             unreadable at the source), most recent last, bounded
//   GET /identities/conflicts users made without couchgate whose name or e-mail address another
//                             user has reserved: {conflicts:[{user, field, value, holder}]}
// It never prints credentials: handlers build their answers from redacted data only.
//
// Access: with a token configured, everything but /healthz and /readyz needs
// `Authorization: Bearer <token>` (compared in constant time; never logged or echoed). The
// config loader requires a token whenever the address is not a loopback address.
//
// Serving: the front door's event-driven server (gateway/front/http_server.hpp) on one I/O
// thread of the admin API's own (the front door may be disabled). Slow clients cannot starve
// it: connections are capped (max_connections; over the cap a new connection is closed at
// once), a request's whole header must arrive within header_timeout (slowloris dribblers are
// cut off then), a kept-alive connection idles at most idle_timeout, and a request is at most
// max_request_bytes. /healthz and /readyz are answered on the I/O thread; every other route
// (which may wait on CouchDB) runs on a small worker pool, so it never holds the I/O thread.
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace couchgate::gateway {

struct admin_handlers {
  std::function<std::pair<bool, std::string>()> ready;  // ready?, reason when not
  std::function<std::string()> metrics;
  std::function<nlohmann::json()> status;
  std::function<std::optional<nlohmann::json>(const std::string& user)> user_status;
  std::function<nlohmann::json()> failures;
  // Users made without couchgate whose name or address another user has reserved; nullopt when
  // identities are off (404).
  std::function<std::optional<nlohmann::json>()> identity_conflicts;
};

enum class admin_access {
  allowed,
  missing_token,  // 401: no (Bearer) Authorization header
  wrong_token,    // 401: a token that is not the configured one
};

// The access decision for one request, independent of the HTTP library. `token` empty = no
// token required. /healthz and /readyz are always allowed (orchestrators probe them without
// credentials; they reveal nothing but up/ready and the reason).
admin_access authorize(std::string_view path, std::string_view authorization_header, std::string_view token);

// a == b without an early exit on the first difference (the time taken does not tell how much
// of a guessed token was right).
bool constant_time_equal(std::string_view a, std::string_view b);

struct admin_api_limits {
  std::size_t max_connections = 64;                 // open at once; more are closed at once
  std::chrono::milliseconds header_timeout{5000};   // a request's whole header, from its first byte
  std::chrono::milliseconds idle_timeout{10000};    // kept-alive connection between requests; each write
  std::size_t max_request_bytes = 64 * 1024;        // header (and body) limit
  std::size_t worker_threads = 2;                   // run the handlers that may wait on CouchDB
};

class admin_api {
 public:
  explicit admin_api(admin_handlers h, std::string token = {}, admin_api_limits limits = {});
  ~admin_api();
  // Binds and starts serving; returns the bound port, or -1 (with reason) when binding failed.
  int start(const std::string& address, int port, std::string& error);
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace couchgate::gateway
