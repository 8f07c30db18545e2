// The engine above the transport seam, driven by scripted exchanges (scripted_transport.hpp):
// the `_db_updates` follower (which the pouchdb-server of the integration tests does not have),
// the update_seq sweep through an outage (an injected clock), a transfer whose batch the target
// refuses with 413, a checkpoint conflict, and provisioning.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gateway/provisioner.hpp"
#include "policy/security.hpp"
#include "replicator/change_detector.hpp"
#include "replicator/fanin.hpp"
#include "replicator/state_store.hpp"
#include "replicator/transfer.hpp"
#include "replicator/transport/couch_client.hpp"
#include "tests/unit/scripted_transport.hpp"

namespace r = couchgate::replicator;
using namespace couchgate::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// The pieces change_detector works with, none started, and the on_created calls it made.
struct engine : scripted_fanin {
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> created;
  // The node's [global_changes] update_db as CouchDB answers it: unset (on) unless a test sets it.
  std::atomic<bool> updates_off{false};
  engine() {
    server.on("GET", "/_node/_local/_config/global_changes/update_db", [this](const r::http_request&) {
      return updates_off ? answer(200, R"("false")") : answer(404, R"({"error":"not_found","reason":"unknown_config_value"})");
    }, -1);
  }
  r::change_detector::created_fn on_created() {
    return [this](const std::string& db, bool recreated) {
      std::lock_guard lk(mu);
      created.emplace_back(db, recreated);
    };
  }
  std::vector<std::pair<std::string, bool>> created_calls() {
    std::lock_guard lk(mu);
    return created;
  }
};

r::detector_options detector_opts(r::detection mode) {
  r::detector_options o;
  o.mode = mode;
  o.create_global_changes = false;
  o.backoff = r::backoff_policy{1ms, 5ms};
  o.sweep_interval = 50ms;
  o.sweep_rate = 10000;
  o.canary_wait = 0ms;  // the canary tests turn it on
  return o;
}

std::string db_updates_page(const std::vector<std::pair<std::string, std::string>>& events, const std::string& last) {
  json rows = json::array();
  int i = 0;
  for (const auto& [db, type] : events) rows.push_back({{"db_name", db}, {"type", type}, {"seq", std::to_string(++i) + "-g1"}});
  return json{{"results", rows}, {"last_seq", last}}.dump();
}

// A `_db_updates` follower over `e`, started, counting its "events may have been lost" calls.
// Ended however the test ends: a failed REQUIRE still releases the feed waiting for a rule
// before the detector's thread is joined (else the test hangs instead of failing).
struct follower_run {
  engine& e;
  std::atomic<int> lost{0};
  r::change_detector d;
  explicit follower_run(engine& en)
      : e(en), d(en.client, en.state, &en.fan, en.metrics, detector_opts(r::detection::db_updates), en.on_created()) {
    d.set_listener({nullptr, [this] { ++lost; }});
    d.start();
  }
  ~follower_run() {
    e.server.close();
    d.stop();
  }
};

// The probe answered and the feed's stored position 7-g1: the follower's first read is since=7-g1.
void probe_and_position(scripted_transport& s) {
  s.on("GET", "/_db_updates?since=now&limit=1", answer(200, R"({"results":[],"last_seq":"1-g0"})"));
  s.on("GET", "/cg_state/feed%3Adb_updates", answer(200, R"({"_id":"feed:db_updates","_rev":"1-f","value":"7-g1"})"), -1);
}

}  // namespace

TEST_CASE("_db_updates follower: updated, created and deleted events, a dropped feed, an empty one; the position resumes and is saved") {
  engine e;
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  e.fan.add_source("userdb-b", couchgate::policy::owner{couchgate::policy::owner::kind::user, "b"});
  auto& s = e.server;
  s.on("GET", "/_db_updates?since=now&limit=1", answer(200, R"({"results":[],"last_seq":"1-g0"})"));  // the probe
  s.on("GET", "/cg_state/feed%3Adb_updates", answer(404, R"({"error":"not_found","reason":"missing"})"));
  s.on("GET", "/_db_updates?since=now&limit=1000&feed=longpoll",
       answer(200, db_updates_page({{"userdb-a", "updated"},
                                    {"userdb-new", "created"},
                                    {"userdb-b", "deleted"},
                                    {"userdb-c", "updated"},
                                    {"central", "deleted"}},
                                   "5-g1")));
  s.on("GET", "/_db_updates?since=5-g1&limit=1000&feed=longpoll", failure());  // the connection drops
  // ... and the server has been up for a day: nothing was lost with it.
  s.on("GET", "/_membership", answer(200, R"({"all_nodes":["couchdb@127.0.0.1"],"cluster_nodes":["couchdb@127.0.0.1"]})"));
  s.on("GET", "/_node/couchdb%40127.0.0.1/_system", answer(200, R"({"uptime":86400,"memory":{}})"));
  s.on("GET", "/_db_updates?since=5-g1&limit=1000&feed=longpoll", answer(200, R"({"results":[],"last_seq":"5-g1"})"));
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:db_updates","rev":"1-f"}])"), -1);
  s.on("GET", "/cg_state/feed%3Adb_updates", answer(200, R"({"_id":"feed:db_updates","_rev":"1-f","value":"5-g1"})"), -1);

  r::change_detector d(e.client, e.state, &e.fan, e.metrics, detector_opts(r::detection::db_updates), e.on_created());
  std::atomic<int> lost{0};
  d.set_listener({nullptr, [&] { ++lost; }});
  d.start();
  // Two scripted answers and then a third request from the same position, which waits (a quiet feed).
  REQUIRE_MESSAGE(s.wait_for([&] { return s.count("GET", "since=5-g1&limit=1000&feed=longpoll") >= 3; }), s.requests().size());
  CHECK(d.active_mode() == r::detection::db_updates);
  CHECK_FALSE(e.fan.knows("userdb-b"));  // deleted: dropped
  CHECK(e.fan.knows("userdb-a"));
  // userdb-a is a source (marked dirty, no callback); created and unknown updated ones go to the daemon.
  CHECK(e.created_calls() == std::vector<std::pair<std::string, bool>>{{"userdb-new", false}, {"userdb-c", false}});
  CHECK(lost == 0);  // the drop lost nothing: no source is looked at again, no live feed woken
  CHECK(s.count("GET", "/_membership") == 1);
  s.close();
  d.stop();
  // The position was saved when the feed ended.
  bool saved = false;
  for (const auto& q : s.requests()) {
    if (q.method == "POST" && q.target == "/cg_state/_bulk_docs" && q.body.find(R"("value":"5-g1")") != std::string::npos) saved = true;
  }
  CHECK(saved);
  CHECK(s.unexpected().empty());
}

