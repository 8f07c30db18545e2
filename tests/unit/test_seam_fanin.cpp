// fan-in turns driven by scripted exchanges (scripted_transport.hpp): the epoch marker and the
// stored checkpoints are loaded, one `_changes` per source from its checkpoint, `_revs_diff`,
// `_bulk_get` for what the feed did not carry, `_bulk_docs` on the central database, then the
// marker's generation raised and the checkpoint written, in that order; and a central database
// refusing the batch leaves the checkpoint where it was and the source backing off.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "gateway/feed_notifier.hpp"
#include "gateway/front/feed_park.hpp"
#include "replicator/change_detector.hpp"
#include "replicator/fanin.hpp"
#include "replicator/state_store.hpp"
#include "replicator/transport/couch_client.hpp"
#include "tests/unit/scripted_transport.hpp"

namespace r = couchgate::replicator;
using namespace couchgate::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::string rev1 = "1-" + std::string(32, 'a');
const std::string rev2 = "2-" + std::string(32, 'b');

// The fan-in pieces over a scripted server: one worker, checkpoints written inside the round,
// no periodic look at the central database (`tweak` may change these options).
struct fan_engine : scripted_fanin {
  explicit fan_engine(const std::function<void(r::fanin_options&)>& tweak = {})
      : scripted_fanin([&] {
          auto o = central_options();
          o.workers = 1;
          o.checkpoint_interval = 0ms;
          o.target_check_interval = 0ms;
          o.backoff = r::backoff_policy{60s, 120s};  // a failed source stays backing off during the test
          if (tweak) tweak(o);
          return o;
        }()) {}

  // The marker of central (epoch e1, generation 3) and a stored checkpoint of userdb-a at 2-x.
  void script_load() {
    server.on("GET", "/central/_local/couchgate-epoch",
              answer(200, R"({"_id":"_local/couchgate-epoch","_rev":"0-3","epoch":"e1","generation":3})"));
    server.on("GET", "/cg_state/_all_docs",
              answer(200, json{{"rows", {{{"id", "checkpoint:userdb-a"},
                                          {"doc", {{"_id", "checkpoint:userdb-a"}, {"_rev", "1-c"}, {"type", "checkpoint"},
                                                   {"source", "userdb-a"}, {"seq", "2-x"},
                                                   {"central", {{"epoch", "e1"}, {"generation", 3}}}}}}}}}
                                  .dump()));
  }
  // userdb-a's changes after 2-x: d1 new (its body in the feed), d2 edited (fetched).
  void script_changes() {
    server.on("GET", "/userdb-a/_changes?since=2-x",
              answer(200, json{{"results",
                                {{{"seq", "3-x"}, {"id", "d1"}, {"changes", {{{"rev", rev1}}}},
                                  {"doc", {{"_id", "d1"}, {"_rev", rev1}, {"n", 1}}}},
                                 {{"seq", "4-x"}, {"id", "d2"}, {"changes", {{{"rev", rev2}}}}}}},
                               {"last_seq", "4-x"},
                               {"pending", 0}}
                                  .dump()));
    server.on("POST", "/central/_revs_diff", all_missing);
    server.on("POST", "/userdb-a/_bulk_get", [](const r::http_request& q) {
      const json asked = json::parse(q.body_text());
      CHECK(asked["docs"] == json::parse(R"([{"id":"d2","rev":")" + rev2 + R"("}])"));
      json doc = {{"_id", "d2"}, {"_rev", rev2}, {"n", 2},
                  {"_revisions", {{"start", 2}, {"ids", {std::string(32, 'b'), std::string(32, 'a')}}}}};
      return answer(200, json{{"results", {{{"id", "d2"}, {"docs", {{{"ok", doc}}}}}}}}.dump());
    });
  }
  // The marker moved and the checkpoint written, every time asked.
  void script_checkpoints() {
    server.on("PUT", "/central/_local/couchgate-epoch", answer(201, R"({"ok":true,"id":"_local/couchgate-epoch","rev":"0-4"})"), -1);
    server.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"checkpoint:userdb-a","rev":"2-c"}])"), -1);
  }
  // Central takes every batch, as often as asked.
  void script_central_takes_all() {
    server.on("POST", "/central/_revs_diff", all_missing, -1);
    server.on("POST", "/central/_bulk_docs", answer(201, "[]"), -1);
  }
  // A server whose `_db_updates` works (the probe), is followed from a stored position (7-g1),
  // and then reports nothing: the feed's longpoll gets no answer until the test ends.
  void script_quiet_feed() {
    server.on("GET", "/_node/_local/_config/global_changes/update_db",
              answer(404, R"({"error":"not_found","reason":"unknown_config_value"})"), -1);
    server.on("GET", "/_db_updates?since=now&limit=1", answer(200, R"({"results":[],"last_seq":"1-g0"})"));
    server.on("GET", "/cg_state/feed%3Adb_updates", answer(200, R"({"_id":"feed:db_updates","_rev":"1-f","value":"7-g1"})"), -1);
  }
  void start_user_a() {
    REQUIRE(fan.load().ok());
    fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
    fan.start();  // a new source is dirty: one turn
  }
};

