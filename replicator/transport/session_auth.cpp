// Owns: cookie authentication in front of a transport (see session_auth.hpp).
#include "replicator/transport/session_auth.hpp"

#include <charconv>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "replicator/logger.hpp"
#include "replicator/transport/header_text.hpp"

namespace couchgate::replicator {

namespace {
std::shared_ptr<spdlog::logger> log() {
  static auto l = named_logger("couchdb");
  return l;
}

}  // namespace

const char* to_string(auth_mode m) {
  switch (m) {
    case auth_mode::cookie: return "cookie";
    case auth_mode::basic: return "basic";
  }
  return "unknown";
}

session_options session_options_for(std::string username, std::string password, auth_mode mode,
                                    std::chrono::milliseconds login_timeout) {
  session_options o;
  o.username = std::move(username);
  o.password = std::move(password);
  o.mode = mode;
  o.login_timeout = login_timeout;
  return o;
}

std::optional<session_cookie> parse_session_cookie(std::string_view set_cookie) {
  set_cookie = trim_ows(set_cookie);
  constexpr std::string_view name = "AuthSession=";
  if (!set_cookie.starts_with(name)) return std::nullopt;
  const auto semi = set_cookie.find(';');
  std::string_view pair = trim_ows(set_cookie.substr(0, semi));
  if (pair.size() == name.size()) return std::nullopt;  // "AuthSession=": the server ended the session
  for (char c : pair) {
    if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f) return std::nullopt;  // no header injection
  }
  session_cookie out;
  out.cookie.assign(pair);
  std::string_view rest = semi == std::string_view::npos ? std::string_view() : set_cookie.substr(semi + 1);
  while (!rest.empty()) {
    const auto next = rest.find(';');
    std::string_view attr = trim_ows(rest.substr(0, next));
    rest = next == std::string_view::npos ? std::string_view() : rest.substr(next + 1);
    if (!starts_with_ascii_ci(attr, "max-age=")) continue;
    std::string_view v = attr.substr(8);
    long long secs = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), secs);
    if (ec == std::errc() && p == v.data() + v.size() && secs >= 0) out.max_age = std::chrono::seconds(secs);
  }
  if (out.max_age && out.max_age->count() == 0) return std::nullopt;  // expired at once
  return out;
}

