// session_auth (replicator/transport/session_auth.hpp) on a scripted server, with an injected
// clock: one login, the cookie on every request, renewal before expiry, one re-login on a 401,
// Basic where the server has no cookie authentication.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "replicator/couch_error.hpp"
#include "replicator/transport/session_auth.hpp"
#include "tests/unit/scripted_transport.hpp"

namespace r = couchgate::replicator;
using couchgate::test::answer;
using couchgate::test::scripted_transport;
using namespace std::chrono_literals;

namespace {

const std::string couchdb_cookie_a =
    "AuthSession=YWRtaW46NkIwM0Q5OEU6a; Version=1; Expires=Mon, 23-Nov-2026 06:23:34 GMT; Max-Age=600; Path=/; HttpOnly";
const std::string couchdb_cookie_b = "AuthSession=YWRtaW46NkIwM0Q5OEU6b; Version=1; Max-Age=600; Path=/; HttpOnly";
const std::string couchdb_cookie_c = "AuthSession=YWRtaW46NkIwM0Q5OEU6c; Version=1; Max-Age=600; Path=/; HttpOnly";

struct fake_clock {
  std::chrono::steady_clock::time_point t = std::chrono::steady_clock::time_point() + 1000h;
  std::function<std::chrono::steady_clock::time_point()> fn() {
    return [this] { return t; };
  }
};

r::session_options options(fake_clock& clock) {
  r::session_options o;
  o.username = "admin";
  o.password = "s3cret-Pa55";
  o.now = clock.fn();
  return o;
}

r::http_request get(const std::string& target) {
  r::http_request q;
  q.target = target;
  return q;
}

}  // namespace

TEST_CASE("session_auth: one POST /_session, then the AuthSession cookie on every request and no Basic") {
  fake_clock clock;
  scripted_transport server;
  server.on("POST", "/_session", answer(200, R"({"ok":true,"name":"admin","roles":["_admin"]})", couchdb_cookie_a));
  server.on("GET", "/db", answer(200, R"({"db_name":"db"})"), -1);
  r::session_auth auth(server, options(clock));
  for (int i = 0; i < 5; ++i) {
    auto a = auth.perform(get("/db"));
    CHECK(a.status == 200);
  }
  const auto seen = server.requests();
  REQUIRE(seen.size() == 6);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].target == "/_session");
  CHECK(seen[0].body == R"({"name":"admin","password":"s3cret-Pa55"})");
  CHECK(seen[0].cookie.empty());
  CHECK(seen[0].authorization.empty());
  for (std::size_t i = 1; i < seen.size(); ++i) {
    CHECK(seen[i].cookie == "AuthSession=YWRtaW46NkIwM0Q5OEU6a");
    CHECK(seen[i].authorization.empty());
    CHECK(seen[i].cookie_may_be_stale);
  }
  CHECK(auth.stats().logins == 1);
  CHECK(auth.stats().cookie);
  CHECK(server.unexpected().empty());
}

TEST_CASE("session_auth: requests arriving while the login is in flight wait for it: one login, not one each") {
  fake_clock clock;
  scripted_transport server;
  server.on("GET", "/db", answer(200, "{}"), -1);
  r::session_auth* self = nullptr;
  std::vector<std::future<r::http_response>> during;
  server.on("POST", "/_session", [&](const r::http_request&) {
    for (int i = 0; i < 4; ++i) during.push_back(self->request(get("/db")));  // the login has not answered yet
    return answer(200, R"({"ok":true})", couchdb_cookie_a);
  });
  r::session_auth auth(server, options(clock));
  self = &auth;
  CHECK(auth.perform(get("/db")).status == 200);
  REQUIRE(during.size() == 4);
  for (auto& f : during) CHECK(f.get().status == 200);
  CHECK(server.count("POST", "/_session") == 1);
  CHECK(server.count("GET", "/db") == 5);
  for (const auto& q : server.requests()) {
    if (q.method == "GET") CHECK(q.cookie == "AuthSession=YWRtaW46NkIwM0Q5OEU6a");
  }
}

