// Fault injection: couchgate talks to the server through a TCP proxy (tests/support/fault_proxy)
// that can refuse connections (server down), cut every open one (server restart / network
// error) or stall them (hung server). Whatever happens, couchgate keeps running, does not spin,
// reconnects by itself and provisions every user created while it could not see the server.
// Users are always created directly on the real server, never through the proxy.
#include <dirent.h>
#include <unistd.h>
#include <doctest/doctest.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "policy/naming.hpp"
#include "policy/security.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
using couchgate::policy::user_db_name;
using std::chrono::steady_clock;

namespace {

const std::string users_feed = "feed=\"users\"";

// The user's database exists with the default policy's _security (owner as the only member).
bool provisioned(const names& n, const std::string& user) {
  std::string db = user_db_name(n.prefix, user);
  auto sec = couch().get("/" + enc(db) + "/_security");
  if (sec.status != 200) return false;
  return couchgate::policy::security_equal(
      sec.body, couchgate::policy::render_security(couchgate::policy::security_template{}, std::string_view(user)));
}

bool all_provisioned(const names& n, const std::vector<std::string>& users) {
  for (const auto& u : users)
    if (!provisioned(n, u)) return false;
  return true;
}

std::string missing(const names& n, const std::vector<std::string>& users) {
  std::string out;
  for (const auto& u : users)
    if (!provisioned(n, u)) out += u + " ";
  return out;
}

double seconds_since(steady_clock::time_point t) {
  return std::chrono::duration<double>(steady_clock::now() - t).count();
}

// Keeps a fault in place: runs each() about every 100 ms for at least `min`, then until done()
// or `max`. Returns done()'s last value. (A bounded wait that does useful checks meanwhile.)
bool hold(std::chrono::milliseconds min, std::chrono::milliseconds max, const std::function<void()>& each,
          const std::function<bool()>& done) {
  const auto start = steady_clock::now();
  for (;;) {
    each();
    bool finished = done();
    auto now = steady_clock::now();
    if (now - start >= max || (finished && now - start >= min)) return finished;
    std::this_thread::sleep_for(100ms);
  }
}

// What a running couchgate must keep doing whatever the server does: live, and answer /healthz.
struct liveness {
  bool alive = true;
  int health_failures = 0;
  std::string first_health_failure;
  void sample(couchgate_process& cg) {
    if (!cg.running()) {
      alive = false;
      return;
    }
    auto h = cg.admin_get("/healthz");
    if (h.status != 200 && health_failures++ == 0)
      first_health_failure = "status " + std::to_string(h.status) + ": " + h.raw;
  }
};

// Starts couchgate through the proxy and checks that provisioning works before any fault.
void start_and_provision_one(couchgate_process& cg, const fault_proxy& proxy, const names& n) {
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), tail(cg.log()));
  REQUIRE_MESSAGE(proxy.accepted() > 0, "couchgate did not connect through the proxy");
  std::string first = "first-" + n.role;
  REQUIRE(create_user(first, {n.role}).status == 201);
  REQUIRE_MESSAGE(eventually([&] { return provisioned(n, first); }, 60s), tail(cg.log()));
}

// Entries in a /proc/self directory (fd: open descriptors, task: threads).
int count_entries(const char* dir) {
  int n = 0;
  if (DIR* d = opendir(dir)) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

}  // namespace

