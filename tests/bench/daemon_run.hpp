#pragma once
// Owns: one couchgate daemon under measurement: spawned through the test harness with a
// sampler watching its sockets, memory and fds from the moment of the fork, its readiness, a
// snapshot of its own metrics and /status, and its orderly stop (SIGTERM; exit status checked).
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "tests/bench/context.hpp"
#include "tests/bench/probe.hpp"
#include "tests/support/harness.hpp"

namespace couchgate::bench {

// The `front:` section for a measured front door: plain HTTP (front.allow_insecure) on a free
// loopback port written to port_file, room for max_clients client connections; couchgate's
// defaults for the rest (upstream pool, timeouts, per-user limits).
json front_door_config(const std::string& port_file, std::size_t max_clients);

// Counts and quantiles (ms, interpolated inside the bucket as Prometheus' histogram_quantile
// does) of what a histogram observed between two readings of daemon_run::histogram.
json histogram_summary(const std::map<double, double>& before, const std::map<double, double>& after);

class daemon_run {
 public:
  // label names the log file kept under --logs (e.g. "fanin-200x50"); extra_env is set in its
  // environment (e.g. COUCHDB_URL through a recording proxy).
  daemon_run(context& ctx, json config, std::string label, std::map<std::string, std::string> extra_env = {});
  ~daemon_run();

  void start();                        // t0 = fork time
  double seconds() const;              // since start()
  bool running();
  bool check_ready();                  // non-blocking; remembers when it first became ready
  bool wait_ready(std::chrono::duration<double> deadline);
  double ready_seconds() const { return ready_s_; }
  pid_t pid() const;
  // The front door's port from front.port_file (0 when it did not appear within the deadline).
  int front_port(std::chrono::duration<double> deadline);
  sampler& samples() { return *sampler_; }

  std::map<std::string, double> metrics();  // name -> value summed over label sets
  // An unlabelled histogram of its /metrics: cumulative count by upper bound (le; +Inf last).
  std::map<double, double> histogram(const std::string& name);
  json status();                            // GET /status, null when unavailable
  // Stops the sampler, reads the process's usage, sends SIGTERM; a non-zero exit is a failure.
  json stop(const std::string& phase);
  std::string log_tail(std::size_t lines) const;

 private:
  context& ctx_;
  json config_;
  std::string label_;
  std::unique_ptr<test::couchgate_process> proc_;
  std::unique_ptr<sampler> sampler_;
  steady::time_point t0_{};
  double ready_s_ = -1;
  bool stopped_ = false;
};

}  // namespace couchgate::bench