// A `_changes` answer with one new document `id` (its body inline) at `seq`.
r::http_response one_new_doc(const std::string& id, const std::string& seq) {
  return answer(200, json{{"results", {{{"seq", seq}, {"id", id}, {"changes", {{{"rev", rev1}}}},
                                        {"doc", {{"_id", id}, {"_rev", rev1}}}}}},
                          {"last_seq", seq},
                          {"pending", 0}}
                         .dump());
}

// A detector that follows `_db_updates` alone: no canary, no node looks.
r::detector_options followed_feed(std::chrono::milliseconds verify_interval) {
  r::detector_options o;
  o.mode = r::detection::db_updates;
  o.create_global_changes = false;
  o.canary_wait = 0ms;
  o.node_check_interval = 0ms;
  o.sweep_rate = 10000;
  o.verify_interval = verify_interval;
  return o;
}

std::vector<std::string> targets_in_order(const scripted_transport& s) {
  std::vector<std::string> out;
  for (const auto& q : s.requests()) out.push_back(q.method + " " + q.target.substr(0, q.target.find('?')));
  return out;
}

}  // namespace

TEST_CASE("fanin: one turn from the stored checkpoint; central gets both revisions before the marker and checkpoint move") {
  fan_engine e;
  auto& s = e.server;
  e.script_load();
  e.script_changes();
  std::vector<std::string> written_ids;
  s.on("POST", "/central/_bulk_docs", [&](const r::http_request& q) {
    const json body = json::parse(q.body_text());
    CHECK(body["new_edits"] == false);
    for (const auto& d : body["docs"]) written_ids.push_back(d["_id"].get<std::string>());
    return answer(201, "[]");
  });
  s.on("PUT", "/central/_local/couchgate-epoch", [](const r::http_request& q) {
    CHECK(json::parse(q.body_text())["generation"] == 4);
    CHECK(json::parse(q.body_text())["_rev"] == "0-3");
    return answer(201, R"({"ok":true,"id":"_local/couchgate-epoch","rev":"0-4"})");
  });
  json checkpoint_written;
  s.on("POST", "/cg_state/_bulk_docs", [&](const r::http_request& q) {
    checkpoint_written = json::parse(q.body_text())["docs"][0];
    return answer(201, R"([{"ok":true,"id":"checkpoint:userdb-a","rev":"2-c"}])");
  });

  auto loaded = e.fan.load();
  REQUIRE(loaded.ok());
  CHECK(loaded.value().loaded == 1);
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  e.fan.start();  // a new source is dirty: one turn
  const bool done = s.wait_for([&] { return e.fan.idle() && s.count("POST", "/cg_state/_bulk_docs") == 1; });
  std::string seen;
  for (const auto& x : targets_in_order(s)) seen += x + "\n";
  for (const auto& x : s.unexpected()) seen += "unexpected " + x + "\n";
  INFO(seen);
  REQUIRE(done);
  e.fan.stop();

  CHECK(std::set<std::string>(written_ids.begin(), written_ids.end()) == std::set<std::string>{"a:d1", "a:d2"});
  CHECK(checkpoint_written["_id"] == "checkpoint:userdb-a");
  CHECK(checkpoint_written["_rev"] == "1-c");
  CHECK(checkpoint_written["seq"] == "4-x");
  CHECK(checkpoint_written["central"] == json{{"epoch", "e1"}, {"generation", 4}});
  CHECK(e.state.checkpoint("userdb-a") == json("4-x"));
  // The order that makes a checkpoint safe: documents acknowledged, marker raised, checkpoint.
  CHECK(targets_in_order(s) == std::vector<std::string>{"GET /central/_local/couchgate-epoch", "GET /cg_state/_all_docs",
                                                        "GET /userdb-a/_changes", "POST /central/_revs_diff",
                                                        "POST /userdb-a/_bulk_get", "POST /central/_bulk_docs",
                                                        "PUT /central/_local/couchgate-epoch", "POST /cg_state/_bulk_docs"});
  const auto st = e.fan.status("userdb-a");
  REQUIRE(st);
  CHECK(st->docs_written == 2);
  CHECK(st->failures == 0);
  CHECK(s.unexpected().empty());
}

