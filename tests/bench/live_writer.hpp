#pragma once
// Owns: where the live-feeds phase's writer (issue #14) sends a user's document:
//   server - `PUT /{db}/<id>` straight to the server, as its admin;
//   front  - `PUT /me/<id>` through couchgate's front door, as the database's own user, with an
//            AuthSession cookie from one `POST /_session` per user (through the front door too)
//            instead of Basic on every write: CouchDB 3.5 hashes passwords with PBKDF2 at
//            600 000 iterations, which would make every write a server-CPU figure. A cookie
//            CouchDB refreshes (Set-Cookie on a write) replaces the one kept; a write answered
//            401 (the cookie expired) logs the user in again and is sent once more.
// Cookies never leave this object: not in messages, not in the results.
#include <atomic>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "tests/bench/client.hpp"
#include "tests/bench/users.hpp"

namespace couchgate::bench {

class live_writer {
 public:
  // Into the databases of `users` (which must outlive this), straight to the server as its admin.
  explicit live_writer(const std::vector<bench_user>& users);
  // The same through the front door at host:port, as each user.
  live_writer(const std::vector<bench_user>& users, std::string host, int port);

  bool via_front() const { return via_front_; }
  // What paced_for's connections connect to.
  const endpoint& to() const { return to_; }

  // Through the front door: one `POST /_session` for each user in `which` (indexes into users),
  // over `connections` keep-alive connections. "" or the first error. Nothing to do straight
  // to the server.
  std::string login(const std::vector<std::size_t>& which, int connections);

  // Writes document `id` with `body` into user k's database over c (a connection to to()).
  // `starting` is called right before each PUT is sent (a write retried after a fresh login is
  // timed from its second PUT).
  reply put(bench_client& c, std::size_t k, const std::string& id, const std::string& body,
            const std::function<void()>& starting);

  std::size_t logins() const { return logins_.load(); }
  std::size_t renewals() const { return renewals_.load(); }  // logins again after a 401

 private:
  std::string login_one(bench_client& c, std::size_t k);
  std::string cookie_of(std::size_t k) const;

  bool via_front_ = false;
  endpoint to_;
  const std::vector<bench_user>* users_ = nullptr;
  mutable std::mutex mu_;
  std::vector<std::string> cookies_;  // by user index; "" = not logged in
  std::atomic<std::size_t> logins_{0}, renewals_{0};
};

}  // namespace couchgate::bench