TEST_CASE("_db_updates follower without fan-in (the front door's live feeds alone): every event reaches the listener, nothing else is done") {
  engine e;
  auto& s = e.server;
  s.on("GET", "/_db_updates?since=now&limit=1", answer(200, R"({"results":[],"last_seq":"1-g0"})"));  // the probe
  s.on("GET", "/cg_state/feed%3Adb_updates", answer(404, R"({"error":"not_found","reason":"missing"})"));
  s.on("GET", "/_db_updates?since=now&limit=1000&feed=longpoll",
       answer(200, db_updates_page({{"userdb-a", "updated"}, {"userdb-new", "created"}, {"userdb-b", "deleted"}}, "5-g1")));
  s.on("GET", "/_membership", answer(200, R"({"all_nodes":["couchdb@127.0.0.1"],"cluster_nodes":["couchdb@127.0.0.1"]})"), -1);
  s.on("GET", "/_node/couchdb%40127.0.0.1/_system", answer(200, R"({"uptime":86400,"memory":{}})"), -1);
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:db_updates","rev":"1-f"}])"), -1);
  s.on("GET", "/cg_state/feed%3Adb_updates", answer(200, R"({"_id":"feed:db_updates","_rev":"1-f","value":"5-g1"})"), -1);

  r::change_detector d(e.client, e.state, nullptr, e.metrics, detector_opts(r::detection::db_updates), e.on_created());
  struct ended {  // a failed REQUIRE still releases the waiting feed before the thread is joined
    scripted_transport& s;
    r::change_detector& d;
    ~ended() {
      s.close();
      d.stop();
    }
  } end{s, d};
  std::mutex mu;
  std::vector<std::string> heard;
  d.set_listener({[&](const std::string& db) {
                    std::lock_guard lk(mu);
                    heard.push_back(db);
                  },
                  nullptr});
  d.start();
  // Resumed from its last row (couch_client::resume_seq).
  const bool waiting = s.wait_for([&] { return s.count("GET", "since=3-g1&limit=1000&feed=longpoll") >= 1; });
  std::string asked;
  for (const auto& q : s.requests()) asked += q.method + " " + q.target + "\n";
  INFO(asked);
  REQUIRE(waiting);
  CHECK(d.active_mode() == r::detection::db_updates);
  {
    std::lock_guard lk(mu);
    CHECK(heard == std::vector<std::string>{"userdb-a", "userdb-new", "userdb-b"});
  }
  CHECK(e.created_calls().empty());  // no fan-in: databases are nobody's sources here
  CHECK_FALSE(e.fan.knows("userdb-a"));
  CHECK(s.unexpected().empty());
}

TEST_CASE("_db_updates feed broken: every source is looked at again only when a node restarted, is down, or cannot be asked") {
  struct scenario {
    const char* name;
    const char* membership;  // answer body (status 200), or nullptr: 404 (not CouchDB, e.g. pouchdb-server)
    const char* system;      // each node's _system answer
    int lost;
  };
  const scenario cases[] = {
      {"up for a day", R"({"all_nodes":["n1","n2"],"cluster_nodes":["n1","n2"]})", R"({"uptime":86400})", 0},
      {"restarted just now", R"({"all_nodes":["n1"],"cluster_nodes":["n1"]})", R"({"uptime":1})", 1},
      {"one node down", R"({"all_nodes":["n1"],"cluster_nodes":["n1","n2"]})", R"({"uptime":86400})", 1},
      {"uptime not a number", R"({"all_nodes":["n1"],"cluster_nodes":["n1"]})", R"({"uptime":"long"})", 1},
      {"no _membership", nullptr, R"({"uptime":86400})", 1},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    engine e;
    e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
    auto& s = e.server;
    probe_and_position(s);
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", answer(200, R"({"results":[],"last_seq":"7-g1"})"));
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", failure());
    // The server cannot be asked at first (still unreachable): asked again before the next read.
    s.on("GET", "/_membership", failure());
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", failure());
    if (c.membership) {
      s.on("GET", "/_membership", answer(200, c.membership));
    } else {
      s.on("GET", "/_membership", answer(404, R"({"error":"not_found","reason":"missing"})"));
    }
    s.on("GET", "/_system", answer(200, c.system), -1);
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", answer(200, R"({"results":[],"last_seq":"7-g1"})"));
    follower_run run(e);
    // The feed read again after the break (the fourth read), then a fifth that waits.
    REQUIRE(s.wait_for([&] { return s.count("GET", "since=7-g1&limit=1000&feed=longpoll") >= 5; }));
    CHECK(run.lost == c.lost);
    CHECK(s.count("GET", "/_membership") == 2);  // once unanswered, once answered: never again
    s.close();
    run.d.stop();
    CHECK(s.unexpected().empty());
  }
}