TEST_CASE("fanin: central refusing the batch (500) leaves the checkpoint where it was and the source backing off") {
  fan_engine e;
  auto& s = e.server;
  e.script_load();
  e.script_changes();
  s.on("POST", "/central/_bulk_docs", answer(500, R"({"error":"internal_server_error","reason":"boom"})"));

  REQUIRE(e.fan.load().ok());
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  e.fan.start();  // a new source is dirty: one turn
  REQUIRE(s.wait_for([&] {
    const auto st = e.fan.status("userdb-a");
    return st && st->failures == 1 && !st->active;
  }));
  e.fan.stop();
  const auto st = e.fan.status("userdb-a");
  CHECK(st->phase == r::source_phase::backing_off);
  CHECK(st->last_error.find("boom") != std::string::npos);
  CHECK(st->docs_written == 0);
  CHECK(e.state.checkpoint("userdb-a") == json("2-x"));  // not moved past what central did not take
  CHECK(s.count("PUT", "/central/_local/couchgate-epoch") == 0);
  CHECK(s.count("POST", "/cg_state/_bulk_docs") == 0);
  CHECK(s.unexpected().empty());
}

TEST_CASE("fanin: a document central refuses as too large (413) is counted and logged once, listed, and the checkpoint moves past it") {
  fan_engine e;
  auto& s = e.server;
  captured_log log("fanin");
  e.script_load();
  e.script_changes();
  std::vector<std::size_t> batches;
  s.on("POST", "/central/_bulk_docs", [&](const r::http_request& q) {
    const json body = json::parse(q.body_text());
    batches.push_back(body["docs"].size());
    for (const auto& d : body["docs"]) {
      if (d["_id"] == "a:d2") return answer(413, R"({"error":"too_large","reason":"the request entity is too large"})");
    }
    return answer(201, "[]");
  }, -1);
  s.on("PUT", "/central/_local/couchgate-epoch", answer(201, R"({"ok":true,"id":"_local/couchgate-epoch","rev":"0-4"})"));
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"checkpoint:userdb-a","rev":"2-c"}])"));

  REQUIRE(e.fan.load().ok());
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  e.fan.start();
  REQUIRE(s.wait_for([&] { return e.fan.idle() && s.count("POST", "/cg_state/_bulk_docs") == 1; }));
  e.fan.stop();
  INFO(log.all());
  CHECK(batches == std::vector<std::size_t>{2, 1, 1});  // split until d2 is alone
  CHECK(metric_value(e.metrics, "couchgate_doc_write_failures_total") == 1);
  CHECK(log.count("not replicated") == 1);
  CHECK(log.count("doc=d2 rev=" + rev2 + " not replicated: too_large") == 1);
  const auto listed = e.fan.refused("userdb-a");
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == "d2");
  CHECK(listed[0].error == "too_large");
  CHECK(e.state.checkpoint("userdb-a") == json("4-x"));  // passed over, not retried for ever
  CHECK(s.unexpected().empty());
}

