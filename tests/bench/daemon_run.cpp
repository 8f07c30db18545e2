// Owns: a measured couchgate daemon (see daemon_run.hpp).
#include "tests/bench/daemon_run.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "tests/bench/runner.hpp"

namespace couchgate::bench {

daemon_run::daemon_run(context& ctx, json config, std::string label, std::map<std::string, std::string> extra_env)
    : ctx_(ctx),
      config_(std::move(config)),
      label_(std::move(label)),
      proc_(std::make_unique<test::couchgate_process>(config_, std::move(extra_env))) {}

daemon_run::~daemon_run() {
  if (sampler_) sampler_->stop();
  std::string dir = proc_->dir();
  proc_.reset();  // kills the process if still running
  if (!ctx_.opt.logs.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(ctx_.opt.logs, ec);
    std::filesystem::copy_file(dir + "/stderr.log", ctx_.opt.logs + "/couchgate-" + label_ + ".log",
                               std::filesystem::copy_options::overwrite_existing, ec);
  }
  remove_dir(dir);
}

void daemon_run::start() {
  sampler_ = std::make_unique<sampler>(ctx_.server_pid);
  t0_ = steady::now();
  proc_->start();
  sampler_->watch(proc_->pid());
}

double daemon_run::seconds() const { return seconds_since(t0_); }

bool daemon_run::running() { return proc_->running(); }

pid_t daemon_run::pid() const { return proc_->pid(); }

json front_door_config(const std::string& port_file, std::size_t max_clients) {
  return json{{"enabled", true},          {"address", "127.0.0.1"},   {"port", 0},
              {"port_file", port_file},   {"allow_insecure", true},   {"max_connections", max_clients}};
}

int daemon_run::front_port(std::chrono::duration<double> deadline) {
  if (!config_.contains("front") || !config_["front"].contains("port_file")) return 0;
  const std::string path = config_["front"]["port_file"].get<std::string>();
  int port = 0;
  poll_until(
      [&] {
        std::ifstream f(path);
        f >> port;
        return port > 0 || !running();
      },
      deadline, std::chrono::milliseconds(50));
  return port;
}

bool daemon_run::check_ready() {
  if (ready_s_ >= 0) return true;
  // wait_ready with a zero deadline is a single non-blocking check.
  if (proc_->wait_ready(std::chrono::milliseconds(0))) {
    ready_s_ = seconds();
    return true;
  }
  return false;
}

bool daemon_run::wait_ready(std::chrono::duration<double> deadline) {
  return poll_until([this] { return !running() || check_ready(); }, deadline, std::chrono::milliseconds(50)) &&
         ready_s_ >= 0;
}

std::map<std::string, double> daemon_run::metrics() {
  std::map<std::string, double> out;
  auto r = proc_->admin_get("/metrics");
  if (r.status != 200) return out;
  std::istringstream in(r.raw);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    std::string key = line.substr(0, sp);
    std::string name = key.substr(0, key.find('{'));
    try {
      out[name] += std::stod(line.substr(sp + 1));
    } catch (...) {
    }
  }
  return out;
}

std::map<double, double> daemon_run::histogram(const std::string& name) {
  std::map<double, double> out;
  auto r = proc_->admin_get("/metrics");
  if (r.status != 200) return out;
  const std::string prefix = name + "_bucket{le=\"";
  std::istringstream in(r.raw);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto close = line.find('"', prefix.size());
    const auto sp = line.rfind(' ');
    if (close == std::string::npos || sp == std::string::npos) continue;
    const std::string le = line.substr(prefix.size(), close - prefix.size());
    try {
      const double bound = le == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(le);
      out[bound] = std::stod(line.substr(sp + 1));
    } catch (...) {
    }
  }
  return out;
}

