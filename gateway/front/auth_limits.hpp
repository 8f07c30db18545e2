#pragma once
// Owns: the front door's per-client bookkeeping that decides refusals, with an injected clock:
//  - session_cache: what CouchDB's GET /_session proved for a credential (the user name), kept
//    under a SHA-256 of the credential (never the credential) for its ttl, at most max_entries
//    of them (the least recently used goes first). The forwarder keeps two: the short-lived one
//    every request trusts (front.session_cache_ttl), and the long-lived route memo that only a
//    re-issued live feed trusts to find its database (front.route_cache_ttl), since each of its
//    `_changes` reads carries the credential itself and CouchDB refuses it there;
//  - auth_failures: failed authentications per client address in a fixed window (429 above the
//    limit, with the seconds until the window ends);
//  - user_slots: concurrent requests per user; beyond the cap a request waits in the user's FIFO
//    queue (bounded length; the caller bounds the wait) instead of being refused at once.
// Thread-safe (one mutex each): the I/O threads share them.
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace couchgate::gateway::front {

using clock_type = std::chrono::steady_clock;

class session_cache {
 public:
  session_cache(std::chrono::milliseconds ttl, std::size_t max_entries) : ttl_(ttl), max_entries_(max_entries) {}
  // The key for a credential (Authorization value and AuthSession cookie, as sent).
  static std::string key_of(std::string_view credential);
  std::optional<std::string> lookup(const std::string& key, clock_type::time_point now);
  // SIGHUP: entries stored from now on live this long (0 = no caching).
  void set_ttl(std::chrono::milliseconds ttl);
  // When what is cached for `key` stops counting (a parked feed re-validates then); nullopt: nothing cached.
  std::optional<clock_type::time_point> expires(const std::string& key) const;
  std::chrono::milliseconds ttl() const;
  void store(const std::string& key, std::string user, clock_type::time_point now);
  // CouchDB refused a cached credential (password changed, session expired): ask again next time.
  void forget(const std::string& key);
  // `user`'s `_users` document changed (a new password, say): every credential cached as theirs
  // and stored up to `until` (at least now) is asked about again. O(1): a mark per changed user,
  // compared with an entry's store time when it is looked up, and dropped once every entry it
  // can match is gone.
  void forget_user(const std::string& user, clock_type::time_point until, clock_type::time_point now);
  std::size_t size() const;
  std::size_t user_marks() const;  // forget_user() marks kept (bounded: see forget_user)

 private:
  struct entry {
    std::string key;
    std::string user;
    clock_type::time_point stored;
    clock_type::time_point expires;
  };
  // Whether `e` was stored before its user's last change (under mu_).
  bool outdated(const entry& e) const;
  using lru_list = std::list<entry>;  // most recently used first
  std::chrono::milliseconds ttl_;
  std::size_t max_entries_;
  mutable std::mutex mu_;
  lru_list order_;
  std::unordered_map<std::string, lru_list::iterator> entries_;
  std::unordered_map<std::string, clock_type::time_point> changed_;  // user -> when forget_user() was told
  std::chrono::milliseconds longest_ttl_{0};  // of every ttl entries were stored with
  std::size_t prune_at_ = 64;                 // changed_'s size at which old marks are dropped
};

class auth_failures {
 public:
  auth_failures(std::size_t limit, std::chrono::milliseconds window) : limit_(limit), window_(window) {}
  // Seconds to wait (at least 1) when address has reached the limit in its current window.
  std::optional<long long> refused(const std::string& address, clock_type::time_point now);
  void record_failure(const std::string& address, clock_type::time_point now);
  // SIGHUP: the new limit applies at once; a running window keeps its start.
  void set_limit(std::size_t limit, std::chrono::milliseconds window);

 private:
  struct slot {
    clock_type::time_point start;
    std::size_t failures = 0;
  };
  void prune(clock_type::time_point now);
  std::size_t limit_;
  std::chrono::milliseconds window_;
  std::mutex mu_;
  std::unordered_map<std::string, slot> slots_;
};

class user_slots {
 public:
  // One queued request. `granted` is set under the lock when a released slot passes to it, and
  // wake() is then called (outside the lock) to resume it.
  struct waiter {
    std::function<void()> wake;
    bool granted = false;
  };
  enum class admission { granted, queued, refused };

  user_slots(std::size_t per_user, std::size_t queue_length) : per_user_(per_user), queue_length_(queue_length) {}
  // A slot now (granted), a place at the end of the user's queue (queued: wait for wake(), then
  // call abandon() on the deadline), or neither when the queue is full (refused).
  admission acquire(const std::string& user, const std::shared_ptr<waiter>& w);
  // Returns a slot: the user's first waiter gets it, else it is free again.
  void release(const std::string& user);
  // The waiter gives up (deadline): true when it was still queued and is now gone; false when a
  // slot was granted to it meanwhile (the caller holds it and must release it).
  bool abandon(const std::string& user, const std::shared_ptr<waiter>& w);
  std::size_t queued() const;  // requests waiting, over all users
  // SIGHUP: requests in flight above a lowered cap finish; a raised cap lets queued ones in.
  void set_per_user(std::size_t per_user);

 private:
  struct user_state {
    std::size_t in_use = 0;
    std::deque<std::shared_ptr<waiter>> queue;
  };
  std::size_t per_user_;
  std::size_t queue_length_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, user_state> users_;
  std::size_t queued_ = 0;
};

}  // namespace couchgate::gateway::front
