// http_pool's credential gate and session cookies, against a local HTTP server (cpp-httplib on
// 127.0.0.1, a free port): a 401 to a request whose session cookie may be stale is no verdict on
// the credential; a 401 to the login is. The Cookie and Set-Cookie headers pass through.
#include <doctest/doctest.h>
#include <httplib.h>

#include <atomic>
#include <string>
#include <thread>

#include "replicator/transport/http_pool.hpp"
#include "replicator/transport/session_auth.hpp"

namespace r = couchgate::replicator;

namespace {
struct local_server {
  httplib::Server srv;
  int port = 0;
  std::thread th;
  std::atomic<int> logins{0}, with_cookie{0}, with_basic{0};
  std::atomic<bool> refuse_login{false};
  local_server() {
    srv.Post("/_session", [this](const httplib::Request&, httplib::Response& res) {
      ++logins;
      if (refuse_login.load()) {
        res.status = 401;
        res.set_content(R"({"error":"unauthorized","reason":"Name or password is incorrect."})", "application/json");
        return;
      }
      res.set_header("Set-Cookie", "AuthSession=c" + std::to_string(logins.load()) + "; Version=1; Max-Age=600; Path=/; HttpOnly");
      res.set_content(R"({"ok":true})", "application/json");
    });
    // Only the second login's cookie is good: the first one "expired".
    srv.Get("/db", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.has_header("Authorization")) ++with_basic;
      if (req.get_header_value("Cookie") == "AuthSession=c2") {
        ++with_cookie;
        res.set_content(R"({"db_name":"db"})", "application/json");
        return;
      }
      res.status = 401;
      res.set_content(R"({"error":"unauthorized","reason":"You are not authorized to access this db."})", "application/json");
    });
    port = srv.bind_to_any_port("127.0.0.1");
    th = std::thread([this] { srv.listen_after_bind(); });  // bound and listening: connections wait for it
  }
  ~local_server() {
    srv.stop();
    th.join();
  }
};

r::http_request get(const std::string& target) {
  r::http_request q;
  q.target = target;
  return q;
}
}  // namespace

TEST_CASE("http_pool + session_auth: an expired session's 401 means one re-login and a retry, and no credential hold") {
  local_server server;
  r::http_pool pool(r::http_pool::options{"http://127.0.0.1:" + std::to_string(server.port), "", "", 2, "couchgate-test"});
  r::session_options o;
  o.username = "admin";
  o.password = "pw";
  r::session_auth auth(pool, o);
  auto a = auth.perform(get("/db"));
  CHECK(a.status == 200);
  CHECK(server.logins == 2);
  CHECK(server.with_cookie == 1);
  CHECK(server.with_basic == 0);
  const auto s = pool.stats();
  CHECK_FALSE(s.credential_held);
  CHECK(s.credential_accepted);
  CHECK(auth.stats().retried == 1);
  pool.shutdown();
}

TEST_CASE("http_pool + session_auth: a refused login holds the credential; the next requests are not sent") {
  local_server server;
  server.refuse_login = true;
  r::http_pool pool(r::http_pool::options{"http://127.0.0.1:" + std::to_string(server.port), "", "", 2, "couchgate-test"});
  r::session_options o;
  o.username = "admin";
  o.password = "wrong";
  r::session_auth auth(pool, o);
  auto a = auth.perform(get("/db"));
  CHECK(a.status == 401);
  CHECK(a.credential_rejected);
  CHECK(pool.stats().credential_held);
  for (int i = 0; i < 3; ++i) {
    auto b = auth.perform(get("/db"));
    CHECK(b.kind == r::error_kind::credential_held);
  }
  CHECK(server.logins == 1);  // one failed login, not one per request
  CHECK(server.with_cookie == 0);
  pool.shutdown();
}
