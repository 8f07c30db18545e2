// http_pool's outage log (outage.hpp wired into the pool), with session_auth in front as the
// daemon has it, against a local HTTP server (cpp-httplib on 127.0.0.1, a free port) that answers
// 502 while "down" (what a proxy in front of a stopped CouchDB answers): twenty failed requests
// are one outage, logged once when it begins and once when it ends, visible in stats(); the
// login is not taken for a refused credential, and once the server is back one login and the
// requests go through.
#include <doctest/doctest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "replicator/logger.hpp"
#include "replicator/transport/http_pool.hpp"
#include "replicator/transport/session_auth.hpp"
#include "tests/unit/scripted_transport.hpp"

namespace r = couchgate::replicator;

namespace {
struct flaky_server {
  httplib::Server srv;
  int port = 0;
  std::thread th;
  std::atomic<bool> down{true};
  std::atomic<int> logins{0}, answered{0};
  flaky_server() {
    srv.Post("/_session", [this](const httplib::Request&, httplib::Response& res) {
      if (down.load()) return bad_gateway(res);
      ++logins;
      res.set_header("Set-Cookie", "AuthSession=s" + std::to_string(logins.load()) + "; Version=1; Max-Age=600; Path=/; HttpOnly");
      res.set_content(R"({"ok":true})", "application/json");
    });
    srv.Get("/db", [this](const httplib::Request& req, httplib::Response& res) {
      if (down.load()) return bad_gateway(res);
      if (req.get_header_value("Cookie").rfind("AuthSession=s", 0) != 0) {
        res.status = 401;
        res.set_content(R"({"error":"unauthorized","reason":"You are not authorized to access this db."})", "application/json");
        return;
      }
      ++answered;
      res.set_content(R"({"db_name":"db"})", "application/json");
    });
    port = srv.bind_to_any_port("127.0.0.1");
    th = std::thread([this] { srv.listen_after_bind(); });
  }
  ~flaky_server() {
    srv.stop();
    th.join();
  }
  static void bad_gateway(httplib::Response& res) {
    res.status = 502;
    res.set_content("<html>502 Bad Gateway</html>", "text/html");
  }
};

}  // namespace

TEST_CASE("http_pool outage log: 20 requests failing during an outage are one line when it begins and one when it ends") {
  flaky_server server;
  couchgate::test::captured_log log("couchdb");
  r::http_pool pool(r::http_pool::options{"http://127.0.0.1:" + std::to_string(server.port), "", "", 4, "couchgate-test"});
  r::session_options o;
  o.username = "admin";
  o.password = "Sekr3t-outage-pw";
  r::session_auth auth(pool, o);

  std::vector<std::future<r::http_response>> calls;
  for (int i = 0; i < 20; ++i) calls.push_back(auth.request(couchgate::test::get_request("/db")));
  for (auto& c : calls) CHECK(c.get().status == 502);
  auto s = pool.stats();
  CHECK(s.unreachable);
  CHECK(s.outages == 1);
  CHECK_FALSE(s.credential_held);  // a gateway's 502 to the login says nothing about the password
  INFO(log.all());
  CHECK(log.count("CouchDB unreachable") == 1);
  CHECK(log.count("CouchDB answers again after") == 0);

  server.down = false;
  for (int i = 0; i < 5; ++i) CHECK(auth.perform(couchgate::test::get_request("/db")).status == 200);
  s = pool.stats();
  CHECK_FALSE(s.unreachable);
  CHECK(s.outages == 1);
  CHECK(log.count("CouchDB unreachable") == 1);
  CHECK(log.count("CouchDB answers again after") == 1);
  CHECK(server.logins == 1);  // one session once the server answers, not one per request
  CHECK(server.answered == 5);
  CHECK(log.count("Sekr3t-outage-pw") == 0);
  pool.shutdown();
}
