#pragma once
// Owns: the "please stop" signal of a worker thread, which its sleeps (backoff, pacing) wake up
// for, so stopping never waits out a backoff.
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace couchgate::replicator {

class stop_flag {
 public:
  void request() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
  }
  void reset() {
    std::lock_guard lk(mu_);
    stop_ = false;
  }
  bool requested() const {
    std::lock_guard lk(mu_);
    return stop_;
  }
  // Sleeps for d unless a stop is requested; false when it was.
  bool sleep_for(std::chrono::milliseconds d) {
    std::unique_lock lk(mu_);
    return !cv_.wait_for(lk, d, [this] { return stop_; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace couchgate::replicator
