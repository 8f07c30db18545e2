// Owns: the shared benchmark context (see context.hpp).
#include "tests/bench/context.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <thread>

namespace couchgate::bench {

namespace {
std::atomic<bool> g_interrupted{false};
const steady::time_point g_started = steady::now();

extern "C" void on_signal(int) { g_interrupted.store(true); }
}  // namespace

test::names context::fresh(const std::string& stem) {
  test::names n = test::fresh_names(stem);
  // fresh_names: prefix = "t" + unique(stem) + "-userdb-"; the base is everything before that.
  std::string base = n.prefix.substr(0, n.prefix.size() - std::string("-userdb-").size());
  std::lock_guard lk(mu_);
  bases_.push_back(base);
  return n;
}

json context::couchgate_config(const test::names& n) const {
  json cfg = test::base_config(n);
  // base_config tunes couchgate for fast tests (200 ms sweeps at 2000 databases/s, 1 s
  // heartbeats, small _users batches). The benchmark measures what operators run: couchgate's
  // own defaults for everything but the names, the selection role and the admin port; that
  // includes the central guard, which the tests turn on against CouchDB (off by default; an
  // operator who turns it on can measure it with --couchgate-config).
  cfg.erase("couchdb");
  cfg["fanin"].erase("central_guard");
  cfg["provisioning"].erase("batch");
  cfg["fanin"].erase("sweep_interval");
  cfg["fanin"].erase("sweep_rate");
  cfg["log"]["level"] = opt.log_level;
  cfg.merge_patch(opt.couchgate_overrides);
  return cfg;
}

void context::created(const std::string& db) {
  std::lock_guard lk(mu_);
  dbs_.insert(db);
}

void context::dropped(const std::string& db) {
  std::lock_guard lk(mu_);
  dbs_.erase(db);
}

std::vector<std::string> context::created_dbs() const {
  std::lock_guard lk(mu_);
  return {dbs_.begin(), dbs_.end()};
}

std::vector<std::string> context::name_bases() const {
  std::lock_guard lk(mu_);
  return bases_;
}

void context::fail(const std::string& what) {
  note("FUNCTIONAL FAILURE: " + what);
  std::lock_guard lk(mu_);
  failures_.push_back(what);
}

std::vector<std::string> context::failures() const {
  std::lock_guard lk(mu_);
  return failures_;
}

void note(const std::string& line) {
  static std::mutex mu;
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "[%7.1fs] ", seconds_since(g_started));
  std::lock_guard lk(mu);
  std::cerr << "bench: " << stamp << line << std::endl;
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

bool interrupted() { return g_interrupted.load(); }

double seconds_since(steady::time_point t0) { return std::chrono::duration<double>(steady::now() - t0).count(); }

double round_to(double v, int decimals) {
  double f = std::pow(10.0, decimals);
  return std::round(v * f) / f;
}

std::string pad(long long value, int width) {
  std::string s = std::to_string(value);
  if (static_cast<int>(s.size()) < width) s.insert(0, static_cast<std::size_t>(width) - s.size(), '0');
  return s;
}

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool poll_until(const std::function<bool()>& pred, std::chrono::duration<double> deadline,
                std::chrono::milliseconds period) {
  auto end = steady::now() + std::chrono::duration_cast<steady::duration>(deadline);
  for (;;) {
    if (pred()) return true;
    if (interrupted() || steady::now() >= end) return false;
    std::this_thread::sleep_for(period);
  }
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return -1;
  double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  std::size_t i = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

json latency_summary(std::vector<double> v, int decimals) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return json{{"count", 0}};
  return json{{"count", v.size()},
              {"p50", round_to(percentile(v, 50), decimals)},
              {"p95", round_to(percentile(v, 95), decimals)},
              {"p99", round_to(percentile(v, 99), decimals)},
              {"max", round_to(v.back(), decimals)}};
}

}  // namespace couchgate::bench