TEST_CASE("fault_proxy: forwards, refuses, stalls, slows and cuts on command, and leaks nothing") {
  const int fds_before = count_entries("/proc/self/fd");
  const int threads_before = count_entries("/proc/self/task");
  {
    fault_proxy proxy;
    CHECK(count_entries("/proc/self/task") == threads_before + 1);
    httplib::Client cli("127.0.0.1", proxy.port());
    cli.set_keep_alive(true);
    cli.set_connection_timeout(2, 0);
    cli.set_read_timeout(2, 0);

    auto r = cli.Get("/");
    REQUIRE(r);
    CHECK(r->status == 200);
    auto again = cli.Get("/");
    REQUIRE(again);
    CHECK(again->status == 200);  // same connection (keep-alive)
    CHECK(proxy.accepted() == 1);
    CHECK(proxy.peak_connections() == 1);
    CHECK(proxy.open_connections() == 1);

    for (auto mode : {fault_proxy::close_mode::reset, fault_proxy::close_mode::graceful}) {
      proxy.cut(mode);
      CHECK(proxy.open_connections() == 0);
      auto fresh = cli.Get("/");  // a fresh connection after the cut
      REQUIRE(fresh);
      CHECK(fresh->status == 200);
    }
    CHECK(proxy.accepted() == 3);

    proxy.refuse(true);
    proxy.cut();
    CHECK_FALSE(cli.Get("/"));
    CHECK(proxy.accepted() == 4);
    CHECK(proxy.open_connections() == 0);
    proxy.refuse(false);
    CHECK(cli.Get("/"));

    proxy.stall(true);
    const auto t0 = steady_clock::now();
    CHECK_FALSE(cli.Get("/"));  // the read timeout, not an error from the proxy
    CHECK(seconds_since(t0) >= 1.5);
    proxy.stall(false);
    // The client closed its side on the timeout; the proxy notices and lets go.
    CHECK(eventually([&] { return proxy.open_connections() <= 1; }, 5s));
    auto after = cli.Get("/");
    REQUIRE(after);
    CHECK(after->status == 200);

    // Slow answers: the first byte late; then a body at a trickle.
    proxy.slow(400ms);
    auto t1 = steady_clock::now();
    auto late = cli.Get("/");
    REQUIRE(late);
    CHECK(late->status == 200);
    CHECK(seconds_since(t1) >= 0.4);
    const std::size_t rate = 1000;
    proxy.slow(0ms, rate);
    t1 = steady_clock::now();
    auto trickled = cli.Get("/");
    REQUIRE(trickled);
    CHECK(trickled->status == 200);
    // (the body alone, headers not counted; the first 50 ms worth may pass at once)
    CHECK(seconds_since(t1) >= static_cast<double>(trickled->body.size()) / rate - 0.05);
    proxy.slow(0ms);
    cli.stop();
  }
  CHECK(count_entries("/proc/self/task") == threads_before);
  CHECK(count_entries("/proc/self/fd") == fds_before);
}

TEST_CASE("fault_proxy: records when each answer began and its status, matched in order on a kept-alive connection") {
  fault_proxy proxy;
  httplib::Client cli("127.0.0.1", proxy.port());
  cli.set_keep_alive(true);
  cli.set_read_timeout(5, 0);
  const auto t0 = steady_clock::now();
  REQUIRE(cli.Get("/"));
  auto missing = cli.Get("/couchgate-no-such-db-" + std::to_string(::getpid()));
  REQUIRE(missing);
  REQUIRE(missing->status == 404);
  proxy.answer_next(1, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}", "_up");
  auto injected = cli.Get("/_up");
  REQUIRE(injected);
  CHECK(injected->status == 503);
  REQUIRE(cli.Get("/"));
  const auto after = steady_clock::now();
  auto recs = proxy.requests();
  REQUIRE(recs.size() == 4);
  CHECK(recs[0].status == 200);
  CHECK(recs[1].status == 404);
  CHECK(recs[2].answered_by_proxy);
  CHECK_FALSE(recs[2].answered_at.has_value());  // the server never answered it
  CHECK(recs[3].status == 200);
  for (std::size_t i : {0u, 1u, 3u}) {
    REQUIRE(recs[i].answered_at.has_value());
    CHECK(*recs[i].answered_at >= recs[i].at);
    CHECK(*recs[i].answered_at >= t0);
    CHECK(*recs[i].answered_at <= after);
    REQUIRE(recs[i].last_byte_at.has_value());
    CHECK(*recs[i].last_byte_at >= *recs[i].answered_at);
  }
  CHECK(*recs[1].answered_at <= recs[3].at);  // each answer before the next request
  cli.stop();
}

