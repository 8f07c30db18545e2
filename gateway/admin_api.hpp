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
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
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

class admin_api {
 public:
  explicit admin_api(admin_handlers h);
  ~admin_api();
  // Binds and starts serving; returns the bound port, or -1 (with reason) when binding failed.
  int start(const std::string& address, int port, std::string& error);
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace couchgate::gateway
