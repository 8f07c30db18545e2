// Owns: the session cache, the auth-failure limiter and per-user slots (see auth_limits.hpp).
#include "gateway/front/auth_limits.hpp"

#include <algorithm>
#include <vector>

#include "policy/naming.hpp"

namespace couchgate::gateway::front {

std::string session_cache::key_of(std::string_view credential) { return policy::sha256_hex(credential); }

std::optional<std::string> session_cache::lookup(const std::string& key, clock_type::time_point now) {
  std::lock_guard lk(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  if (now >= it->second->expires || outdated(*it->second)) {
    order_.erase(it->second);
    entries_.erase(it);
    return std::nullopt;
  }
  order_.splice(order_.begin(), order_, it->second);
  return it->second->user;
}

std::chrono::milliseconds session_cache::ttl() const {
  std::lock_guard lk(mu_);
  return ttl_;
}

std::optional<clock_type::time_point> session_cache::expires(const std::string& key) const {
  std::lock_guard lk(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end() || outdated(*it->second)) return std::nullopt;
  return it->second->expires;
}

bool session_cache::outdated(const entry& e) const {
  const auto c = changed_.find(e.user);
  return c != changed_.end() && e.stored <= c->second;
}

void session_cache::forget_user(const std::string& user, clock_type::time_point until, clock_type::time_point now) {
  std::lock_guard lk(mu_);
  auto& mark = changed_[user];
  mark = std::max(mark, until);
  // A mark older than the longest ttl matches no entry still alive: dropped (amortised O(1)).
  if (changed_.size() >= prune_at_) {
    std::erase_if(changed_, [&](const auto& m) { return m.second + longest_ttl_ < now; });
    prune_at_ = std::max<std::size_t>(64, 2 * changed_.size());
  }
}

void session_cache::store(const std::string& key, std::string user, clock_type::time_point now) {
  std::lock_guard lk(mu_);
  if (ttl_.count() <= 0 || max_entries_ == 0) return;
  longest_ttl_ = std::max(longest_ttl_, ttl_);
  if (const auto it = entries_.find(key); it != entries_.end()) {
    it->second->user = std::move(user);
    it->second->stored = now;
    it->second->expires = now + ttl_;
    order_.splice(order_.begin(), order_, it->second);
    return;
  }
  while (entries_.size() >= max_entries_) {  // full: the least recently used goes
    entries_.erase(order_.back().key);
    order_.pop_back();
  }
  order_.push_front(entry{key, std::move(user), now, now + ttl_});
  entries_.emplace(key, order_.begin());
}

void session_cache::set_ttl(std::chrono::milliseconds ttl) {
  std::lock_guard lk(mu_);
  ttl_ = ttl;
}

void session_cache::forget(const std::string& key) {
  std::lock_guard lk(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end()) return;
  order_.erase(it->second);
  entries_.erase(it);
}

std::size_t session_cache::size() const {
  std::lock_guard lk(mu_);
  return entries_.size();
}

std::size_t session_cache::user_marks() const {
  std::lock_guard lk(mu_);
  return changed_.size();
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

user_slots::admission user_slots::acquire(const std::string& user, const std::shared_ptr<waiter>& w) {
  std::lock_guard lk(mu_);
  auto& u = users_[user];
  if (u.in_use < per_user_ && u.queue.empty()) {
    ++u.in_use;
    return admission::granted;
  }
  if (u.queue.size() >= queue_length_) {
    if (u.in_use == 0 && u.queue.empty()) users_.erase(user);
    return admission::refused;
  }
  u.queue.push_back(w);
  ++queued_;
  return admission::queued;
}

void user_slots::set_per_user(std::size_t per_user) {
  std::vector<std::shared_ptr<waiter>> woken;
  {
    std::lock_guard lk(mu_);
    per_user_ = per_user;
    for (auto& [name, u] : users_) {  // a raised cap: the first in line come in now
      while (u.in_use < per_user_ && !u.queue.empty()) {
        woken.push_back(std::move(u.queue.front()));
        u.queue.pop_front();
        --queued_;
        ++u.in_use;
        woken.back()->granted = true;
      }
    }
  }
  for (const auto& w : woken) {
    if (w->wake) w->wake();
  }
}

void user_slots::release(const std::string& user) {
  std::shared_ptr<waiter> next;
  {
    std::lock_guard lk(mu_);
    const auto it = users_.find(user);
    if (it == users_.end()) return;
    auto& u = it->second;
    if (!u.queue.empty() && u.in_use <= per_user_) {  // the slot passes on: in_use stays
      next = std::move(u.queue.front());
      u.queue.pop_front();
      --queued_;
      next->granted = true;
    } else if (--u.in_use == 0) {
      users_.erase(it);
    }
  }
  if (next && next->wake) next->wake();
}

bool user_slots::abandon(const std::string& user, const std::shared_ptr<waiter>& w) {
  std::lock_guard lk(mu_);
  if (w->granted) return false;
  const auto it = users_.find(user);
  if (it == users_.end()) return true;
  auto& q = it->second.queue;
  const auto pos = std::find(q.begin(), q.end(), w);
  if (pos != q.end()) {
    q.erase(pos);
    --queued_;
  }
  if (it->second.in_use == 0 && q.empty()) users_.erase(it);
  return true;
}

std::size_t user_slots::queued() const {
  std::lock_guard lk(mu_);
  return queued_;
}

}  // namespace couchgate::gateway::front