TEST_CASE("fault_proxy: rewrite_status turns the server's 201 into 202 for matching writes only, as many as asked") {
  const std::string db = unique("proxy-rewrite");
  REQUIRE(couch().put("/" + db, json::object()).status == 201);
  fault_proxy proxy;
  httplib::Client cli("127.0.0.1", proxy.port());
  cli.set_keep_alive(true);
  cli.set_read_timeout(5, 0);
  cli.set_basic_auth(env().user, env().password);
  proxy.rewrite_status(1, "PUT", "/" + db + "/res-", 201, 202);
  const auto put = [&](const std::string& id) {
    auto r = cli.Put("/" + db + "/" + id, R"({"v":1})", "application/json");
    REQUIRE(r);
    return std::pair{r->status, json::parse(r->body, nullptr, false)};
  };
  CHECK(put("other-1").first == 201);  // does not match: passes unchanged
  auto [st, body] = put("res-1");
  CHECK(st == 202);  // the server's body, unchanged
  CHECK(body.value("ok", false));
  CHECK(body.value("id", "") == "res-1");
  CHECK(body.value("rev", "").rfind("1-", 0) == 0);
  CHECK(couch().get("/" + db + "/res-1").status == 200);  // the write reached the server
  CHECK(proxy.rewritten() == 1);
  proxy.rewrite_status(1, "PUT", "/" + db + "/res-", 201, 202);
  CHECK(put("res-1").first == 409);  // another status: unchanged, does not count
  CHECK(put("res-2").first == 202);
  CHECK(put("res-3").first == 201);  // one was asked for
  CHECK(proxy.rewritten() == 2);
  cli.stop();
  couch().del("/" + db);
}

TEST_CASE("network errors and server restarts: couchgate reconnects and provisions what was created meanwhile") {
  fault_proxy proxy;
  auto n = fresh_names("outage");
  json cfg = fault_config(n, proxy);
  couchgate_process cg(cfg, proxy_env(proxy));
  start_and_provision_one(cg, proxy, n);
  const double reconnects_before = cg.metric("couchgate_feed_reconnects_total", users_feed).value_or(0);

  // The server goes away: every open connection dies, new ones are closed at once.
  const auto accepted_before = proxy.accepted();
  const auto outage_start = steady_clock::now();
  proxy.refuse(true);
  proxy.cut();
  CHECK(proxy.open_connections() == 0);

  std::vector<std::string> meanwhile;
  liveness live;
  std::optional<double> not_ready_after;
  std::string readyz_answer;
  bool held = hold(
      3s, 20s,
      [&] {
        if (meanwhile.size() < 5) {
          meanwhile.push_back("meanwhile" + std::to_string(meanwhile.size()) + "-" + n.role);
          auto r = create_user(meanwhile.back(), {n.role});
          REQUIRE_MESSAGE(r.status == 201, r.raw);
        }
        live.sample(cg);
        if (!not_ready_after && live.alive) {
          auto r = cg.admin_get("/readyz");  // couchgate probes CouchDB every 5 s
          if (r.status == 503) {
            not_ready_after = seconds_since(outage_start);
            readyz_answer = r.raw;
          }
        }
      },
      [&] { return !live.alive || (meanwhile.size() == 5 && not_ready_after.has_value()); });
  const double outage_s = seconds_since(outage_start);
  const auto accepted_during = proxy.accepted() - accepted_before;

  REQUIRE_MESSAGE(live.alive, "couchgate exited during the outage:\n" << tail(cg.log()));
  CHECK_MESSAGE(live.health_failures == 0, "/healthz failed " << live.health_failures << " times, first: "
                                                              << live.first_health_failure);
  CHECK_MESSAGE(held, "/readyz never answered 503 during the outage:\n" << tail(cg.log()));
  if (not_ready_after) MESSAGE("/readyz answered 503 after " << *not_ready_after << " s: " << readyz_answer);
  // No spinning: with capped, jittered backoff a few dozen attempts at most.
  MESSAGE("connections attempted during the " << outage_s << " s outage: " << accepted_during);
  CHECK_MESSAGE(accepted_during < static_cast<std::uint64_t>(40 * std::max(5.0, outage_s)), tail(cg.log()));

  // The server is back.
  proxy.refuse(false);
  const auto back = steady_clock::now();
  CHECK_MESSAGE(eventually([&] { return all_provisioned(n, meanwhile); }, 60s),
                "not provisioned: " << missing(n, meanwhile) << "\n" << tail(cg.log()));
  MESSAGE("users created during the outage provisioned " << seconds_since(back) << " s after it ended");
  auto reconnects = cg.metric("couchgate_feed_reconnects_total", users_feed);
  REQUIRE(reconnects);
  CHECK(*reconnects > 0);
  CHECK(*reconnects > reconnects_before);
  CHECK_MESSAGE(eventually([&] { return cg.admin_get("/readyz").status == 200; }, 20s), tail(cg.log()));
  // Nothing leaked past the pool's cap on the server side of the proxy either: max_connections
  // for work plus one socket per change feed (gateway/connection_budget.hpp).
  const double cap = cg.metric("couchgate_couchdb_connections_max").value_or(-1);
  CHECK(cap > cfg["fanin"]["max_connections"].get<int>());
  CHECK(cap <= cfg["fanin"]["max_connections"].get<int>() + 2);
  CHECK_MESSAGE(eventually([&] { return proxy.open_connections() <= cap; }, 10s),
                "open through the proxy: " << proxy.open_connections());
  CHECK(cg.terminate() == 0);
}

