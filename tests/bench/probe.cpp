// Owns: /proc readings and the sampler thread (see probe.hpp).
#include "tests/bench/probe.hpp"

#include <unistd.h>

#include <ctime>
#include <fstream>
#include <thread>
#include <sstream>
#include <string>
#include <unordered_set>

#include "tests/bench/context.hpp"
#include "tests/support/harness.hpp"

namespace couchgate::bench {

namespace {

long status_kb(const std::string& status, const char* key) {
  auto at = status.find(key);
  if (at == std::string::npos) return -1;
  return std::strtol(status.c_str() + at + std::char_traits<char>::length(key), nullptr, 10);
}

}  // namespace

proc_usage read_usage(pid_t pid) {
  proc_usage u;
  if (pid <= 0) return u;
  std::string base = "/proc/" + std::to_string(pid);
  {
    std::ifstream f(base + "/status");
    std::stringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    u.rss_kb = status_kb(s, "VmRSS:");
    u.hwm_kb = status_kb(s, "VmHWM:");
  }
  {
    std::ifstream f(base + "/stat");
    std::string line;
    std::getline(f, line);
    // Fields after the command name (which may hold spaces) start after the last ')'.
    auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream ls(line.substr(close + 2));
      std::string field;
      double utime = -1, stime = -1;
      // state is field 3; utime 14, stime 15 (1-based over the whole line).
      for (int i = 3; i <= 15 && ls >> field; ++i) {
        if (i == 14) utime = std::stod(field);
        if (i == 15) stime = std::stod(field);
      }
      if (utime >= 0 && stime >= 0) u.cpu_seconds = (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  }
  int fds = -1;
  test::socket_inodes(pid, &fds);
  u.fds = fds;
  return u;
}

int server_sockets(pid_t server) {
  if (server <= 0) return -1;
  int fds = -1;
  auto held = test::socket_inodes(server, &fds);
  return fds < 0 ? -1 : static_cast<int>(held.size());
}

socket_counts count_sockets(pid_t watched, pid_t server) {
  socket_counts c;
  auto mine = test::socket_inodes(0);
  auto theirs = watched > 0 ? test::socket_inodes(watched) : std::unordered_set<std::string>{};
  c.server_held = server_sockets(server);
  for (const auto& inode : test::connections_to_server_inodes()) {
    if (mine.count(inode)) {
      ++c.bench;
      continue;
    }
    ++c.clients;
    if (theirs.count(inode)) ++c.watched;
  }
  return c;
}

double wait_server_quiet(pid_t server, double max_percent, std::chrono::milliseconds window,
                         std::chrono::duration<double> deadline) {
  if (server <= 0 || read_usage(server).cpu_seconds < 0) return -1;
  const auto t0 = steady::now();
  for (;;) {
    const double before = read_usage(server).cpu_seconds;
    std::this_thread::sleep_for(window);  // the measuring window itself, not a wait for an outcome
    const double used = read_usage(server).cpu_seconds - before;
    if (before < 0 || used < 0) return -1;
    const double secs = seconds_since(t0);
    if (used * 100 <= max_percent * std::chrono::duration<double>(window).count() || secs >= deadline.count()) return secs;
  }
}

namespace {
// CPU time of the calling thread so far, in seconds.
double thread_cpu_seconds() {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}
}  // namespace

sampler::sampler(pid_t server_pid, std::chrono::milliseconds period)
    : server_(server_pid), period_(period), t0_(steady::now()), server_cpu0_(read_usage(server_pid).cpu_seconds) {
  thread_ = std::thread([this] { run(); });
}

sampler::~sampler() { stop(); }

void sampler::watch(pid_t pid) { watched_.store(pid); }

void sampler::stop() {
  if (stop_.exchange(true)) return;
  if (thread_.joinable()) thread_.join();
  double secs = seconds_since(t0_);
  double cpu1 = read_usage(server_).cpu_seconds;
  std::lock_guard lk(mu_);
  sum_.seconds = secs;
  if (server_cpu0_ >= 0 && cpu1 >= 0 && secs > 0) {
    sum_.server_cpu_percent = round_to((cpu1 - server_cpu0_) / secs * 100, 1);
    sum_.server_cpu_seconds = round_to(cpu1 - server_cpu0_, 2);
  }
}

sampler::summary sampler::result() const {
  std::lock_guard lk(mu_);
  return sum_;
}

std::vector<std::pair<double, int>> sampler::clients_series() const {
  std::lock_guard lk(mu_);
  return series_;
}

nlohmann::json cpu_or_null(const sampler::summary& s) {
  return s.server_cpu_percent >= 0 ? nlohmann::json(s.server_cpu_percent) : nlohmann::json(nullptr);
}

nlohmann::json profile(double wall_seconds, double couchgate_cpu_seconds, double server_cpu_seconds) {
  auto known = [](double v) { return v >= 0 ? nlohmann::json(round_to(v, 2)) : nlohmann::json(nullptr); };
  double waiting = wall_seconds - std::max(0.0, couchgate_cpu_seconds) - std::max(0.0, server_cpu_seconds);
  return nlohmann::json{{"wall_seconds", round_to(wall_seconds, 2)},
                        {"couchgate_cpu_seconds", known(couchgate_cpu_seconds)},
                        {"server_cpu_seconds", known(server_cpu_seconds)},
                        {"waiting_seconds", round_to(std::max(0.0, waiting), 2)}};
}

void sampler::run() {
  auto t0 = steady::now();
  while (!stop_.load()) {
    const double sample_cpu0 = thread_cpu_seconds();
    pid_t w = watched_.load();
    auto s = count_sockets(w, server_);
    proc_usage u = w > 0 ? read_usage(w) : proc_usage{};
    // A sample costs a readlink per open descriptor of the bench, couchgate and the server, and a
    // read of /proc/net/tcp: at 10 000 live clients about 40 000 system calls. Every 50 ms that
    // took half a core of the two away from the processes being measured (and their latency
    // with it), so the sampler keeps to about 5% of one core: it waits at least 19 times the CPU
    // time the sample took (CPU, not wall time: on a starved machine the wall time of a cheap
    // sample is long, and the samples would thin out exactly when peaks happen).
    const auto took = std::chrono::duration<double>(std::max(0.0, thread_cpu_seconds() - sample_cpu0));
    const auto wait = std::max(std::chrono::duration_cast<steady::duration>(took * 19), steady::duration(period_));
    {
      std::lock_guard lk(mu_);
      sum_.longest_wait_ms = std::max(sum_.longest_wait_ms, std::chrono::duration<double, std::milli>(wait).count());
      sum_.bench_peak = std::max(sum_.bench_peak, s.bench);
      sum_.watched_peak = std::max(sum_.watched_peak, s.watched);
      sum_.clients_peak = std::max(sum_.clients_peak, s.clients);
      sum_.server_held_peak = std::max(sum_.server_held_peak, s.server_held);
      if (u.rss_kb > 0) sum_.rss_peak_kb = std::max(sum_.rss_peak_kb, u.rss_kb);
      if (u.hwm_kb > 0) sum_.rss_peak_kb = std::max(sum_.rss_peak_kb, u.hwm_kb);
      if (u.fds > 0) sum_.fds_peak = std::max(sum_.fds_peak, u.fds);
      if (u.cpu_seconds >= 0) sum_.watched_cpu_seconds = u.cpu_seconds;
      ++sum_.samples;
      if (series_.size() < 20000) series_.emplace_back(seconds_since(t0), s.clients);
    }
    std::this_thread::sleep_for(wait);
  }
}

}  // namespace couchgate::bench