TEST_CASE("_db_updates feed broken once: a restart within one retry is caught; a silent feed is a break, an idle one's client timeout is not; a node that does not answer counts as lost") {
  struct scenario {
    const char* name;
    r::http_response broken;  // what the second read gets
    r::http_response system;  // each node's _system answer
    int lost;
    std::size_t asks;  // GET /_membership
  };
  const scenario cases[] = {
      {"connection reset, restarted just now", failure(), answer(200, R"({"uptime":1})"), 1, 1},
      {"connection reset, up for a day", failure(), answer(200, R"({"uptime":86400})"), 0, 1},
      {"silent for three heartbeats, restarted", failure(r::error_kind::network, "no data for 30000 ms"),
       answer(200, R"({"uptime":0})"), 1, 1},
      // CouchDB ignores `timeout` on a feed with a heartbeat: an idle server's longpoll ends on
      // the client's clock, heartbeats flowing. Not a break: nothing is asked.
      {"ended at the client's timeout, heartbeats flowing", failure(r::error_kind::timeout, "timed out"),
       answer(200, R"({"uptime":0})"), 0, 0},
      {"server back, its node does not answer _system", failure(), failure(r::error_kind::timeout, "timed out"), 1, 1},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    engine e;
    auto& s = e.server;
    probe_and_position(s);
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", answer(200, R"({"results":[],"last_seq":"7-g1"})"));
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", c.broken);
    s.on("GET", "/_membership", answer(200, R"({"all_nodes":["n1"],"cluster_nodes":["n1"]})"));
    s.on("GET", "/_node/n1/_system", c.system);
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", answer(200, R"({"results":[],"last_seq":"7-g1"})"));
    follower_run run(e);
    REQUIRE(s.wait_for([&] { return s.count("GET", "since=7-g1&limit=1000&feed=longpoll") >= 4; }));
    CHECK(run.lost == c.lost);
    CHECK(s.count("GET", "/_membership") == c.asks);
    s.close();
    run.d.stop();
    CHECK(s.unexpected().empty());
  }
}

TEST_CASE("doubtful_nodes: every cluster node up for longer than the break, or else lost") {
  const auto one = json::parse(R"({"all_nodes":["a"],"cluster_nodes":["a"]})");
  const auto up = [](double s) { return std::map<std::string, json>{{"a", json{{"uptime", s}}}}; };
  CHECK(r::doubtful_nodes(one, up(100), 30s).empty());
  CHECK(!r::doubtful_nodes(one, up(31), 30s).empty());   // within the margin of two seconds
  CHECK(!r::doubtful_nodes(one, up(20), 30s).empty());   // restarted during the break
  CHECK(r::doubtful_nodes(one, up(33), 30s).empty());
  CHECK(!r::doubtful_nodes(one, {}, 30s).empty());       // its _system not read
  CHECK(!r::doubtful_nodes(json::parse(R"({"all_nodes":[],"cluster_nodes":[]})"), {}, 1s).empty());
  CHECK(!r::doubtful_nodes(json::parse(R"({"cluster_nodes":"a"})"), up(100), 1s).empty());
  CHECK(!r::doubtful_nodes(json::parse(R"({"all_nodes":["a"],"cluster_nodes":["a",7]})"), up(100), 1s).empty());
  CHECK(!r::doubtful_nodes(json::parse("[]"), up(100), 1s).empty());
  CHECK(!r::doubtful_nodes(one, std::map<std::string, json>{{"a", json{{"uptime", nullptr}}}}, 1s).empty());
}

TEST_CASE("_db_updates feed broken three times while a node is down for good: every source is looked at once, not at every break") {
  engine e;
  auto& s = e.server;
  probe_and_position(s);
  for (int i = 0; i < 3; ++i) {
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", answer(200, R"({"results":[],"last_seq":"7-g1"})"));
    s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", failure());
    s.on("GET", "/_membership", answer(200, R"({"all_nodes":["a"],"cluster_nodes":["a","b"]})"));
    s.on("GET", "/_node/a/_system", answer(200, R"({"uptime":86400})"));
  }
  follower_run run(e);
  // Three answered reads, three breaks judged, then the read that waits.
  REQUIRE(s.wait_for([&] { return s.count("GET", "since=7-g1&limit=1000&feed=longpoll") >= 7; }));
  CHECK(run.lost == 1);
  CHECK(s.count("GET", "/_membership") == 3);
  CHECK(s.count("GET", "/_node/b/_system") == 0);  // down: not asked
  CHECK(s.unexpected().empty());
}

TEST_CASE("doubtful_nodes and lost_since_last_look: a restart always counts, a node down or unanswering once") {
  const auto two = json::parse(R"({"all_nodes":["a","b"],"cluster_nodes":["a","b"]})");
  const auto b_down = json::parse(R"({"all_nodes":["a"],"cluster_nodes":["a","b"]})");
  const auto up = [](double a, json b) {
    return std::map<std::string, json>{{"a", json{{"uptime", a}}}, {"b", json{{"uptime", std::move(b)}}}};
  };
  using d = r::node_doubt;
  CHECK(r::doubtful_nodes(two, up(100, 100), 30s).empty());
  CHECK(r::doubtful_nodes(two, up(100, 10), 30s) == r::node_doubts{{"b", d::restarted}});
  CHECK(r::doubtful_nodes(b_down, up(100, 100), 30s) == r::node_doubts{{"b", d::down}});
  CHECK(r::doubtful_nodes(two, up(5, "x"), 30s) == r::node_doubts{{"a", d::restarted}, {"b", d::unknown}});
  CHECK(r::doubtful_nodes(json::parse(R"({"cluster_nodes":[]})"), {}, 1s) == r::node_doubts{{"", d::unknown}});
  CHECK(r::cluster_nodes(two) == std::set<std::string>{"a", "b"});
  CHECK_FALSE(r::cluster_nodes(json::parse(R"({"cluster_nodes":["a",1]})")).has_value());

  CHECK_FALSE(r::lost_since_last_look({}, {}));
  CHECK(r::lost_since_last_look({}, {{"b", d::restarted}}));
  CHECK(r::lost_since_last_look({{"b", d::restarted}}, {{"b", d::restarted}}));  // restarted again
  CHECK(r::lost_since_last_look({}, {{"b", d::down}}));                          // newly down
  CHECK_FALSE(r::lost_since_last_look({{"b", d::down}}, {{"b", d::down}}));      // still down: counted once
  CHECK_FALSE(r::lost_since_last_look({{"b", d::unknown}}, {{"b", d::unknown}}));
  CHECK(r::lost_since_last_look({{"b", d::restarted}}, {{"b", d::down}}));       // up, then down again
  CHECK(r::lost_since_last_look({{"b", d::down}}, {{"a", d::down}, {"b", d::down}}));
}