TEST_CASE("session_auth: renewed at half the cookie's lifetime, in the background; a refreshed Set-Cookie moves that") {
  fake_clock clock;
  scripted_transport server;
  server.on("POST", "/_session", answer(200, R"({"ok":true})", couchdb_cookie_a));
  server.on("POST", "/_session", answer(200, R"({"ok":true})", couchdb_cookie_b));
  server.on("GET", "/refresh", answer(200, "{}", couchdb_cookie_c));
  server.on("GET", "/db", answer(200, "{}"), -1);
  r::session_auth auth(server, options(clock));
  auto last_cookie = [&] { return server.requests().back().cookie; };

  CHECK(auth.perform(get("/db")).status == 200);  // login at t0 (Max-Age 600)
  clock.t += 299s;
  CHECK(auth.perform(get("/db")).status == 200);
  CHECK(server.count("POST", "/_session") == 1);  // before half the lifetime: no login
  CHECK(last_cookie() == "AuthSession=YWRtaW46NkIwM0Q5OEU6a");
  clock.t += 2s;  // t0 + 301 s: past half; the request itself still goes out with the valid cookie
  CHECK(auth.perform(get("/db")).status == 200);
  CHECK(server.count("POST", "/_session") == 2);
  CHECK(auth.perform(get("/db")).status == 200);
  CHECK(last_cookie() == "AuthSession=YWRtaW46NkIwM0Q5OEU6b");

  // The server's refreshed cookie (CouchDB sends one once a tenth of the lifetime has passed) is
  // adopted and restarts the clock: no login for the next 299 s.
  clock.t += 200s;
  CHECK(auth.perform(get("/refresh")).status == 200);
  clock.t += 299s;  // the second login's cookie would be due now; the refreshed one is not
  CHECK(auth.perform(get("/db")).status == 200);
  CHECK(last_cookie() == "AuthSession=YWRtaW46NkIwM0Q5OEU6c");
  CHECK(server.count("POST", "/_session") == 2);
  CHECK(auth.stats().renewals >= 1);
  CHECK(server.unexpected().empty());
}

TEST_CASE("session_auth: an expired cookie is never sent; the request waits for the new login") {
  fake_clock clock;
  scripted_transport server;
  server.on("POST", "/_session", answer(200, R"({"ok":true})", couchdb_cookie_a));
  server.on("POST", "/_session", answer(200, R"({"ok":true})", couchdb_cookie_b));
  server.on("GET", "/db", answer(200, "{}"), -1);
  r::session_auth auth(server, options(clock));
  CHECK(auth.perform(get("/db")).status == 200);
  clock.t += 700s;  // idle past Max-Age
  CHECK(auth.perform(get("/db")).status == 200);
  const auto seen = server.requests();
  REQUIRE(seen.size() == 4);
  CHECK(seen[2].target == "/_session");
  CHECK(seen[3].cookie == "AuthSession=YWRtaW46NkIwM0Q5OEU6b");
}

TEST_CASE("session_auth: a cookie without Max-Age (pouchdb-server) lives the configured lifetime") {
  fake_clock clock;
  scripted_transport server;
  server.on("POST", "/_session", answer(200, R"({"ok":true})", "AuthSession=cG91Y2g6MTIz; Path=/; HttpOnly"), 2);
  server.on("GET", "/db", answer(200, "{}"), -1);
  auto o = options(clock);
  o.lifetime = 100s;
  r::session_auth auth(server, o);
  CHECK(auth.perform(get("/db")).status == 200);
  clock.t += 49s;
  CHECK(auth.perform(get("/db")).status == 200);
  CHECK(server.count("POST", "/_session") == 1);
  clock.t += 2s;
  CHECK(auth.perform(get("/db")).status == 200);
  CHECK(server.count("POST", "/_session") == 2);
}

TEST_CASE("session_auth: a 401 to a cookie request means one new login and the request sent once more") {
  fake_clock clock;
  scripted_transport server;
  server.on("POST", "/_session", answer(200, R"({"ok":true})", couchdb_cookie_a));
  server.on("POST", "/_session", answer(200, R"({"ok":true})", couchdb_cookie_b));
  server.on("PUT", "/db/doc", answer(401, R"({"error":"unauthorized","reason":"You are not authorized to access this db."})"));
  server.on("PUT", "/db/doc", answer(201, R"({"ok":true,"id":"doc","rev":"1-a"})"));
  r::session_auth auth(server, options(clock));
  r::http_request put;
  put.method = "PUT";
  put.target = "/db/doc";
  put.set_body(R"({"x":1})");
  auto a = auth.perform(put);
  CHECK(a.status == 201);
  const auto seen = server.requests();
  REQUIRE(seen.size() == 4);
  CHECK(seen[1].cookie == "AuthSession=YWRtaW46NkIwM0Q5OEU6a");
  CHECK(seen[1].cookie_may_be_stale);  // the pool's gate does not hold the credential for it
  CHECK(seen[2].target == "/_session");
  CHECK(seen[3].cookie == "AuthSession=YWRtaW46NkIwM0Q5OEU6b");
  CHECK(seen[3].body == R"({"x":1})");  // the same body, sent again
  CHECK_FALSE(seen[3].cookie_may_be_stale);  // a second 401 is a verdict on the credential
  CHECK(auth.stats().retried == 1);
}