std::string basic_authorization(std::string_view user, std::string_view password) {
  static constexpr char table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string in;
  in.reserve(user.size() + 1 + password.size());
  in.append(user).append(1, ':').append(password);
  std::string out = "Basic ";
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    for (int s : {18, 12, 6, 0}) out += table[(v >> s) & 63];
  }
  if (i < in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += i + 1 < in.size() ? table[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

session_auth::session_auth(transport& inner, session_options opts)
    : inner_(inner), opts_(std::move(opts)), basic_(basic_authorization(opts_.username, opts_.password)) {
  if (!opts_.now) opts_.now = [] { return std::chrono::steady_clock::now(); };
  if (opts_.mode == auth_mode::basic) phase_ = phase::basic;
}

session_stats session_auth::stats() const {
  std::lock_guard lk(mu_);
  session_stats s = stats_;
  s.cookie = phase_ == phase::session;
  s.basic_fallback = phase_ == phase::basic && opts_.mode == auth_mode::cookie;
  return s;
}

void session_auth::submit(http_request req, callback done) {
  if (opts_.username.empty()) {
    inner_.submit(std::move(req), std::move(done));
    return;
  }
  bool login = false;
  bool queued = false;
  {
    std::lock_guard lk(mu_);
    const auto now = opts_.now();
    if (phase_ == phase::session && now >= expires_at_) phase_ = phase::no_session;
    switch (phase_) {
      case phase::basic:
        req.authorization = basic_;
        break;
      case phase::session:
        // Past half its life: a new login in the background; this request still uses the
        // cookie it has, which is valid for a while yet.
        if (now >= renew_at_ && !login_in_flight_) login = login_in_flight_ = true;
        req.cookie = cookie_;
        req.cookie_may_be_stale = true;
        break;
      case phase::no_session:
        waiting_.push_back(waiting{std::move(req), std::move(done), false});
        queued = true;
        if (!login_in_flight_) login = login_in_flight_ = true;
        break;
    }
  }
  if (login) start_login();
  if (!queued) send(std::move(req), std::move(done), false);
}

void session_auth::send(http_request req, callback done, bool retried) {
  http_request copy = req;  // the body is shared, not copied
  inner_.submit(std::move(copy), [this, req = std::move(req), done = std::move(done), retried](http_response r) mutable {
    on_answer(std::move(req), std::move(done), retried, std::move(r));
  });
}

void session_auth::start_login() {
  http_request login;
  login.method = "POST";
  login.target = "/_session";
  login.set_body(nlohmann::json{{"name", opts_.username}, {"password", opts_.password}}.dump());
  login.timeout = opts_.login_timeout;
  {
    std::lock_guard lk(mu_);
    ++stats_.logins;
  }
  inner_.submit(std::move(login), [this](http_response r) { on_login(std::move(r)); });
}

void session_auth::adopt(const std::string& set_cookie) {
  auto c = parse_session_cookie(set_cookie);
  if (!c || opts_.mode == auth_mode::basic) return;
  const auto now = opts_.now();
  const std::chrono::steady_clock::duration life = c->max_age ? *c->max_age : opts_.lifetime;
  cookie_ = std::move(c->cookie);
  renew_at_ = now + life / 2;
  expires_at_ = now + life * 9 / 10;  // the server's clock started a little earlier
  phase_ = phase::session;
}

void session_auth::on_login(http_response r) {
  std::deque<waiting> ready;
  bool failed = false;
  {
    std::lock_guard lk(mu_);
    login_in_flight_ = false;
    const bool first = stats_.logins == 1;
    auto cookie = r.ok() ? parse_session_cookie(r.set_cookie) : std::nullopt;
    if (cookie) {
      adopt(r.set_cookie);
      if (first) log()->info("logged in to CouchDB as {}: requests carry a session cookie (renewed before it expires)", opts_.username);
    } else if (r.ok() || (r.transport_ok() && (r.status == 400 || r.status == 404 || r.status == 405 || r.status == 501))) {
      // No cookie authentication there: Basic on every request, as without this layer.
      if (phase_ != phase::basic) {
        log()->warn("CouchDB has no cookie authentication (POST /_session answered HTTP {}{}); couchgate sends Basic "
                    "authentication with every request",
                    r.status, r.ok() ? " without an AuthSession cookie" : "");
      }
      phase_ = phase::basic;
    } else if (phase_ == phase::session && opts_.now() < expires_at_) {
      // A renewal in the background failed; the cookie in use is still good. Try again later,
      // not at every request.
      const auto now = opts_.now();
      renew_at_ = now + std::min<std::chrono::steady_clock::duration>(std::chrono::seconds(30), (expires_at_ - now) / 2);
    } else {
      failed = true;  // the waiting requests get the login's answer (a refusal, the hold, an outage)
      phase_ = phase::no_session;
    }
    ready.swap(waiting_);
  }
  for (auto& w : ready) {
    if (failed) {
      if (w.done) w.done(r);
      continue;
    }
    {
      std::lock_guard lk(mu_);
      if (phase_ == phase::basic) {
        w.req.authorization = basic_;
        w.req.cookie.clear();
        w.req.cookie_may_be_stale = false;
      } else {
        w.req.cookie = cookie_;
        w.req.authorization.clear();
        // A request sent again after a 401 takes the next 401 as the answer (the credential
        // itself is then refused: the pool's gate holds it).
        w.req.cookie_may_be_stale = !w.retried;
      }
    }
    send(std::move(w.req), std::move(w.done), w.retried);
  }
}

void session_auth::on_answer(http_request req, callback done, bool retried, http_response r) {
  bool login = false;
  bool resend = false;
  bool queued = false;
  {
    std::lock_guard lk(mu_);
    if (!r.set_cookie.empty() && phase_ != phase::basic) {
      adopt(r.set_cookie);
      ++stats_.renewals;
    }
    const bool stale = r.transport_ok() && r.status == 401 && !req.cookie.empty() && !retried;
    if (stale) {
      ++stats_.retried;
      if (phase_ == phase::basic) {
        req.cookie.clear();
        req.cookie_may_be_stale = false;
        req.authorization = basic_;
        resend = true;
      } else if (phase_ == phase::session && cookie_ != req.cookie && opts_.now() < expires_at_) {
        // Renewed meanwhile: send it again with the new cookie.
        req.cookie = cookie_;
        req.cookie_may_be_stale = false;
        resend = true;
      } else {
        if (phase_ == phase::session && cookie_ == req.cookie) phase_ = phase::no_session;
        waiting_.push_back(waiting{std::move(req), std::move(done), true});
        queued = true;
        if (!login_in_flight_) login = login_in_flight_ = true;
      }
    }
  }
  if (login) start_login();
  if (resend) {
    send(std::move(req), std::move(done), true);
  } else if (!queued && done) {
    done(std::move(r));
  }
}

}  // namespace couchgate::replicator