TEST_CASE("_db_updates feed up: the nodes are looked at every node_check_interval; a node restarted meanwhile wakes everything once") {
  // Each look: the membership answer and node b's _system answer (node a is up for a day).
  struct look {
    const char* membership;
    const char* b_system;
  };
  const char* both = R"({"all_nodes":["a","b"],"cluster_nodes":["a","b"]})";
  const char* b_gone = R"({"all_nodes":["a"],"cluster_nodes":["a","b"]})";
  const char* day = R"({"uptime":86400})";
  struct scenario {
    const char* name;
    std::vector<look> looks;
    int lost;
  };
  const scenario cases[] = {
      {"every node up throughout", {{both, day}, {both, day}, {both, day}}, 0},
      {"b restarted between two looks", {{both, day}, {both, R"({"uptime":1})"}, {both, day}}, 1},
      {"b down for three looks, then back", {{both, day}, {b_gone, day}, {b_gone, day}, {b_gone, day}, {both, R"({"uptime":1})"}}, 2},
      {"b stops answering _system", {{both, day}, {both, R"({"error":"x"})"}, {both, R"({"error":"x"})"}}, 1},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    engine e;
    auto& s = e.server;
    probe_and_position(s);
    s.on("GET", "/_node/a/_system", answer(200, day), -1);
    for (const auto& l : c.looks) {
      s.on("GET", "/_membership", answer(200, l.membership));
      if (std::string(l.membership) == both) s.on("GET", "/_node/b/_system", answer(200, l.b_system));
      // The feed answers (nothing new) after each look; the read after the last look waits.
      s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", answer(200, R"({"results":[],"last_seq":"7-g1"})"));
    }
    // The look before the read that waits: every node up for a day.
    s.on("GET", "/_membership", answer(200, both));
    s.on("GET", "/_node/b/_system", answer(200, day));
    // A clock that moves a second at each look at it: every read is preceded by a look.
    auto opts = detector_opts(r::detection::db_updates);
    opts.node_check_interval = 1s;
    auto ticks = std::make_shared<std::atomic<long>>(0);
    opts.clock.now = [ticks] { return std::chrono::steady_clock::time_point{} + std::chrono::seconds(++*ticks); };
    std::atomic<int> lost{0};
    r::change_detector d(e.client, e.state, &e.fan, e.metrics, opts, e.on_created());
    d.set_listener({nullptr, [&] { ++lost; }});
    d.start();
    const auto reads = c.looks.size() + 1;
    const bool waited = s.wait_for([&] { return s.count("GET", "since=7-g1&limit=1000&feed=longpoll") >= reads; });
    // Looked at while the last read waits (after close() the follower may ask once more).
    const int lost_then = lost;
    const auto looks = s.count("GET", "/_membership");
    const auto unexpected = s.unexpected();
    s.close();
    d.stop();
    REQUIRE(waited);
    CHECK(lost_then == c.lost);
    CHECK(looks == c.looks.size() + 1);
    CHECK(unexpected.empty());
  }
}

TEST_CASE("a source deleted and created again (_db_updates created event): checkpoint reset, counted and logged once; a new database is neither") {
  engine e;
  captured_log log("detector");
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  REQUIRE(e.state.advance({{"userdb-a", "5-x", e.state.start_position("userdb-a").epoch}}) == 1);  // its old life's progress
  auto& s = e.server;
  s.on("GET", "/_db_updates?since=now&limit=1", answer(200, R"({"results":[],"last_seq":"1-g0"})"));
  s.on("GET", "/cg_state/feed%3Adb_updates", answer(404, R"({"error":"not_found","reason":"missing"})"), -1);
  s.on("GET", "/_db_updates?since=now&limit=1000&feed=longpoll",
       answer(200, db_updates_page({{"userdb-a", "deleted"}, {"userdb-a", "created"}, {"userdb-new", "created"}, {"userdb-a", "created"}}, "4-g1")));
  std::vector<std::string> state_writes;
  s.on("POST", "/cg_state/_bulk_docs", [&](const r::http_request& q) {
    json rows = json::array();
    const json body = json::parse(q.body_text());
    for (const auto& d : body["docs"]) {
      state_writes.push_back(d["_id"].get<std::string>() + "=" + (d.contains("seq") ? d["seq"].dump() : ""));
      rows.push_back({{"ok", true}, {"id", d["_id"]}, {"rev", "2-r"}});
    }
    return answer(201, rows.dump());
  }, -1);
  r::change_detector d(e.client, e.state, &e.fan, e.metrics, detector_opts(r::detection::db_updates), e.on_created());
  d.start();
  REQUIRE(s.wait_for([&] { return s.count("GET", "since=4-g1&limit=1000&feed=longpoll") >= 1; }));
  s.close();
  d.stop();
  INFO(log.all());
  CHECK(metric_value(e.metrics, "couchgate_databases_recreated_total") == 1);
  CHECK(log.count("was created again") == 1);
  CHECK(log.count("db=userdb-a was created again (a created event)") == 1);
  CHECK(e.state.checkpoint("userdb-a") == json(0));
  CHECK(std::count(state_writes.begin(), state_writes.end(), "checkpoint:userdb-a=0") == 1);
  // The second created event finds no progress to reset; userdb-new never had any.
  CHECK(e.created_calls() == std::vector<std::pair<std::string, bool>>{{"userdb-a", true}, {"userdb-new", false}, {"userdb-a", false}});
  CHECK(s.unexpected().empty());
}

