#pragma once
// Owns: the front door's per-client bookkeeping that decides refusals, with an injected clock:
//  - session_cache: what CouchDB's GET /_session proved for a credential (the user name), kept
//    under a SHA-256 of the credential (never the credential) for a short time;
//  - auth_failures: failed authentications per client address in a fixed window (429 above the
//    limit, with the seconds until the window ends);
//  - user_slots: concurrent requests per user (429 above the cap).
// Thread-safe (one mutex each): the I/O threads share them.
#include <chrono>
#include <cstddef>
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
  std::size_t size() const;

 private:
  struct entry {
    std::string user;
    clock_type::time_point expires;
  };
  std::chrono::milliseconds ttl_;
  std::size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, entry> entries_;
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
  explicit user_slots(std::size_t per_user) : per_user_(per_user) {}
  bool try_acquire(const std::string& user);
  void release(const std::string& user);
  // SIGHUP: requests in flight above a lowered cap finish; new ones wait for the count to drop.
  void set_per_user(std::size_t per_user);

 private:
  std::size_t per_user_;
  std::mutex mu_;
  std::unordered_map<std::string, std::size_t> in_use_;
};

}  // namespace couchgate::gateway::front
