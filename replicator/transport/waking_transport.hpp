#pragma once
// Owns: telling a waiting thread that an answer arrived. waking_transport sits in front of
// another transport (transport.hpp) and rings a doorbell after each answer is handed over, so a
// thread driving many requests (the provisioner's `_users` pipeline) sleeps until one of them is
// answered instead of looking at them on a fixed interval. The doorbell is shared: an answer
// that comes after its waiter is gone (a longpoll ended at shutdown) rings nobody, safely.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

#include "replicator/transport/transport.hpp"

namespace couchgate::replicator {

class doorbell {
 public:
  std::uint64_t rings() const {
    std::lock_guard lk(mu_);
    return rings_;
  }
  // From any thread (the submitting one included: it must not hold the waiter's locks).
  void ring() {
    {
      std::lock_guard lk(mu_);
      ++rings_;
    }
    cv_.notify_all();
  }
  // Waits until rung after `seen` (a value of rings() read before looking at the work), or until
  // `until`. No ring between that read and the wait is lost.
  void wait(std::uint64_t seen, std::chrono::steady_clock::time_point until) {
    std::unique_lock lk(mu_);
    // Bounded, so that a far `until` (time_point::max) cannot overflow the clock's arithmetic.
    const auto cap = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    cv_.wait_until(lk, std::min(until, cap), [&] { return rings_ != seen; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t rings_ = 0;
};

class waking_transport final : public transport {
 public:
  waking_transport(transport& next, std::shared_ptr<doorbell> bell) : next_(next), bell_(std::move(bell)) {}
  void submit(http_request req, callback done) override {
    next_.submit(std::move(req), [done = std::move(done), bell = bell_](http_response r) {
      done(std::move(r));
      bell->ring();
    });
  }

 private:
  transport& next_;
  std::shared_ptr<doorbell> bell_;
};

}  // namespace couchgate::replicator
