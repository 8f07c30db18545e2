// Owns: the session cache, the auth-failure limiter and per-user slots (see auth_limits.hpp).
#include "gateway/front/auth_limits.hpp"

#include "policy/naming.hpp"

namespace couchgate::gateway::front {

std::string session_cache::key_of(std::string_view credential) { return policy::sha256_hex(credential); }

std::optional<std::string> session_cache::lookup(const std::string& key, clock_type::time_point now) {
  std::lock_guard lk(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  if (now >= it->second.expires) {
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.user;
}

std::chrono::milliseconds session_cache::ttl() const {
  std::lock_guard lk(mu_);
  return ttl_;
}

std::optional<clock_type::time_point> session_cache::expires(const std::string& key) const {
  std::lock_guard lk(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second.expires;
}

void session_cache::store(const std::string& key, std::string user, clock_type::time_point now) {
  std::lock_guard lk(mu_);
  if (ttl_.count() <= 0) return;
  if (entries_.size() >= max_entries_) {
    std::erase_if(entries_, [now](const auto& kv) { return now >= kv.second.expires; });
    if (entries_.size() >= max_entries_) entries_.clear();  // all live: start over rather than grow
  }
  entries_[key] = entry{std::move(user), now + ttl_};
}

void session_cache::set_ttl(std::chrono::milliseconds ttl) {
  std::lock_guard lk(mu_);
  ttl_ = ttl;
}

void session_cache::forget(const std::string& key) {
  std::lock_guard lk(mu_);
  entries_.erase(key);
}

std::size_t session_cache::size() const {
  std::lock_guard lk(mu_);
  return entries_.size();
}

std::optional<long long> auth_failures::refused(const std::string& address, clock_type::time_point now) {
  std::lock_guard lk(mu_);
  const auto it = slots_.find(address);
  if (it == slots_.end()) return std::nullopt;
  const auto end = it->second.start + window_;
  if (now >= end) {
    slots_.erase(it);
    return std::nullopt;
  }
  if (it->second.failures < limit_) return std::nullopt;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - now).count();
  return std::max<long long>(1, (left + 999) / 1000);
}

void auth_failures::record_failure(const std::string& address, clock_type::time_point now) {
  std::lock_guard lk(mu_);
  if (slots_.size() > 100000) prune(now);
  auto& s = slots_[address];
  if (s.failures == 0 || now >= s.start + window_) s = slot{now, 0};
  ++s.failures;
}

void auth_failures::set_limit(std::size_t limit, std::chrono::milliseconds window) {
  std::lock_guard lk(mu_);
  limit_ = limit;
  window_ = window;
}

void auth_failures::prune(clock_type::time_point now) {
  std::erase_if(slots_, [&](const auto& kv) { return now >= kv.second.start + window_; });
}

bool user_slots::try_acquire(const std::string& user) {
  std::lock_guard lk(mu_);
  auto& n = in_use_[user];
  if (n >= per_user_) return false;
  ++n;
  return true;
}

void user_slots::set_per_user(std::size_t per_user) {
  std::lock_guard lk(mu_);
  per_user_ = per_user;
}

void user_slots::release(const std::string& user) {
  std::lock_guard lk(mu_);
  const auto it = in_use_.find(user);
  if (it == in_use_.end()) return;
  if (--it->second == 0) in_use_.erase(it);
}

}  // namespace couchgate::gateway::front