TEST_CASE("_db_updates probe answered 400 (no _db_updates): the sweep reads every source's update_seq instead") {
  engine e;
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  auto& s = e.server;
  s.on("GET", "/_db_updates", answer(400, R"({"error":"bad_request","reason":"unsupported"})"));
  s.on("GET", "/userdb-a", answer(200, R"({"db_name":"userdb-a","update_seq":"3-x","instance_start_time":"0"})"), -1);
  r::change_detector d(e.client, e.state, &e.fan, e.metrics, detector_opts(r::detection::automatic), e.on_created());
  d.start();
  REQUIRE(s.wait_for([&] { return s.count("GET", "/userdb-a") >= 2; }));
  CHECK(d.active_mode() == r::detection::sweep);
  CHECK(s.count("GET", "/_db_updates") == 1);  // decided once
  d.stop();
  CHECK(s.unexpected().empty());
}

TEST_CASE("_db_updates answering 404 mid-way: the mode is decided again (here: sweep) and every source is looked at") {
  engine e;
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  auto& s = e.server;
  s.on("GET", "/_db_updates?since=now&limit=1", answer(200, R"({"results":[],"last_seq":"1-g0"})"));
  s.on("GET", "/cg_state/feed%3Adb_updates", answer(404, R"({"error":"not_found","reason":"missing"})"), -1);
  s.on("GET", "/_db_updates?since=now&limit=1000&feed=longpoll", answer(404, R"({"error":"not_found","reason":"Database does not exist."})"));
  s.on("GET", "/_db_updates?since=now&limit=1", answer(404, R"({"error":"not_found","reason":"Database does not exist."})"));
  s.on("GET", "/userdb-a", answer(200, R"({"db_name":"userdb-a","update_seq":"3-x"})"), -1);
  r::change_detector d(e.client, e.state, &e.fan, e.metrics, detector_opts(r::detection::automatic), e.on_created());
  d.start();
  REQUIRE(s.wait_for([&] { return s.count("GET", "/userdb-a") >= 1; }));
  CHECK(d.active_mode() == r::detection::sweep);
  // probe, the feed (its target contains the probe's), the second probe
  CHECK(s.count("GET", "/_db_updates?since=now&limit=1") == 3);
  d.stop();
  CHECK(s.unexpected().empty());
}

namespace {
// A server's `_db_updates` for the canary tests: the position is "1-g0"; while `records`, every
// read (normal or longpoll) reports an update of the state database (couchgate's canary or its
// saved position), else nothing; a longpoll answers after 20 ms (a quiet feed, shortened).
struct canary_server {
  std::atomic<bool> records{false};
  void script(scripted_transport& s) {
    s.on("GET", "/_db_updates", [this](const r::http_request& q) {
      if (q.target.find("feed=longpoll") != std::string::npos) std::this_thread::sleep_for(20ms);
      const bool reads = q.target.find("since=now") == std::string::npos || q.target.find("feed=longpoll") != std::string::npos;
      if (records && reads) return answer(200, db_updates_page({{"cg_state", "updated"}}, "1-g0"));
      return answer(200, R"({"results":[],"last_seq":"1-g0"})");
    }, -1);
    s.on("GET", "/cg_state/feed%3Adb_updates", answer(404, R"({"error":"not_found","reason":"missing"})"), -1);
    // Every document written is accepted (a row per id, as CouchDB answers).
    s.on("POST", "/cg_state/_bulk_docs", [](const r::http_request& q) {
      json rows = json::array();
      for (const auto& d : json::parse(q.body ? *q.body : "{}").value("docs", json::array())) {
        rows.push_back({{"ok", true}, {"id", d.value("_id", "")}, {"rev", "1-f"}});
      }
      return answer(201, rows.dump());
    }, -1);
    s.on("GET", "/_membership", answer(200, R"({"all_nodes":["a"],"cluster_nodes":["a"]})"), -1);
    s.on("GET", "/_node/a/_system", answer(200, R"({"uptime":86400})"), -1);
    s.on("GET", "/userdb-a", answer(200, R"({"db_name":"userdb-a","update_seq":"3-x","instance_start_time":"0"})"), -1);
  }
  // Some source read (GET /userdb-a) lies between a canary's write and a later poll of the feed
  // for it (a normal read, not a longpoll), with no other canary between them.
  static bool swept_during_trial(const scripted_transport& s) {
    bool in_trial = false, swept = false;
    for (const auto& q : s.requests()) {
      if (q.method == "POST" && q.body.find("feed:db_updates_canary") != std::string::npos) {
        in_trial = true;
        swept = false;
      } else if (in_trial && q.target == "/userdb-a") {
        swept = true;
      } else if (in_trial && swept && q.target.find("/_db_updates?since=1-g0") == 0 &&
                 q.target.find("feed=longpoll") == std::string::npos) {
        return true;
      }
    }
    return false;
  }
  static std::size_t canaries(const scripted_transport& s) {
    std::size_t n = 0;
    for (const auto& q : s.requests()) {
      if (q.method == "POST" && q.body.find("feed:db_updates_canary") != std::string::npos) ++n;
    }
    return n;
  }
};

r::detector_options canary_opts(r::detection mode) {
  auto o = detector_opts(mode);
  o.node_check_interval = 100ms;  // looks, canaries and retries of a silent feed
  o.canary_wait = 300ms;
  return o;
}
}  // namespace