TEST_CASE("fanin: a database couchgate created empty is not read at its creation or addition; the first change announced is read") {
  fan_engine e;
  auto& s = e.server;
  e.script_load();
  const std::string empty_page = R"({"results":[],"last_seq":"1-x","pending":0})";
  s.on("GET", "/userdb-b/_changes?since=0", answer(200, empty_page));
  s.on("GET", "/userdb-new/_changes?since=0", answer(200, empty_page));
  s.on("GET", "/userdb-r/_changes?since=0", answer(200, empty_page));
  s.on("PUT", "/central/_local/couchgate-epoch", answer(201, R"({"ok":true,"id":"_local/couchgate-epoch","rev":"0-4"})"), -1);
  s.on("POST", "/cg_state/_bulk_docs", [](const r::http_request& q) {
    json rows = json::array();
    const json body = json::parse(q.body_text());
    for (const auto& d : body["docs"]) rows.push_back({{"ok", true}, {"id", d["_id"]}, {"rev", "1-c"}});
    return answer(201, rows.dump());
  }, -1);
  const couchgate::policy::owner o{couchgate::policy::owner::kind::user, "n"};
  REQUIRE(e.fan.load().ok());

  // Created by couchgate (the provisioner's 201), its `created` event, its addition: no read.
  e.fan.created_empty("userdb-new");
  e.fan.mark_created("userdb-new");
  e.fan.add_source("userdb-new", o);
  e.fan.add_source("userdb-b", o);  // an ordinary new source: read (and the point where the worker has looked at both)
  e.fan.start();
  REQUIRE(s.wait_for([&] { return s.count("GET", "/userdb-b/_changes") == 1 && e.fan.idle(); }));
  CHECK(s.count("GET", "/userdb-new/_changes") == 0);
  CHECK(e.fan.knows("userdb-new"));

  // A change announced for it (an `updated` event): read from 0.
  CHECK(e.fan.mark_dirty("userdb-new"));
  CHECK(s.wait_for([&] { return s.count("GET", "/userdb-new/_changes?since=0") == 1 && e.fan.idle(); }));

  // A user who writes before couchgate adds the database as a source: the `updated` event comes
  // first (the database unknown), the addition after it is dirty all the same.
  e.fan.created_empty("userdb-r");
  CHECK_FALSE(e.fan.mark_dirty("userdb-r"));
  e.fan.add_source("userdb-r", o);
  CHECK(s.wait_for([&] { return s.count("GET", "/userdb-r/_changes?since=0") == 1 && e.fan.idle(); }));

  // Said before a create that then answered 412 (the database existed): added as usual, read.
  s.on("GET", "/userdb-x/_changes?since=0", answer(200, empty_page));
  e.fan.created_empty("userdb-x");
  e.fan.not_created("userdb-x");
  e.fan.add_source("userdb-x", o);
  CHECK(s.wait_for([&] { return s.count("GET", "/userdb-x/_changes?since=0") == 1 && e.fan.idle(); }));
  e.fan.stop();
  CHECK(s.unexpected().empty());
}

TEST_CASE("fanin: design documents in unchanged-id mode never reach central; couchgate_replication_skipped_docs_total counts them; the checkpoint passes them") {
  fan_engine e([](r::fanin_options& o) { o.ids = couchgate::policy::id_mode::unchanged; });
  auto& s = e.server;
  e.script_load();
  e.script_checkpoints();
  // Two design documents (one with its body in the feed, one without) around an ordinary one.
  s.on("GET", "/userdb-a/_changes?since=2-x",
       answer(200, json{{"results",
                         {{{"seq", "3-x"}, {"id", "_design/v"}, {"changes", {{{"rev", rev1}}}},
                           {"doc", {{"_id", "_design/v"}, {"_rev", rev1}, {"views", json::object()}}}},
                          {{"seq", "4-x"}, {"id", "d1"}, {"changes", {{{"rev", rev1}}}}, {"doc", {{"_id", "d1"}, {"_rev", rev1}, {"n", 1}}}},
                          {{"seq", "5-x"}, {"id", "_design/w"}, {"changes", {{{"rev", rev2}}}}}}},
                        {"last_seq", "5-x"},
                        {"pending", 0}}
                           .dump()));
  json asked;
  s.on("POST", "/central/_revs_diff", [&](const r::http_request& q) {
    asked = json::parse(q.body_text());
    return all_missing(q);
  });
  std::vector<std::string> written;
  s.on("POST", "/central/_bulk_docs", [&](const r::http_request& q) {
    const json body = json::parse(q.body_text());
    for (const auto& d : body["docs"]) written.push_back(d["_id"].get<std::string>());
    return answer(201, "[]");
  });
  CHECK(metric_value(e.metrics, "couchgate_replication_skipped_docs_total") == 0);

  e.start_user_a();
  REQUIRE(s.wait_for([&] { return e.fan.idle() && s.count("POST", "/cg_state/_bulk_docs") == 1; }));
  e.fan.stop();
  CHECK(metric_value(e.metrics, "couchgate_replication_skipped_docs_total") == 2);
  CHECK(written == std::vector<std::string>{"d1"});
  CHECK(asked.size() == 1);
  CHECK(asked.contains("d1"));
  CHECK(s.count("POST", "_bulk_get") == 0);  // the design document without a body is not fetched either
  CHECK(e.state.checkpoint("userdb-a") == json("5-x"));  // not read again
  CHECK(e.fan.refused("userdb-a").empty());  // skipped by rule, not a failure
  CHECK(s.unexpected().empty());
}