json histogram_summary(const std::map<double, double>& before, const std::map<double, double>& after) {
  std::vector<std::pair<double, double>> cum;  // (bound, count observed between the readings)
  for (const auto& [bound, n] : after) {
    const auto b = before.find(bound);
    cum.emplace_back(bound, n - (b == before.end() ? 0.0 : b->second));
  }
  const double count = cum.empty() ? 0 : cum.back().second;
  json out{{"count", static_cast<long long>(count)}};
  if (count <= 0) return out;
  const auto quantile = [&](double q) -> json {
    const double rank = q * count;
    double lower = 0, below = 0;
    for (const auto& [bound, n] : cum) {
      if (n >= rank) {
        if (std::isinf(bound)) return json{{"above_ms", round_to(lower * 1000, 1)}};
        const double share = n > below ? (rank - below) / (n - below) : 1.0;
        return round_to((lower + (bound - lower) * share) * 1000, 1);
      }
      lower = bound;
      below = n;
    }
    return nullptr;
  };
  out["p50"] = quantile(0.50);
  out["p95"] = quantile(0.95);
  out["p99"] = quantile(0.99);
  return out;
}

json daemon_run::status() {
  auto r = proc_->admin_get("/status");
  return r.status == 200 ? r.body : json(nullptr);
}

json daemon_run::stop(const std::string& phase) {
  json out = json::object();
  if (stopped_) return out;
  stopped_ = true;
  auto m = metrics();
  // A family's value from couchgate's /metrics at its stop, null when it has none.
  auto metric = [&m](const char* family) { return m.count(family) ? json(m[family]) : json(nullptr); };
  auto st = status();
  proc_usage u = read_usage(pid());
  sampler_->stop();
  auto s = sampler_->result();
  out["sockets_peak"] = s.watched_peak;
  out["server_cpu_percent"] = cpu_or_null(s);  // from couchgate's start to its stop
  out["pool_connections_peak"] = metric("couchgate_couchdb_connections_peak");
  out["max_connections"] = config_["fanin"].value("max_connections", 8);
  out["requests"] = metric("couchgate_couchdb_requests_total");
  // How couchgate authenticated (couchdb.auth; cookie unless the phase set it) and its logins
  // (POST /_session), which are among `requests` (issue 18: one login, not Basic per request).
  out["auth"] = config_.contains("couchdb") ? config_["couchdb"].value("auth", "cookie") : "cookie";
  out["logins"] = metric("couchgate_couchdb_logins_total");
  // The revisions written, and of those the ones taken from the _changes body (no _bulk_get).
  out["docs_written"] = metric("couchgate_replicated_docs_total");
  out["docs_inline"] = metric("couchgate_replicated_inline_docs_total");
  out["rss_peak_mb"] = s.rss_peak_kb > 0 || u.hwm_kb > 0 ? json(round_to(static_cast<double>(std::max(s.rss_peak_kb, u.hwm_kb)) / 1024.0, 1)) : json(nullptr);
  out["rss_end_mb"] = u.rss_kb > 0 ? json(round_to(static_cast<double>(u.rss_kb) / 1024.0, 1)) : json(nullptr);
  out["fds_peak"] = s.fds_peak;
  out["cpu_seconds"] = u.cpu_seconds >= 0 ? json(round_to(u.cpu_seconds, 2)) : json(nullptr);
  out["ready_seconds"] = ready_s_ >= 0 ? json(round_to(ready_s_)) : json(nullptr);
  if (st.is_object() && st.contains("fanin")) out["detection"] = st["fanin"].value("detection", "");
  int rc = proc_->running() ? proc_->terminate() : -1000;
  out["exit_status"] = rc;
  if (rc != 0) {
    ctx_.fail(phase + ": couchgate " + (rc == -1000 ? std::string("had already exited") : "exited with " + std::to_string(rc)) +
              " on SIGTERM; log tail:\n" + log_tail(30));
  }
  return out;
}

std::string daemon_run::log_tail(std::size_t lines) const {
  std::string log = proc_->log();
  std::size_t pos = log.size();
  for (std::size_t n = 0; n <= lines && pos > 0; ++n) {
    auto p = log.rfind('\n', pos - 1);
    if (p == std::string::npos) {
      pos = 0;
      break;
    }
    pos = p;
  }
  return log.substr(pos);
}

}  // namespace couchgate::bench