TEST_CASE("[global_changes] update_db false: a feed that records nothing is never followed; the sweep tries it again until it reports couchgate's own write") {
  struct scenario {
    const char* name;
    r::detection mode;
  };
  // Whatever the mode configured: following a silent feed would lose every change.
  for (const scenario c : {scenario{"automatic", r::detection::automatic}, scenario{"db_updates", r::detection::db_updates}}) {
    CAPTURE(c.name);
    engine e;
    e.updates_off = true;
    e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
    auto& s = e.server;
    canary_server server;
    server.script(s);
    r::change_detector d(e.client, e.state, &e.fan, e.metrics, canary_opts(c.mode), e.on_created());
    std::atomic<int> lost{0};
    d.set_listener({nullptr, [&] { ++lost; }});
    d.start();
    // Swept, and update_db looked at again while it stays off (no canary meanwhile).
    REQUIRE(s.wait_for([&] { return s.count("GET", "/userdb-a") >= 2 && s.count("GET", "global_changes/update_db") >= 3; }));
    CHECK(d.active_mode() == r::detection::sweep);
    CHECK(d.feed_silent());
    CHECK(s.count("GET", "feed=longpoll") == 0);
    CHECK(canary_server::canaries(s) == 0);
    // Turned on at runtime: CouchDB 3.5 still records nothing until the node restarts. The
    // canary is written and not reported: the sweep goes on.
    e.updates_off = false;
    REQUIRE(s.wait_for([&] { return canary_server::canaries(s) >= 2; }));
    CHECK(d.active_mode() == r::detection::sweep);
    CHECK(s.count("GET", "feed=longpoll") == 0);
    CHECK(lost == 0);
    // The sweep went on while a canary was waited for: a source read between a canary's write
    // and a later read of the feed for it.
    CHECK(canary_server::swept_during_trial(s));
    // Restarted: the canary is reported. Back to the feed, every source looked at once (the
    // changes between the last sweep and the first recorded event are in neither).
    server.records = true;
    REQUIRE(s.wait_for([&] { return s.count("GET", "feed=longpoll") >= 1; }));
    CHECK(d.active_mode() == r::detection::db_updates);
    CHECK_FALSE(d.feed_silent());
    CHECK(lost == 1);
    s.close();
    d.stop();
    CHECK(s.unexpected().empty());
  }
}

TEST_CASE("_db_updates followed while the node records nothing (update_db was false at runtime; its config says true): the canary is not reported, every source is looked at, then swept") {
  engine e;
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  auto& s = e.server;
  canary_server server;
  server.script(s);
  r::change_detector d(e.client, e.state, &e.fan, e.metrics, canary_opts(r::detection::automatic), e.on_created());
  std::atomic<int> lost{0};
  d.set_listener({nullptr, [&] { ++lost; }});
  d.start();
  REQUIRE(s.wait_for([&] { return s.count("GET", "/userdb-a") >= 1; }));
  CHECK(d.active_mode() == r::detection::sweep);
  CHECK(d.feed_silent());
  CHECK(lost == 1);
  CHECK(canary_server::canaries(s) >= 1);
  CHECK(s.count("GET", "feed=longpoll") >= 1);  // it was followed until then
  // Records again (restarted): followed, and its canaries are reported: it stays followed.
  server.records = true;
  REQUIRE(s.wait_for([&] { return d.active_mode() == r::detection::db_updates; }));
  const auto canaries = canary_server::canaries(s);
  REQUIRE(s.wait_for([&] { return canary_server::canaries(s) >= canaries + 3; }));
  CHECK(d.active_mode() == r::detection::db_updates);
  CHECK(lost == 2);
  s.close();
  d.stop();
  CHECK(s.unexpected().empty());
}

TEST_CASE("[global_changes] update_db turned false while the feed is followed: noticed at the next look; every source looked at, then swept") {
  engine e;
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  auto& s = e.server;
  probe_and_position(s);
  // The probe once more when the mode is decided again (answering: the feed works, the node
  // records nothing).
  s.on("GET", "/_db_updates?since=now&limit=1", answer(200, R"({"results":[],"last_seq":"1-g0"})"));
  s.on("GET", "/_membership", answer(200, R"({"all_nodes":["a"],"cluster_nodes":["a"]})"), -1);
  s.on("GET", "/_node/a/_system", answer(200, R"({"uptime":86400})"), -1);
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:db_updates","rev":"1-f"}])"), -1);
  s.on("GET", "/userdb-a", answer(200, R"({"db_name":"userdb-a","update_seq":"3-x","instance_start_time":"0"})"), -1);
  // Each read of the feed answers at once (nothing new), and is followed by a look (the clock
  // moves a second at each look at it, the interval is one second).
  s.on("GET", "/_db_updates?since=7-g1&limit=1000&feed=longpoll", answer(200, R"({"results":[],"last_seq":"7-g1"})"), -1);
  auto opts = detector_opts(r::detection::automatic);
  opts.node_check_interval = 1s;
  auto ticks = std::make_shared<std::atomic<long>>(0);
  opts.clock.now = [ticks] { return std::chrono::steady_clock::time_point{} + std::chrono::seconds(++*ticks); };
  r::change_detector d(e.client, e.state, &e.fan, e.metrics, opts, e.on_created());
  std::atomic<int> lost{0};
  d.set_listener({nullptr, [&] { ++lost; }});
  d.start();
  REQUIRE(s.wait_for([&] { return s.count("GET", "feed=longpoll") >= 3; }));
  CHECK(lost == 0);
  CHECK(d.active_mode() == r::detection::db_updates);
  e.updates_off = true;
  REQUIRE(s.wait_for([&] { return s.count("GET", "/userdb-a") >= 1; }));
  CHECK(d.active_mode() == r::detection::sweep);
  CHECK(lost == 1);
  s.close();
  d.stop();
  CHECK(s.unexpected().empty());
}

namespace {
// fan-in's rows: userdb-a's documents into central as "a:<id>".
const row_route user_a{"userdb-a", "userdb-a", "central", "", "a:"};
}  // namespace

TEST_CASE("transfer: a batch refused with 413 is split in halves until the one document too large is alone and refused") {
  scripted_couch c;
  auto& s = c.server;
  auto rows = feed_rows(user_a, {"d1", "d2", "d3", "d4"});
  s.on("POST", "/central/_revs_diff", all_missing);
  std::vector<std::size_t> batch_sizes;
  s.on("POST", "/central/_bulk_docs", [&](const r::http_request& q) {
    const json body = json::parse(q.body_text());
    CHECK(body["new_edits"] == false);
    batch_sizes.push_back(body["docs"].size());
    for (const auto& d : body["docs"]) {
      if (d["_id"] == "a:d4") return answer(413, R"({"error":"too_large","reason":"the request entity is too large"})");
    }
    return answer(201, "[]");
  }, -1);
  r::protocol_caps caps;
  auto res = r::transfer(c.client, rows, r::transfer_options{}, caps);
  CHECK(batch_sizes == std::vector<std::size_t>{4, 2, 2, 1, 1});
  CHECK(res.docs_written == 3);
  CHECK(res.failed.empty());  // the unit goes on: its checkpoint may advance
  REQUIRE(res.doc_failures.size() == 1);
  CHECK(res.doc_failures[0].source_id == "d4");
  CHECK(res.doc_failures[0].error == "too_large");
  CHECK(res.requests == 6);
  CHECK(s.count("POST", "/userdb-a/_bulk_get") == 0);  // the bodies came with the feed
  CHECK(s.unexpected().empty());
}

