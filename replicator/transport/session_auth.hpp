#pragma once
// Owns: how couchgate proves who it is to CouchDB. A transport in front of another (http_pool):
// one `POST /_session` with the configured name and password, then CouchDB's AuthSession cookie
// on every request instead of Basic (CouchDB checks a cookie's HMAC, cheaper than a password
// hash per request: issue 18 measured 10% of the server's CPU per `_changes`).
//
// - The cookie is renewed before it expires: CouchDB sends a refreshed Set-Cookie once a tenth of
//   the session's lifetime has passed, and every one is adopted; without one, a new login starts
//   at half the lifetime (Max-Age, or `lifetime` when the cookie has none: CouchDB's
//   [chttpd_auth] timeout, 600 s by default), while requests go on with the old cookie.
// - A 401 to a request that carried a cookie (an expired or revoked session) makes one new login
//   (shared by every request that met the same stale cookie), then the request is sent once
//   more; a second 401 is the answer. A refused login (401) is http_pool's credential hold
//   (server_gate.hpp): the requests waiting for it fail with its answer, and the next login is
//   refused unsent until the hold ends, so a wrong password never becomes a storm of logins.
// - A server without cookie authentication (`/_session` answers 404, 405, 400, or 2xx without an
//   AuthSession cookie) gets Basic on every request, as before; said once in the log.
// - mode basic: Basic on every request, no login at all.
// Credentials and cookies are never logged, nor put in an error text.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "replicator/transport/transport.hpp"

namespace couchgate::replicator {

enum class auth_mode { cookie, basic };
const char* to_string(auth_mode m);

struct session_options {
  std::string username;  // empty: anonymous, requests pass through untouched
  std::string password;
  auth_mode mode = auth_mode::cookie;
  std::chrono::seconds lifetime{600};  // a session's lifetime when the cookie has no Max-Age
  std::chrono::milliseconds login_timeout{30000};
  std::function<std::chrono::steady_clock::time_point()> now = [] { return std::chrono::steady_clock::now(); };
};

// The options for a configured credential (the rest at their defaults).
session_options session_options_for(std::string username, std::string password, auth_mode mode,
                                    std::chrono::milliseconds login_timeout);

// `Set-Cookie: AuthSession=<v>; ...; Max-Age=<n>` -> the Cookie header's value ("AuthSession=<v>")
// and the Max-Age; nullopt when it is not a (non-empty) AuthSession cookie.
struct session_cookie {
  std::string cookie;
  std::optional<std::chrono::seconds> max_age;
};
std::optional<session_cookie> parse_session_cookie(std::string_view set_cookie);

// "Basic " + base64(user ":" password).
std::string basic_authorization(std::string_view user, std::string_view password);

struct session_stats {
  std::uint64_t logins = 0;          // POST /_session sent
  std::uint64_t renewals = 0;        // refreshed cookies adopted from answers
  std::uint64_t retried = 0;         // requests sent again after a 401 and a new login
  bool cookie = false;               // a session cookie is in use
  bool basic_fallback = false;       // the server has no cookie authentication: Basic
};

class session_auth final : public transport {
 public:
  session_auth(transport& inner, session_options opts);
  void submit(http_request req, callback done) override;
  session_stats stats() const;

 private:
  struct waiting {
    http_request req;
    callback done;
    bool retried = false;
  };
  void send(http_request req, callback done, bool retried);  // with the credential in force
  void start_login();                                        // mu_ held; one at a time
  void on_login(http_response r);
  void adopt(const std::string& set_cookie);                 // mu_ held
  void on_answer(http_request req, callback done, bool retried, http_response r);

  transport& inner_;
  session_options opts_;
  mutable std::mutex mu_;
  enum class phase { no_session, session, basic } phase_ = phase::no_session;  // guarded by mu_
  std::string cookie_;                                     // guarded by mu_; a secret
  std::chrono::steady_clock::time_point renew_at_{};       // guarded by mu_
  std::chrono::steady_clock::time_point expires_at_{};     // guarded by mu_
  bool login_in_flight_ = false;                           // guarded by mu_
  std::deque<waiting> waiting_;                            // guarded by mu_: for the login
  session_stats stats_;                                    // guarded by mu_
  std::string basic_;                                      // the Basic header, built once
};

}  // namespace couchgate::replicator