TEST_CASE("fanin: a stemmed history found in two rounds is logged once, listed once in the failures, counted once") {
  // userdb-a's d2 at generation 9, its history stemmed to generations 5..9 (revs_limit 5);
  // central's leaf of it is rev1 (generation 1), which that history no longer reaches.
  const std::string rev9 = "9-" + std::string(32, '9');
  json revisions = {{"start", 9}, {"ids", json::array()}};
  for (char c : std::string("98765")) revisions["ids"].push_back(std::string(32, c));
  fan_engine e([](r::fanin_options& o) { o.backoff = r::backoff_policy{10ms, 20ms}; });  // the failed round is retried soon
  auto& s = e.server;
  captured_log log("fanin");
  e.script_load();
  s.on("GET", "/userdb-a/_changes?since=2-x",
       answer(200, json{{"results", {{{"seq", "3-x"}, {"id", "d2"}, {"changes", {{{"rev", rev9}}}}}}}, {"last_seq", "3-x"}, {"pending", 0}}
                       .dump()),
       -1);
  s.on("POST", "/central/_revs_diff", answer(200, json{{"a:d2", {{"missing", {rev9}}, {"possible_ancestors", {rev1}}}}}.dump()), -1);
  s.on("POST", "/userdb-a/_bulk_get",
       answer(200, json{{"results",
                         {{{"id", "d2"}, {"docs", {{{"ok", {{"_id", "d2"}, {"_rev", rev9}, {"n", 9}, {"_revisions", revisions}}}}}}}}}}
                       .dump()),
       -1);
  // The first round's write fails (the turn is retried and meets the same history again).
  s.on("POST", "/central/_bulk_docs", answer(500, R"({"error":"internal_server_error","reason":"boom"})"));
  std::vector<std::string> written;
  s.on("POST", "/central/_bulk_docs", [&](const r::http_request& q) {
    const json body = json::parse(q.body_text());
    for (const auto& d : body["docs"]) written.push_back(d["_rev"].get<std::string>());
    return answer(201, "[]");
  });
  e.script_checkpoints();

  e.start_user_a();
  REQUIRE(s.wait_for([&] { return e.fan.idle() && s.count("POST", "/cg_state/_bulk_docs") == 1; }));
  e.fan.stop();
  INFO(log.all());
  CHECK(s.count("POST", "/central/_bulk_docs") == 2);
  CHECK(written == std::vector<std::string>{rev9});  // written: nothing lost
  CHECK(log.count("stemmed history") == 1);
  CHECK(log.count("doc=d2 rev=" + rev9 + ": stemmed history") == 1);
  CHECK(metric_value(e.metrics, "couchgate_stemmed_histories_total") == 1);
  const auto listed = e.fan.refused("userdb-a");
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == "d2");
  CHECK(listed[0].rev == rev9);
  CHECK(listed[0].error == "stemmed_history");
  CHECK(listed[0].reason.find(rev1) != std::string::npos);
  CHECK(e.state.checkpoint("userdb-a") == json("3-x"));
  CHECK(s.unexpected().empty());
}