TEST_CASE("a hung server: the feed's idle timeout fires and couchgate recovers") {
  fault_proxy proxy;
  auto n = fresh_names("hung");
  json cfg = fault_config(n, proxy);
  couchgate_process cg(cfg, proxy_env(proxy));
  start_and_provision_one(cg, proxy, n);
  const double reconnects_before = cg.metric("couchgate_feed_reconnects_total", users_feed).value_or(0);

  // The server hangs: connections stay open (new ones too) and nothing comes back. Held for at
  // least 6 s, and until the _users feed has given up on its silent connection (at most 20 s).
  const auto stall_start = steady_clock::now();
  proxy.stall(true);
  std::string during = "during-" + n.role;
  REQUIRE(create_user(during, {n.role}).status == 201);
  liveness live;
  std::optional<double> timeout_after;
  hold(
      6s, 20s,
      [&] {
        live.sample(cg);
        if (!timeout_after && live.alive &&
            cg.metric("couchgate_feed_reconnects_total", users_feed).value_or(0) > reconnects_before)
          timeout_after = seconds_since(stall_start);
      },
      [&] { return !live.alive || timeout_after.has_value(); });
  MESSAGE("stalled " << seconds_since(stall_start) << " s; connections open through the proxy: "
                     << proxy.open_connections() << ", accepted so far: " << proxy.accepted());
  REQUIRE_MESSAGE(live.alive, "couchgate exited while the server hung:\n" << tail(cg.log()));
  CHECK_MESSAGE(live.health_failures == 0, "/healthz failed " << live.health_failures << " times, first: "
                                                              << live.first_health_failure);
  // The feed's own deadline is feed_timeout + 15 s = 18 s; its idle timeout is "no byte for three
  // heartbeats" (3 s here), enforced with libcurl's low-speed check (under 1 byte/s for 3 s).
  // Measured against pouchdb-server: the longpoll in flight when the stall began gives up about
  // 9 s in, the following attempts (which receive nothing at all) every 3 s. libcurl judges an
  // averaged speed, so the bytes received just before the silence (the response headers) seem
  // to delay the first trip by a few seconds. Anything under 15 s is the idle timeout, not the
  // 18 s overall deadline.
  REQUIRE_MESSAGE(timeout_after.has_value(), "the _users feed never gave up on the silent connection:\n" << tail(cg.log()));
  MESSAGE("the _users feed gave up on the silent connection " << *timeout_after << " s into the stall");
  CHECK_MESSAGE(*timeout_after < 15.0, tail(cg.log()));

  // The server is back; the hung connections are dropped as a restart would.
  proxy.stall(false);
  proxy.cut();
  std::string after = "after-" + n.role;
  REQUIRE(create_user(after, {n.role}).status == 201);
  const auto back = steady_clock::now();
  CHECK_MESSAGE(eventually([&] { return all_provisioned(n, {during, after}); }, 60s),
                "not provisioned: " << missing(n, {during, after}) << "\n" << tail(cg.log()));
  MESSAGE("provisioned " << seconds_since(back) << " s after the server came back");
  CHECK_MESSAGE(eventually([&] { return cg.admin_get("/readyz").status == 200; }, 20s), tail(cg.log()));
  CHECK(cg.terminate() == 0);
}