TEST_CASE("transfer: a 503 for the batch fails the unit (retried later), nothing is refused") {
  scripted_couch c;
  auto& s = c.server;
  auto rows = feed_rows(user_a, {"d1", "d2"});
  s.on("POST", "/central/_revs_diff", answer(200, json{{"a:d1", {{"missing", rows[0].revs}}}, {"a:d2", {{"missing", rows[1].revs}}}}.dump()));
  s.on("POST", "/central/_bulk_docs", answer(503, R"({"error":"service_unavailable","reason":"busy"})"));
  r::protocol_caps caps;
  auto res = r::transfer(c.client, rows, r::transfer_options{}, caps);
  CHECK(res.docs_written == 0);
  REQUIRE(res.failed.count("userdb-a") == 1);
  CHECK(res.failed.at("userdb-a").kind == r::couch_error_kind::overloaded);
  CHECK(res.doc_failures.empty());
}

TEST_CASE("state_store: a checkpoint write that conflicts adopts the other writer's checkpoint; a turn begun before cannot move it") {
  scripted_couch c;
  auto& s = c.server;
  auto& st = c.state;
  s.on("POST", "/cg_state/_bulk_docs",
       answer(201, R"([{"id":"checkpoint:userdb-a","error":"conflict","reason":"Document update conflict."}])"));
  s.on("GET", "/cg_state/checkpoint%3Auserdb-a",
       answer(200, R"({"_id":"checkpoint:userdb-a","_rev":"3-b","type":"checkpoint","source":"userdb-a","seq":"9-other"})"));
  const auto before = st.start_position("userdb-a");
  CHECK(st.advance({{"userdb-a", "5-x", before.epoch}}) == 1);
  CHECK(st.checkpoint("userdb-a") == json("5-x"));
  auto f = st.flush();
  REQUIRE(f.ok());
  CHECK(f.value().written == 0);
  CHECK(st.checkpoint("userdb-a") == json("9-other"));  // the other writer wins
  CHECK_FALSE(st.has_unflushed());
  const auto after = st.start_position("userdb-a");
  CHECK(after.epoch != before.epoch);
  CHECK(st.advance({{"userdb-a", "6-x", before.epoch}}) == 0);  // a turn that started before: dropped
  CHECK(st.checkpoint("userdb-a") == json("9-other"));

  // The next advance is written over the adopted revision.
  s.on("POST", "/cg_state/_bulk_docs", [](const r::http_request& q) {
    const json body = json::parse(q.body_text());
    CHECK(body["docs"][0]["_rev"] == "3-b");
    CHECK(body["docs"][0]["seq"] == "10-x");
    return answer(201, R"([{"ok":true,"id":"checkpoint:userdb-a","rev":"4-c"}])");
  });
  CHECK(st.advance({{"userdb-a", "10-x", after.epoch}}) == 1);
  auto g = st.flush();
  REQUIRE(g.ok());
  CHECK(g.value().written == 1);
  CHECK_FALSE(st.has_unflushed());
  CHECK(s.unexpected().empty());
}

TEST_CASE("provisioner: a new user's database is created (q=1) and gets its _security; one that exists is repaired") {
  scripted_couch c;
  auto& s = c.server;
  couchgate::gateway::provisioning_config cfg;
  std::vector<std::string> added;
  couchgate::gateway::provisioner_hooks hooks;
  hooks.source_added = [&](const std::string& db, const couchgate::policy::owner&) { added.push_back(db); };
  // Said before each create (requests made so far), and again after a create that did not answer 201.
  std::vector<std::pair<std::string, std::size_t>> creating;
  hooks.creating = [&](const std::string& db, bool yes) { creating.emplace_back((yes ? "+" : "-") + db, s.requests().size()); };
  couchgate::gateway::provisioner p(c.client, c.state, c.metrics, cfg, hooks);
  const std::string alice = p.db_for("alice");
  const std::string bob = p.db_for("bob");
  const json want_alice = couchgate::policy::render_security(cfg.security, "alice");
  const json want_bob = couchgate::policy::render_security(cfg.security, "bob");

  s.on("PUT", "/" + alice + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + alice + "/_security", answer(200, R"({"ok":true})"));
  s.on("PUT", "/" + bob + "?q=1", answer(412, R"({"error":"file_exists","reason":"The database could not be created, the file already exists."})"));
  s.on("GET", "/" + bob + "/_security", answer(200, R"({})"));  // CouchDB's default: admin-only, no members
  s.on("PUT", "/" + bob + "/_security", answer(200, R"({"ok":true})"));

  const std::vector<couchgate::policy::user_doc> users{{"alice", {"app"}, false}, {"bob", {"app"}, false}};
  CHECK(p.apply(users) == 0);
  const auto seen = s.requests();
  bool alice_security = false, bob_security = false;
  for (const auto& q : seen) {
    if (q.method == "PUT" && q.target == "/" + alice + "/_security") alice_security = json::parse(q.body) == want_alice;
    if (q.method == "PUT" && q.target == "/" + bob + "/_security") bob_security = json::parse(q.body) == want_bob;
  }
  CHECK(alice_security);
  CHECK(bob_security);
  REQUIRE(p.user("alice"));
  CHECK(p.user("alice")->done);
  REQUIRE(p.user("bob"));
  CHECK(p.user("bob")->done);
  CHECK(added == std::vector<std::string>{alice, bob});
  CHECK(seen.size() == 5);
  // Before each create; after bob's 412 (alice's _security already asked for).
  CHECK(creating == std::vector<std::pair<std::string, std::size_t>>{{"+" + alice, 0}, {"+" + bob, 1}, {"-" + bob, 3}});
  CHECK(s.unexpected().empty());

  // A refused _security write is recorded as the user's error, and counted as retryable.
  s.on("PUT", "/" + alice + "?q=1", answer(412, R"({"error":"file_exists","reason":"exists"})"));
  s.on("GET", "/" + alice + "/_security", answer(200, R"({})"));
  s.on("PUT", "/" + alice + "/_security", answer(500, R"({"error":"internal_server_error","reason":"boom"})"));
  CHECK(p.apply({{"alice", {"app"}, false}}) == 1);
  CHECK_FALSE(p.user("alice")->done);
  CHECK(p.user("alice")->last_error.find("boom") != std::string::npos);
}

