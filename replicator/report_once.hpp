#pragma once
// Owns: remembering which problems were already reported, so that hostile data read again and
// again (a malformed `_users` document seen by every reconcile pass and by the feed) is logged
// once and counted once while it lasts. A problem is a key (a document id) and what is wrong
// with it: the same key with another problem, or again after forget(key), is new. Bounded: past
// `limit` keys it starts over (a problem may then be reported a second time, never lost).
// Thread-safe.
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace couchgate::replicator {

class report_once {
 public:
  explicit report_once(std::size_t limit = 100000) : limit_(limit) {}
  // True when `key` with `problem` was not reported yet (the caller logs and counts it then).
  bool first(const std::string& key, const std::string& problem) {
    std::lock_guard lk(mu_);
    auto it = seen_.find(key);
    if (it != seen_.end() && it->second == problem) return false;
    if (it == seen_.end() && seen_.size() >= limit_) seen_.clear();
    seen_[key] = problem;
    return true;
  }
  // `key` is fine now: a later problem with it is reported again.
  void forget(const std::string& key) {
    std::lock_guard lk(mu_);
    seen_.erase(key);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::string> seen_;
  std::size_t limit_;
};

}  // namespace couchgate::replicator
