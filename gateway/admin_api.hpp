#pragma once
// Owns: the admin HTTP API (cpp-httplib) on 127.0.0.1 by default:
//   GET /healthz              200 while the process runs
//   GET /readyz               200 once CouchDB answered and the first reconcile finished, else 503
//   GET /metrics              Prometheus text
//   GET /status               JSON summary
//   GET /status/users/<name>  one user's database, provisioning and replication state
//   GET /failures             documents not replicated (refused by the central database or
//                             unreadable at the source), most recent last, bounded
// It never prints credentials: handlers build their answers from redacted data only.
//
// Access: with a token configured, everything but /healthz and /readyz needs
// `Authorization: Bearer <token>` (compared in constant time; never logged or echoed). The
// config loader requires a token whenever the address is not a loopback address.
//
// Slow clients: each connection has a thread of its own (cpp-httplib's model); reads and writes
// time out (2 s / 5 s per call), a connection serves one request, requests are at most 64 KiB,
// and the pool has 64 threads, so a handful of half-open connections dribbling header bytes
// cannot starve /healthz. What cpp-httplib 0.11 cannot do: a total deadline for reading the
// headers, and a cap on connections (the 65th dribbling connection waits for a thread).
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
  int threads = 64;                     // connections served at once
  std::chrono::milliseconds read_timeout{2000};   // per read call
  std::chrono::milliseconds write_timeout{5000};  // per write call
  std::size_t max_request_bytes = 64 * 1024;
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