TEST_CASE("kill -9 during an outage loses nothing") {
  fault_proxy proxy;
  auto n = fresh_names("outage-kill");
  json cfg = fault_config(n, proxy);
  couchgate_process cg(cfg, proxy_env(proxy));
  start_and_provision_one(cg, proxy, n);

  proxy.refuse(true);
  proxy.cut();
  std::vector<std::string> meanwhile;
  for (int i = 0; i < 5; ++i) {
    meanwhile.push_back("k" + std::to_string(i) + "-" + n.role);
    REQUIRE(create_user(meanwhile.back(), {n.role}).status == 201);
  }
  cg.kill9();
  // Restarted while the server is still down: it waits for it (not ready), it does not exit.
  const auto accepted_at_restart = proxy.accepted();
  const auto restart = steady_clock::now();
  cg.start();
  CHECK_FALSE(cg.wait_ready(4s));  // polls for 4 s, and learns the admin port meanwhile
  REQUIRE_MESSAGE(cg.running(), "couchgate exited when started without a server:\n" << tail(cg.log()));
  REQUIRE_MESSAGE(cg.admin_port() != 0, tail(cg.log()));
  CHECK(cg.admin_get("/healthz").status == 200);
  auto r = cg.admin_get("/readyz");
  CHECK_MESSAGE(r.status == 503, r.raw);
  MESSAGE("connections attempted in the " << seconds_since(restart)
                                          << " s after the restart: " << proxy.accepted() - accepted_at_restart);

  proxy.refuse(false);
  REQUIRE_MESSAGE(cg.wait_ready(60s), tail(cg.log()));
  CHECK_MESSAGE(eventually([&] { return all_provisioned(n, meanwhile); }, 60s),
                "not provisioned: " << missing(n, meanwhile) << "\n" << tail(cg.log()));
  CHECK(cg.terminate() == 0);
}

TEST_CASE("SIGTERM while the server hangs: couchgate exits cleanly within systemd's stop timeout") {
  fault_proxy proxy;
  auto n = fresh_names("stophung");
  json cfg = fault_config(n, proxy);
  // Requests would wait a minute for a hung server, and checkpoints are only written at stop:
  // the stop must not wait for either (the unit's TimeoutStopSec is 30 s; terminate() sends
  // SIGKILL after 30 s and then reports -9).
  cfg["couchdb"]["request_timeout"] = "60s";
  cfg["fanin"]["checkpoint_interval"] = "1h";
  couchgate_process cg(cfg, proxy_env(proxy));
  start_and_provision_one(cg, proxy, n);
  const std::string db = user_db_name(n.prefix, "first-" + n.role);
  // The first checkpoint is written at once; the one after it waits for the interval (or stop).
  for (const std::string id : {"doc-1", "doc-2"}) {
    REQUIRE(couch().put("/" + enc(db) + "/" + id, json{{"v", 1}}).status == 201);
    const std::string central_id = "first-" + n.role + ":" + id;
    REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(n.central) + "/" + enc(central_id)).status == 200; }, 60s),
                    tail(cg.log()));
  }
  proxy.stall(true);
  const auto stop_start = steady_clock::now();
  CHECK_MESSAGE(cg.terminate() == 0, tail(cg.log()));
  MESSAGE("stopped " << seconds_since(stop_start) << " s after SIGTERM with the server hung");
  proxy.stall(false);
  CHECK_MESSAGE(cg.log().find("checkpoints not written within the stop grace") != std::string::npos, tail(cg.log()));
}

