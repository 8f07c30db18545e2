// Owns: the live-feeds phase's writer (see live_writer.hpp).
#include "tests/bench/live_writer.hpp"

#include "tests/bench/dataset.hpp"

namespace couchgate::bench {

live_writer::live_writer(const std::vector<bench_user>& users) : to_(endpoint::server_admin()), users_(&users) {}

live_writer::live_writer(const std::vector<bench_user>& users, std::string host, int port)
    : via_front_(true), to_(endpoint{std::move(host), port, {}, {}}), users_(&users), cookies_(users.size()) {}

std::string live_writer::login_one(bench_client& c, std::size_t k) {
  const bench_user& u = (*users_)[k];
  c.use_cookie({});
  auto r = c.post("/_session", json{{"name", u.name}, {"password", u.password}}.dump());
  if (r.status != 200) return "POST /_session as " + u.name + " through the front door: " + describe(r);
  if (c.session_cookie().empty()) return "POST /_session as " + u.name + " through the front door: no AuthSession cookie in the answer";
  ++logins_;
  std::lock_guard lk(mu_);
  cookies_[k] = c.session_cookie();
  return "";
}

std::string live_writer::cookie_of(std::size_t k) const {
  std::lock_guard lk(mu_);
  return cookies_[k];
}

std::string live_writer::login(const std::vector<std::size_t>& which, int connections) {
  if (!via_front_) return "";
  client_pool pool = make_clients(connections, to_);
  return parallel_for(static_cast<int>(which.size()), pool,
                      [&](int i, bench_client& c) { return login_one(c, which[static_cast<std::size_t>(i)]); });
}

reply live_writer::put(bench_client& c, std::size_t k, const std::string& id, const std::string& body,
                       const std::function<void()>& starting) {
  if (!via_front_) {
    starting();
    return c.put(db_path((*users_)[k].db) + "/" + id, body);
  }
  reply r;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (attempt > 0) {
      ++renewals_;
      if (auto e = login_one(c, k); !e.empty()) {
        r.status = 401;
        r.raw = "the session expired and logging in again failed: " + e;
        return r;
      }
    }
    c.use_cookie(cookie_of(k));
    starting();
    r = c.put("/me/" + test::enc(id), body);
    if (!c.session_cookie().empty()) {  // CouchDB refreshed the cookie
      std::lock_guard lk(mu_);
      cookies_[k] = c.session_cookie();
    }
    if (r.status != 401) break;
  }
  return r;
}

}  // namespace couchgate::bench
