#pragma once
// Owns: what the benchmark reads from /proc while a phase runs: a process's memory, open fds and
// CPU time, and the established TCP connections to the server's port, split by who holds them.
// A sampler thread takes these every period and keeps the peaks (and a short time series).
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>
#include <vector>

namespace couchgate::bench {

using steady_time = std::chrono::steady_clock::time_point;

struct proc_usage {
  long rss_kb = -1;         // VmRSS
  long hwm_kb = -1;         // VmHWM: the kernel's own peak RSS
  int fds = -1;             // entries in /proc/<pid>/fd
  double cpu_seconds = -1;  // utime + stime
};
proc_usage read_usage(pid_t pid);

struct socket_counts {
  int bench = 0;            // this process's connections to the server port
  int watched = 0;          // the watched process's (couchgate)
  int clients = 0;          // every client connection to the server port except the bench's own
  int server_held = -1;     // socket fds the server process holds (-1: server pid unknown)
};
// Established TCP connections to the test server's port in this network namespace, read from
// /proc/net/tcp{,6}. `clients` sees any local process (couchgate, restore, the server's own
// replicator connecting to itself), which is how the built-in replicator is measured.
socket_counts count_sockets(pid_t watched, pid_t server);
// Socket fds the server process holds (its listener and every connection to it; -1 when the
// pid is unknown or /proc/<pid>/fd unreadable).
int server_sockets(pid_t server);

class sampler {
 public:
  struct summary {
    int bench_peak = 0;
    int watched_peak = 0;
    int clients_peak = 0;
    int server_held_peak = -1;
    long rss_peak_kb = -1;  // of the watched process
    int fds_peak = -1;
    int samples = 0;
    double longest_wait_ms = 0;      // the longest wait between two samples (a sample costs more
                                     // the more descriptors are open): shorter peaks may be missed
    double seconds = 0;              // from construction to stop()
    double server_cpu_percent = -1;  // the server process's CPU over that time (-1: pid unknown)
    double server_cpu_seconds = -1;  // the same in CPU seconds
    double watched_cpu_seconds = -1; // the watched process's CPU time at its last sample
  };
  explicit sampler(pid_t server_pid, std::chrono::milliseconds period = std::chrono::milliseconds(50));
  ~sampler();
  sampler(const sampler&) = delete;
  sampler& operator=(const sampler&) = delete;

  void watch(pid_t pid);  // the process whose memory, fds and sockets are tracked
  void stop();
  summary result() const;
  // (seconds since the sampler started, clients) pairs, for plots.
  std::vector<std::pair<double, int>> clients_series() const;

 private:
  void run();
  pid_t server_;
  std::chrono::milliseconds period_;
  std::atomic<pid_t> watched_{-1};
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  summary sum_;
  std::vector<std::pair<double, int>> series_;
  steady_time t0_;
  double server_cpu0_ = -1;
  std::thread thread_;
};

// Waits until the server process used at most `max_percent` of one core over a `window`
// (work a phase left behind: deleting a thousand databases keeps CouchDB busy for seconds after
// the last answer), at most `deadline`. Returns the seconds waited (-1: server pid unknown).
double wait_server_quiet(pid_t server, double max_percent = 10, std::chrono::milliseconds window = std::chrono::milliseconds(500),
                         std::chrono::duration<double> deadline = std::chrono::seconds(30));

// summary.server_cpu_percent as JSON (null when unknown).
nlohmann::json cpu_or_null(const sampler::summary& s);

// Where a phase's wall time went (issue #18's profile): {"wall_seconds", "couchgate_cpu_seconds",
// "server_cpu_seconds", "waiting_seconds"}; waiting = wall - both CPU times (not below 0): neither
// process on a CPU (round trips, fsync, timers, the other side's queue). A CPU time < 0 is
// unknown (null, and left out of waiting).
nlohmann::json profile(double wall_seconds, double couchgate_cpu_seconds, double server_cpu_seconds);

}  // namespace couchgate::bench
