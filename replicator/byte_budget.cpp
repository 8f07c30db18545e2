// Owns: the bytes-in-flight bound (see byte_budget.hpp).
#include "replicator/byte_budget.hpp"

#include <algorithm>

namespace couchgate::replicator {

byte_budget::lease& byte_budget::lease::operator=(lease&& o) noexcept {
  if (this != &o) {
    release();
    owner_ = o.owner_;
    bytes_ = o.bytes_;
    o.owner_ = nullptr;
  }
  return *this;
}

void byte_budget::lease::release() {
  if (owner_) owner_->give_back(bytes_);
  owner_ = nullptr;
}

byte_budget::lease byte_budget::acquire(std::size_t bytes) {
  std::unique_lock lk(mu_);
  if (!admissible(bytes)) {
    ++waits_;
    cv_.wait(lk, [&] { return admissible(bytes); });
  }
  in_use_ += bytes;
  peak_ = std::max(peak_, in_use_);
  return lease(this, bytes);
}

bool byte_budget::fits(std::size_t bytes) const {
  std::lock_guard lk(mu_);
  return admissible(bytes);
}

void byte_budget::give_back(std::size_t bytes) {
  {
    std::lock_guard lk(mu_);
    in_use_ -= std::min(bytes, in_use_);
  }
  cv_.notify_all();
}

std::size_t byte_budget::in_use() const {
  std::lock_guard lk(mu_);
  return in_use_;
}

std::size_t byte_budget::peak() const {
  std::lock_guard lk(mu_);
  return peak_;
}

std::uint64_t byte_budget::waits() const {
  std::lock_guard lk(mu_);
  return waits_;
}

}  // namespace couchgate::replicator
