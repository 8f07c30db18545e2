#pragma once
// Owns: the process's counters, gauges and histograms, and their Prometheus text rendering.
// Lock-free on the hot path (atomics); registration happens once at startup.
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace couchgate::replicator {

// A number as Prometheus text: the shortest form that reads back as the same double ("0.1"), and
// +Inf / -Inf (`le` labels are matched as strings).
std::string prometheus_number(double v);

class counter {
 public:
  void inc(std::uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class gauge {
 public:
  void set(double v) { v_.store(v, std::memory_order_relaxed); }
  void add(double d) {
    double cur = v_.load(std::memory_order_relaxed);
    while (!v_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
    }
  }
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

// Fixed buckets (seconds). quantile() interpolates inside the bucket that holds it.
class histogram {
 public:
  static constexpr std::array<double, 16> bounds{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                 2.5, 5, 10, 30, 60, 300, 900, 3600};
  void observe(double seconds);
  double quantile(double q) const;
  double max() const { return max_.load(std::memory_order_relaxed); }
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  void render(std::string& out, const std::string& name) const;

 private:
  std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<double> sum_{0}, max_{0};
};

class registry {
 public:
  counter& add_counter(const std::string& name, const std::string& help, const std::string& labels = {});
  gauge& add_gauge(const std::string& name, const std::string& help, const std::string& labels = {});
  histogram& add_histogram(const std::string& name, const std::string& help);
  // A gauge computed when scraped.
  void add_callback(const std::string& name, const std::string& help, std::function<double()> fn);
  // A counter read when scraped (a cumulative count kept elsewhere); `name` ends in _total.
  void add_counter_callback(const std::string& name, const std::string& help, std::function<double()> fn);
  std::string render() const;

 private:
  struct family {
    std::string help, type;
    std::vector<std::pair<std::string, std::unique_ptr<counter>>> counters;
    std::vector<std::pair<std::string, std::unique_ptr<gauge>>> gauges;
    std::unique_ptr<histogram> hist;
    std::function<double()> fn;
  };
  mutable std::mutex mu_;
  std::map<std::string, family> families_;
};

}  // namespace couchgate::replicator