TEST_CASE("session_auth: a second 401 is the answer: one re-login per request, never a loop") {
  fake_clock clock;
  scripted_transport server;
  server.on("POST", "/_session", answer(200, R"({"ok":true})", couchdb_cookie_a), -1);
  server.on("GET", "/_all_dbs", answer(401, R"({"error":"unauthorized","reason":"You are not a server admin."})"), -1);
  r::session_auth auth(server, options(clock));
  auto a = auth.perform(get("/_all_dbs"));
  CHECK(a.status == 401);
  CHECK(r::error_from(a).kind == r::couch_error_kind::unauthorized);
  CHECK(server.count("POST", "/_session") == 2);
  CHECK(server.count("GET", "/_all_dbs") == 2);
}

TEST_CASE("session_auth: a refused login fails the waiting requests with its answer; nothing else is sent") {
  fake_clock clock;
  scripted_transport server;
  server.on("POST", "/_session", answer(401, R"({"error":"unauthorized","reason":"Name or password is incorrect."})"), -1);
  auto o = options(clock);
  r::session_auth auth(server, o);
  auto a = auth.perform(get("/db/_changes?since=0"));
  CHECK(a.status == 401);
  const auto e = r::error_from(a);
  CHECK(e.kind == r::couch_error_kind::unauthorized);
  CHECK(e.describe().find(o.password) == std::string::npos);
  CHECK(server.requests().size() == 1);  // the login only: the request was never sent unauthenticated
  CHECK(server.count("GET", "/db") == 0);
  CHECK_FALSE(auth.stats().cookie);
}

TEST_CASE("session_auth: a server without cookie authentication gets Basic on every request, after one try") {
  fake_clock clock;
  scripted_transport server;
  server.on("POST", "/_session", answer(404, R"({"error":"not_found","reason":"missing"})"));
  server.on("GET", "/db", answer(200, "{}"), -1);
  r::session_auth auth(server, options(clock));
  for (int i = 0; i < 3; ++i) CHECK(auth.perform(get("/db")).status == 200);
  clock.t += 3600s;
  CHECK(auth.perform(get("/db")).status == 200);
  CHECK(server.count("POST", "/_session") == 1);
  for (const auto& q : server.requests()) {
    if (q.method != "GET") continue;
    CHECK(q.authorization == r::basic_authorization("admin", "s3cret-Pa55"));
    CHECK(q.cookie.empty());
  }
  CHECK(auth.stats().basic_fallback);
}

TEST_CASE("session_auth: mode basic never logs in; no user name means no credential at all") {
  fake_clock clock;
  scripted_transport server;
  server.on("GET", "/db", answer(200, "{}"), -1);
  auto o = options(clock);
  o.mode = r::auth_mode::basic;
  r::session_auth basic(server, o);
  CHECK(basic.perform(get("/db")).status == 200);
  CHECK(server.requests().back().authorization == r::basic_authorization("admin", "s3cret-Pa55"));
  r::session_auth anonymous(server, r::session_options{});
  CHECK(anonymous.perform(get("/db")).status == 200);
  CHECK(server.requests().back().authorization.empty());
  CHECK(server.requests().back().cookie.empty());
  CHECK(server.count("POST", "/_session") == 0);
}

TEST_CASE("parse_session_cookie and basic_authorization") {
  auto c = r::parse_session_cookie(couchdb_cookie_a);
  REQUIRE(c);
  CHECK(c->cookie == "AuthSession=YWRtaW46NkIwM0Q5OEU6a");
  REQUIRE(c->max_age);
  CHECK(*c->max_age == 600s);
  auto p = r::parse_session_cookie("AuthSession=cG91Y2g6MTIz; Path=/; HttpOnly");
  REQUIRE(p);
  CHECK_FALSE(p->max_age);
  CHECK_FALSE(r::parse_session_cookie("AuthSession=; Version=1; Path=/; HttpOnly"));  // logged out
  CHECK_FALSE(r::parse_session_cookie("AuthSession=abc; Max-Age=0"));
  CHECK_FALSE(r::parse_session_cookie("Other=abc"));
  CHECK_FALSE(r::parse_session_cookie("AuthSession=a\rb"));
  CHECK(r::basic_authorization("admin", "secret") == "Basic YWRtaW46c2VjcmV0");
  CHECK(r::basic_authorization("a", "") == "Basic YTo=");
  CHECK(r::basic_authorization("ab", "") == "Basic YWI6");
}