namespace {
// The detector's clock in a test: time moves only by its sleeps, and only up to `until`; a
// sleep past it waits (the detector is then `parked`) until the test moves `until` or stops.
struct fake_clock {
  std::mutex mu;
  std::condition_variable cv;
  std::chrono::steady_clock::time_point t{std::chrono::hours(1)};
  std::chrono::steady_clock::time_point until = t;
  bool parked = false, stopping = false;

  std::chrono::steady_clock::time_point now() {
    std::lock_guard lk(mu);
    return t;
  }
  r::detector_clock hooks() {
    return r::detector_clock{[this] { return now(); },
                             [this](std::chrono::milliseconds d) {
                               std::unique_lock lk(mu);
                               parked = t + d > until;
                               cv.notify_all();
                               cv.wait(lk, [&] { return stopping || t + d <= until; });
                               parked = false;
                               if (stopping) return false;
                               t += d;
                               return true;
                             },
                             [] { return 0.5; }};
  }
  // Lets time run for `d` more and waits until the detector sleeps past it.
  bool run_for(std::chrono::milliseconds d) {
    std::unique_lock lk(mu);
    until += d;
    parked = false;
    cv.notify_all();
    return cv.wait_for(lk, 5s, [&] { return parked; });
  }
  void stop() {
    std::lock_guard lk(mu);
    stopping = true;
    cv.notify_all();
  }
};

// "at ms: reads" per window, for a readable comparison.
std::string describe(const std::vector<std::pair<std::chrono::milliseconds, int>>& windows) {
  std::string out;
  for (const auto& [at, n] : windows) out += std::to_string(at.count()) + "ms:" + std::to_string(n) + " ";
  return out;
}
}  // namespace

TEST_CASE("sweep through an outage: it stops after the first window that fails and backs off; then every source each sweep_interval") {
  engine e;
  fake_clock clock;
  const auto t0 = clock.now();
  const int sources = 30;
  for (int i = 0; i < sources; ++i) {
    const std::string name = "u" + std::to_string(i);
    e.fan.add_source("userdb-" + name, couchgate::policy::owner{couchgate::policy::owner::kind::user, name});
  }
  // How many update_seq reads were asked at each fake time (a window's reads go out together).
  std::atomic<bool> down{true};
  std::mutex mu;
  std::map<std::chrono::milliseconds, int> reads;
  auto windows = [&](std::chrono::milliseconds from) {
    std::lock_guard lk(mu);
    return std::vector<std::pair<std::chrono::milliseconds, int>>(reads.lower_bound(from), reads.end());
  };
  e.server.on("GET", "/userdb-", [&](const r::http_request& q) {
    {
      std::lock_guard lk(mu);
      ++reads[std::chrono::duration_cast<std::chrono::milliseconds>(clock.now() - t0)];
    }
    if (down) return failure(r::error_kind::network, "Couldn't connect to server");
    return answer(200, json{{"db_name", q.target.substr(1)}, {"update_seq", "0-x"}, {"instance_start_time", "1700000000"}}.dump());
  }, -1);
  auto opts = detector_opts(r::detection::sweep);
  opts.sweep_rate = 100;  // windows of 10 databases, 100 ms apart: a whole sweep is 3 windows
  opts.sweep_interval = 500ms;
  opts.backoff = r::backoff_policy{1000ms, 4000ms};
  opts.clock = clock.hooks();
  const int window = 10;
  const auto window_time = 100ms;
  r::change_detector d(e.client, e.state, &e.fan, e.metrics, opts, e.on_created());
  d.start();

  // 10 s of outage: each sweep ends with its first window; the next starts
  // max(sweep_interval, backoff(failures)) later (jitter pinned).
  REQUIRE(clock.run_for(10000ms));
  std::vector<std::pair<std::chrono::milliseconds, int>> want{{0ms, window}};
  for (std::uint32_t k = 1;; ++k) {
    const auto next = want.back().first + std::max<std::chrono::milliseconds>(opts.sweep_interval, r::backoff_delay(opts.backoff, k, opts.clock.jitter));
    if (next > 10000ms) break;
    want.emplace_back(next, window);
  }
  const auto outage = windows(0ms);
  CHECK(describe(outage) == describe(want));  // the sweep without backoff: 20 sweeps of 3 windows, 600 reads
  REQUIRE_FALSE(outage.empty());

  // The server answers again: from the next sweep on, every source is read, sweeps start
  // sweep_interval apart (the failures are forgotten).
  down = false;
  REQUIRE(clock.run_for(3000ms));
  clock.stop();
  d.stop();
  const auto after = windows(outage.back().first + 1ms);
  REQUIRE(after.size() >= 9);
  const auto first = after.front().first;
  std::vector<std::pair<std::chrono::milliseconds, int>> steady;
  for (int sweep = 0; sweep < 3; ++sweep) {
    for (int part = 0; part < 3; ++part) steady.emplace_back(first + sweep * opts.sweep_interval + part * window_time, window);
  }
  CHECK(describe({after.begin(), after.begin() + 9}) == describe(steady));
  CHECK(e.created_calls().empty());
  CHECK(e.server.unexpected().empty());
}
