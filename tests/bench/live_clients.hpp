#pragma once
// Owns: the live-feeds phase's lightweight clients (issue #14): thousands of PouchDB-like live
// clients as Boost.Asio coroutines on one I/O thread, one keep-alive connection each. A client
// reads its database's update_seq (GET {path}), then waits on
// `{path}/_changes?feed=longpoll&since=<last_seq>&timeout=T` and re-issues after each answer,
// reporting every row's document id and the moment its answer was complete. A refused request
// (503/429/...) or a broken connection is counted and retried after 1 s, doubling to 16 s while
// failures continue (PouchDB's retry backs off too; a fixed 1 s makes a herd of reconnects).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace couchgate::bench {

struct live_client_spec {
  std::string path;           // "/me" (front door) or "/userdb-..." (the server)
  std::string authorization;  // the Authorization header value
};

class live_fleet {
 public:
  // Called on the I/O thread for every row of every answer: client index, document id, and the
  // steady-clock time the answer was read completely.
  using on_row = std::function<void(std::size_t client, const std::string& id, std::chrono::steady_clock::time_point t)>;

  // Clients connect to host:port, ramp_per_s of them per second (a listen backlog is finite).
  live_fleet(std::string host, int port, std::vector<live_client_spec> clients, on_row cb, int ramp_per_s,
             std::chrono::milliseconds longpoll_timeout);
  ~live_fleet();
  live_fleet(const live_fleet&) = delete;
  live_fleet& operator=(const live_fleet&) = delete;

  void start();
  void stop();  // closes every connection; idempotent

  int waiting() const { return waiting_.load(); }  // clients past their first GET (i.e. in the longpoll loop)
  int polling() const { return polling_.load(); }  // clients whose first longpoll request is written
  std::uint64_t answers() const { return answers_.load(); }
  std::uint64_t transport_errors() const { return transport_errors_.load(); }
  std::map<int, std::uint64_t> refusals() const;  // HTTP status -> count (anything but 200)
  std::string first_error() const;

 private:
  struct impl;
  std::string host_;
  int port_;
  std::vector<live_client_spec> clients_;
  on_row cb_;
  int ramp_per_s_;
  std::chrono::milliseconds timeout_;
  std::atomic<bool> stop_{false};
  std::atomic<int> waiting_{0}, polling_{0};
  std::atomic<std::uint64_t> answers_{0}, transport_errors_{0};
  mutable std::mutex mu_;
  std::map<int, std::uint64_t> refusals_;
  std::string first_error_;
  std::unique_ptr<impl> impl_;  // the io_context: destroyed first, before what its coroutines use
  std::thread thread_;
};

// "Basic " + base64(user:password).
std::string basic_auth(const std::string& user, const std::string& password);

}  // namespace couchgate::bench