TEST_CASE("fanin: a verify read that finds changes counts them as unannounced; one that finds nothing, one after an event, or one on a source already due does not") {
  fan_engine e;
  auto& s = e.server;
  e.script_load();
  e.script_changes();
  e.script_checkpoints();
  e.script_central_takes_all();
  captured_log logged("fanin");
  e.start_user_a();  // its first turn: checkpoint 4-x
  REQUIRE(s.wait_for([&] { return e.fan.idle() && e.state.checkpoint("userdb-a") == json("4-x"); }));
  const auto unannounced = [&] { return metric_value(e.metrics, "couchgate_fanin_unannounced_total"); };

  SUBCASE("nothing new: not counted") {
    s.on("GET", "/userdb-a/_changes?since=4-x", answer(200, R"({"results":[],"last_seq":"4-x","pending":0})"));
    CHECK(e.fan.verify("userdb-a"));
    REQUIRE(s.wait_for([&] { return e.fan.idle() && s.count("GET", "_changes?since=4-x") == 1; }));
    CHECK(unannounced() == 0);
    CHECK(logged.count("no _db_updates event announced") == 0);
  }
  SUBCASE("a change no event announced: counted and logged at warn") {
    s.on("GET", "/userdb-a/_changes?since=4-x", one_new_doc("d3", "5-x"));
    CHECK(e.fan.verify("userdb-a"));
    REQUIRE(s.wait_for([&] { return e.fan.idle() && e.state.checkpoint("userdb-a") == json("5-x"); }));
    CHECK(unannounced() == 1);
    CHECK(logged.count("1 source(s) had changes no _db_updates event announced") == 1);
    CHECK(logged.count("db=userdb-a the latest") == 1);
    // A second one within the minute: counted, logged at debug only.
    s.on("GET", "/userdb-a/_changes?since=5-x", one_new_doc("d4", "6-x"));
    CHECK(e.fan.verify("userdb-a"));
    REQUIRE(s.wait_for([&] { return e.fan.idle() && e.state.checkpoint("userdb-a") == json("6-x"); }));
    CHECK(unannounced() == 2);
  }
  SUBCASE("an event marked it after the verify: the change was announced") {
    // The verify's turn is held until the event came.
    s.hold("GET", "/userdb-a/_changes?since=4-x", one_new_doc("d3", "5-x"));
    CHECK(e.fan.verify("userdb-a"));
    REQUIRE(s.wait_for([&] { return s.held() == 1; }));
    e.fan.mark_dirty("userdb-a");  // the event, while the verify's read is on its way
    s.on("GET", "/userdb-a/_changes?since=5-x", answer(200, R"({"results":[],"last_seq":"5-x","pending":0})"));
    s.release_held();
    REQUIRE(s.wait_for([&] { return e.fan.idle() && s.count("GET", "_changes?since=5-x") == 1; }));
    CHECK(unannounced() == 0);
  }
  SUBCASE("a source in its turn, an unknown one: not marked") {
    s.hold("GET", "/userdb-a/_changes?since=4-x", one_new_doc("d3", "5-x"));
    e.fan.mark_dirty("userdb-a");
    REQUIRE(s.wait_for([&] { return s.held() == 1; }));
    CHECK_FALSE(e.fan.verify("userdb-a"));  // in its turn: read anyway
    CHECK_FALSE(e.fan.verify("userdb-zz"));
    s.release_held();
    REQUIRE(s.wait_for([&] { return e.fan.idle() && e.state.checkpoint("userdb-a") == json("5-x"); }));
    CHECK(unannounced() == 0);
  }
  e.fan.stop();
  CHECK(s.unexpected().empty());
}

TEST_CASE("change detector: while the feed is followed and announces nothing, the verify pass reads every source again; a change found is counted as unannounced") {
  fan_engine e;
  auto& s = e.server;
  e.script_load();
  e.script_changes();
  e.script_checkpoints();
  e.script_central_takes_all();
  e.script_quiet_feed();
  e.start_user_a();
  REQUIRE(s.wait_for([&] { return e.fan.idle() && e.state.checkpoint("userdb-a") == json("4-x"); }));
  // A write whose event never comes, then nothing more.
  s.on("GET", "/userdb-a/_changes?since=4-x", one_new_doc("d3", "5-x"));
  s.on("GET", "/userdb-a/_changes?since=5-x", answer(200, R"({"results":[],"last_seq":"5-x","pending":0})"), -1);

  r::change_detector d(e.client, e.state, &e.fan, e.metrics, followed_feed(200ms), [](const std::string&, bool) {});
  d.start();
  struct ended {
    fan_engine& e;
    r::change_detector& d;
    ~ended() {
      e.server.close();
      d.stop();
      e.fan.stop();
    }
  } at_end{e, d};
  REQUIRE(s.wait_for([&] { return s.count("GET", "/_db_updates?since=7-g1") == 1; }));
  CHECK(d.active_mode() == r::detection::db_updates);
  // Read again by the verify pass, the write found, and the passes go on (read again from 5-x).
  REQUIRE(s.wait_for([&] { return s.count("GET", "/userdb-a/_changes?since=5-x") >= 2; }));
  CHECK(e.state.checkpoint("userdb-a") == json("5-x"));
  CHECK(metric_value(e.metrics, "couchgate_fanin_unannounced_total") == 1);
  CHECK(s.count("GET", "/_db_updates?since=7-g1") == 1);  // the feed's one read still waits
  CHECK(s.unexpected().empty());
}