TEST_CASE("answers cut short or reset, a feed that ends early, bodies that are not JSON, 500s and 503s on every replication request: no crash, no loss, counted") {
  fault_proxy proxy;
  auto n = fresh_names("cutshort");
  json cfg = fault_config(n, proxy);
  cfg["fanin"]["inline_docs"] = false;  // every revision through _bulk_get
  couchgate_process cg(cfg, proxy_env(proxy));
  start_and_provision_one(cg, proxy, n);
  const std::string user = "first-" + n.role;
  const std::string db = user_db_name(n.prefix, user);
  std::map<std::string, std::string> db_owner{{db, user}};
  const double transport_before = cg.metric("couchgate_couchdb_transport_errors_total").value_or(0);
  const double errors_before = cg.metric("couchgate_replication_errors_total").value_or(0);

  // A body shorter than its Content-Length, then the connection closed (FIN).
  const std::string truncated =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"results\":[{\"id\":\"x\",";
  const std::string error500 =
      "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 58\r\n\r\n"
      "{\"error\":\"internal_server_error\",\"reason\":\"injected 500\"}\n";
  const std::string error503 =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 58\r\n\r\n"
      "{\"error\":\"service_unavailable\",\"reason\":\"injected 503\"}\n";
  // 200 with a body that is no JSON at all (a proxy's error page, say).
  const std::string html = "<html><body>Bad gateway</body></html>";
  const std::string not_json = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: " + std::to_string(html.size()) +
                               "\r\n\r\n" + html;
  using mode = fault_proxy::close_mode;
  struct fault {
    std::string target;  // request target contains
    std::string answer;
    bool close;
    mode close_as = mode::graceful;
  };
  const std::vector<fault> faults{
      {"/_users/_changes", truncated, true},            // the _users feed ends early
      {"/" + enc(db) + "/_changes", truncated, true},   // a source's _changes cut short
      {"/_revs_diff", truncated, true},
      {"/_bulk_get", truncated, true},
      {"/_bulk_docs", truncated, true},
      {"/_revs_diff", error500, false},
      {"/_bulk_get", error500, false},
      {"/_bulk_docs", error500, false},
      {"/_bulk_get", error503, false},
      {"/_revs_diff", error503, false},
      {"/_bulk_get", not_json, false},
      {"/_revs_diff", not_json, false},
      {"/_bulk_docs", not_json, false},
      {"/" + enc(db) + "/_changes", not_json, false},
      {"/_bulk_get", truncated, true, mode::reset},     // the connection reset mid-answer
      {"/" + enc(db) + "/_changes", truncated, true, mode::reset},
  };
  int injected = 0, round = 0;
  std::vector<std::string> created;
  for (const auto& f : faults) {
    CAPTURE(f.target);
    auto answered = [&] {
      int k = 0;
      for (const auto& r : proxy.requests()) k += r.answered_by_proxy && r.target.find(f.target) != std::string::npos;
      return k;
    };
    const int before = answered();
    proxy.answer_next(1, f.answer, f.target, f.close, f.close_as);
    // Something for that request to carry: a new user (the _users feed), new and edited documents.
    if (f.target == "/_users/_changes") {
      created.push_back("late" + std::to_string(round) + "-" + n.role);
      REQUIRE(create_user(created.back(), {n.role}).status == 201);
    }
    couch c;
    const std::string id = "d" + std::to_string(round++);
    auto put = c.put("/" + enc(db) + "/" + id, json{{"v", 1}});
    REQUIRE(put.status == 201);
    REQUIRE(c.put("/" + enc(db) + "/" + id, json{{"v", 2}, {"_rev", put.body["rev"]}}).status == 201);
    CHECK_MESSAGE(eventually([&] { return answered() > before; }, 60s), tail(cg.log()));
    injected += answered() - before;
    REQUIRE_MESSAGE(cg.running(), tail(cg.log()));
    // Recovered before the next fault: the edit reached central. (Armed while the source still
    // backs off, the next fault would fail its retry too, and the backoff would double at every
    // fault: 30 s waits by the end, three minutes for the test.)
    const std::string central_id = user + ":" + id;
    CHECK_MESSAGE(eventually([&] {
                    auto got = couch().get("/" + enc(n.central) + "/" + enc(central_id));
                    return got.status == 200 && got.body.is_object() && got.body.value("v", 0) == 2;
                  }, 60s),
                  central_id << " did not reach central after the fault\n" << tail(cg.log()));
  }
  proxy.answer_next(0, "");
  for (const auto& u : created) db_owner[user_db_name(n.prefix, u)] = u;
  CHECK_MESSAGE(eventually([&] { return all_provisioned(n, created); }, 60s), missing(n, created) << tail(cg.log()));
  leaf_map want = expected_central(db_owner);
  CHECK_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 120s),
                describe_diff(central_user_docs(n.central), want) << tail(cg.log()));
  MESSAGE(injected << " answers cut short, reset, not JSON or failed with 500/503, of " << faults.size()
                   << " injected; lost: nothing if the checks above passed");
  CHECK(injected == static_cast<int>(faults.size()));
  CHECK(cg.metric("couchgate_couchdb_transport_errors_total").value_or(0) > transport_before);
  CHECK(cg.metric("couchgate_replication_errors_total").value_or(0) > errors_before);
  CHECK(cg.terminate() == 0);
}

