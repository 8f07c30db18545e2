// Owns: metric storage and Prometheus exposition (see metrics.hpp).
#include "replicator/metrics.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace couchgate::replicator {

namespace {
void atomic_max(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}
}  // namespace

std::string prometheus_number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Whole numbers (counts, sockets, bytes) as integers: "10", not the shorter "1e+01".
  if (std::trunc(v) == v && std::fabs(v) < 1e15) {
    char whole[32];
    std::snprintf(whole, sizeof whole, "%.0f", v == 0 ? 0.0 : v);
    return whole;
  }
  // Shortest text that reads back as the same double: "0.1", not "0.10000000000000001"
  // (Prometheus matches `le` labels as strings).
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

void histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double cur = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(cur, cur + seconds, std::memory_order_relaxed)) {
  }
  atomic_max(max_, seconds);
}

double histogram::quantile(double q) const {
  std::uint64_t total = count();
  if (total == 0) return 0;
  double rank = q * static_cast<double>(total);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    std::uint64_t n = buckets_[i].load(std::memory_order_relaxed);
    if (n > 0 && static_cast<double>(seen + n) >= rank) {
      double lo = i == 0 ? 0 : bounds[i - 1];
      double hi = i < bounds.size() ? bounds[i] : max();
      double frac = (rank - static_cast<double>(seen)) / static_cast<double>(n);
      double v = lo + (hi - lo) * frac;
      return std::min(v, max());
    }
    seen += n;
  }
  return max();
}

void histogram::render(std::string& out, const std::string& name) const {
  std::uint64_t cum = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    cum += buckets_[i].load(std::memory_order_relaxed);
    std::string le = i < bounds.size() ? prometheus_number(bounds[i]) : "+Inf";
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cum) + "\n";
  }
  out += name + "_sum " + prometheus_number(sum_.load()) + "\n";
  out += name + "_count " + std::to_string(count()) + "\n";
}

counter& registry::add_counter(const std::string& name, const std::string& help, const std::string& labels) {
  std::lock_guard lk(mu_);
  auto& f = families_[name];
  f.help = help;
  f.type = "counter";
  f.counters.emplace_back(labels, std::make_unique<counter>());
  return *f.counters.back().second;
}

gauge& registry::add_gauge(const std::string& name, const std::string& help, const std::string& labels) {
  std::lock_guard lk(mu_);
  auto& f = families_[name];
  f.help = help;
  f.type = "gauge";
  f.gauges.emplace_back(labels, std::make_unique<gauge>());
  return *f.gauges.back().second;
}

histogram& registry::add_histogram(const std::string& name, const std::string& help) {
  std::lock_guard lk(mu_);
  auto& f = families_[name];
  f.help = help;
  f.type = "histogram";
  f.hist = std::make_unique<histogram>();
  return *f.hist;
}

void registry::add_callback(const std::string& name, const std::string& help, std::function<double()> fn) {
  std::lock_guard lk(mu_);
  auto& f = families_[name];
  f.help = help;
  f.type = "gauge";
  f.fn = std::move(fn);
}

void registry::add_counter_callback(const std::string& name, const std::string& help, std::function<double()> fn) {
  std::lock_guard lk(mu_);
  auto& f = families_[name];
  f.help = help;
  f.type = "counter";
  f.fn = std::move(fn);
}

std::string registry::render() const {
  std::lock_guard lk(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    auto label = [](const std::string& l) { return l.empty() ? std::string() : "{" + l + "}"; };
    for (const auto& [l, c] : f.counters) out += name + label(l) + " " + std::to_string(c->value()) + "\n";
    for (const auto& [l, g] : f.gauges) out += name + label(l) + " " + prometheus_number(g->value()) + "\n";
    if (f.hist) f.hist->render(out, name);
    if (f.fn) out += name + " " + prometheus_number(f.fn()) + "\n";
  }
  return out;
}

}  // namespace couchgate::replicator