TEST_CASE("fanin: a database couchgate created empty, whose first change was never announced, is read by a verify") {
  fan_engine e;
  auto& s = e.server;
  e.script_load();  // userdb-a's checkpoint: 2-x
  e.script_checkpoints();
  e.script_central_takes_all();
  REQUIRE(e.fan.load().ok());
  e.fan.created_empty("userdb-a");
  e.fan.add_source("userdb-a", couchgate::policy::owner{couchgate::policy::owner::kind::user, "a"});
  e.fan.start();
  CHECK(e.fan.idle());  // created empty: no read at its addition
  s.on("GET", "/userdb-a/_changes?since=2-x", one_new_doc("d1", "3-x"));
  CHECK(e.fan.verify("userdb-a"));
  REQUIRE(s.wait_for([&] { return e.fan.idle() && e.state.checkpoint("userdb-a") == json("3-x"); }));
  CHECK(metric_value(e.metrics, "couchgate_fanin_unannounced_total") == 1);
  e.fan.stop();
  CHECK(s.unexpected().empty());
}

TEST_CASE("verify_gap: a pass over half the interval, never faster than the sweep's rate") {
  using ms = std::chrono::milliseconds;
  CHECK(r::verify_gap(10000, std::chrono::minutes(30), 200) == ms(90));
  CHECK(r::verify_gap(10, std::chrono::minutes(30), 200) == ms(90000));
  CHECK(r::verify_gap(1000000, std::chrono::minutes(30), 200) == ms(5));  // 200 a second at most
  CHECK(r::verify_gap(1000000, std::chrono::minutes(30), 0) == ms(1000));  // a rate not positive: 1 a second
  CHECK(r::verify_gap(3, ms(600), 10000) == ms(100));
  CHECK(r::verify_gap(0, ms(600), 10000) == ms(600));
}

TEST_CASE("live feeds: while _db_updates is followed and announces nothing, the verify look wakes a parked feed whose database moved on, and only it") {
  fan_engine e;
  auto& s = e.server;
  e.script_load();
  REQUIRE(e.fan.load().ok());
  e.script_quiet_feed();
  // userdb-a moved on to 5 with no event; userdb-b is where its feed already is.
  s.on("GET", "/userdb-a", answer(200, R"({"db_name":"userdb-a","update_seq":"5-x"})"), -1);
  s.on("GET", "/userdb-b", answer(200, R"({"db_name":"userdb-b","update_seq":"3-x"})"), -1);

  // (fan-in's own pass is not what this test looks at)
  r::change_detector d(e.client, e.state, &e.fan, e.metrics, followed_feed(0ms), [](const std::string&, bool) {});
  couchgate::gateway::front::feed_registry feeds(10);
  std::atomic<int> woken_a{0}, woken_b{0};
  const auto a = feeds.subscribe("userdb-a", "a", [&] { ++woken_a; }, 0);
  const auto b = feeds.subscribe("userdb-b", "b", [&] { ++woken_b; }, 0);
  REQUIRE(a);
  REQUIRE(b);
  feeds.park(*a, 4);
  feeds.park(*b, 3);
  couchgate::gateway::feed_notifier n(e.client, feeds, &d, {20ms, 10000, 300ms});
  d.set_listener(n.listener());
  d.start();
  // The feed followed before the feeds' thread starts (a detector still probing means the sweep).
  REQUIRE(s.wait_for([&] { return s.count("GET", "/_db_updates?since=7-g1") == 1; }));
  REQUIRE(d.active_mode() == r::detection::db_updates);
  n.start();
  struct ended {
    fan_engine& e;
    r::change_detector& d;
    couchgate::gateway::feed_notifier& n;
    ~ended() {
      e.server.close();
      n.stop();
      d.stop();
    }
  } at_end{e, d, n};
  REQUIRE(s.wait_for([&] { return woken_a.load() == 1; }));
  // A second pass has begun: the first one's answer about userdb-b was handled.
  REQUIRE(s.wait_for([&] { return s.count("GET", "/userdb-b") >= 2; }));
  CHECK(woken_b.load() == 0);
  CHECK(d.active_mode() == r::detection::db_updates);
  CHECK(s.count("GET", "/_db_updates?since=7-g1") == 1);  // looked at beside the feed's waiting read
}