TEST_CASE("a slow server: slow answers within the timeouts are waited for; a body slower than request_timeout times out, backs off, and nothing is lost") {
  fault_proxy proxy;
  auto n = fresh_names("slow");
  json cfg = fault_config(n, proxy);  // request_timeout 5 s
  cfg["log"]["level"] = "info";
  couchgate_process cg(cfg, proxy_env(proxy));
  start_and_provision_one(cg, proxy, n);
  const std::string user = "first-" + n.role;
  const std::string db = user_db_name(n.prefix, user);
  const std::map<std::string, std::string> db_owner{{db, user}};
  couch c;
  int faults = 0;

  // 1. Every answer's first byte 1.5 s late, bodies at 64 KB/s: slow, but within every timeout.
  const double transport_before = cg.metric("couchgate_couchdb_transport_errors_total").value_or(0);
  proxy.slow(1500ms, 64 * 1024);
  ++faults;
  const auto slow_start = steady_clock::now();
  for (int i = 0; i < 10; ++i) REQUIRE(c.put("/" + enc(db) + "/slow-" + std::to_string(i), json{{"i", i}}).status == 201);
  REQUIRE(c.put("/" + enc(db) + "/slow-att",
                json{{"_attachments", {{"a.bin", {{"content_type", "application/octet-stream"},
                                                  {"data", b64(std::string(20000, 'x'))}}}}}})
              .status == 201);
  std::string diff = wait_central_converged(n.central, db_owner, 60s);
  CHECK_MESSAGE(diff.empty(), diff << tail(cg.log()));
  const double slow_s = seconds_since(slow_start);
  MESSAGE("converged through answers 1.5 s late at 64 KB/s in " << slow_s << " s");
  CHECK(slow_s >= 1.5);  // the proxy did slow it down
  CHECK_MESSAGE(cg.metric("couchgate_couchdb_transport_errors_total").value_or(0) == transport_before, tail(cg.log()));
  CHECK_MESSAGE(count_lines(cg.log(), "CouchDB unreachable") == 0, tail(cg.log()));

  // 2. Bodies trickling at 2 KB/s: a document with a 40 KB attachment (54 KB as base64) cannot
  // arrive within request_timeout. The request times out, is counted, the source backs off and
  // tries again; nothing is written half, and once the server is fast again it arrives.
  const double errors_before = cg.metric("couchgate_replication_errors_total").value_or(0);
  proxy.slow(0ms, 2 * 1024);
  ++faults;
  REQUIRE(c.put("/" + enc(db) + "/big-att",
                json{{"_attachments", {{"a.bin", {{"content_type", "application/octet-stream"},
                                                  {"data", b64(std::string(40000, 'y'))}}}}}})
              .status == 201);
  liveness live;
  bool backing_off = false;
  const bool timed_out = hold(
      0ms, 60s,
      [&] {
        live.sample(cg);
        backing_off = backing_off || cg.metric("couchgate_sources_backing_off").value_or(0) > 0;
      },
      [&] {
        return !live.alive || (backing_off && cg.metric("couchgate_couchdb_transport_errors_total").value_or(0) > transport_before);
      });
  REQUIRE_MESSAGE(live.alive, "couchgate exited while the server was slow:\n" << tail(cg.log()));
  CHECK_MESSAGE(timed_out, "no timeout counted, or no source backing off, while bodies trickled:\n" << tail(cg.log()));
  CHECK(cg.metric("couchgate_replication_errors_total").value_or(0) > errors_before);
  CHECK(couch().get("/" + enc(n.central) + "/" + enc(user + ":big-att")).status == 404);
  proxy.slow(0ms);
  const auto fast = steady_clock::now();
  diff = wait_central_converged(n.central, db_owner, 90s);
  CHECK_MESSAGE(diff.empty(), diff << tail(cg.log()));
  MESSAGE(faults << " kinds of slowness injected; timeouts counted: "
                 << cg.metric("couchgate_couchdb_transport_errors_total").value_or(0) - transport_before
                 << "; converged " << seconds_since(fast) << " s after the server was fast again; lost: "
                 << std::string(diff.empty() ? "nothing" : "see above"));
  CHECK(cg.terminate() == 0);
}
