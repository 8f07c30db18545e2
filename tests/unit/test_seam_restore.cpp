// The pieces restore's request count rests on (issue #18), driven by scripted exchanges
// (scripted_transport.hpp): a transfer into a target restore created asks no _revs_diff, and the
// state database's checkpoint resets and restore records are one request for many databases.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <unordered_set>
#include <vector>

#include "replicator/state_store.hpp"
#include "replicator/transfer.hpp"
#include "replicator/transport/couch_client.hpp"
#include "tests/unit/scripted_transport.hpp"

namespace r = couchgate::replicator;
using couchgate::test::answer;
using couchgate::test::scripted_transport;
using nlohmann::json;

namespace {

const r::timeouts quick = couchgate::test::quick_timeouts;

// Restore's rows: central documents "u:<id>" whose bodies came with the feed, into `target`.
std::vector<r::change_row> restore_rows(const std::string& target, const std::vector<std::string>& ids) {
  return couchgate::test::feed_rows({target, "central", target, "u:", ""}, ids);
}

// _bulk_docs answered "written" for every document of the request.
r::http_response all_written(const r::http_request& q) {
  json rows = json::array();
  const json body = json::parse(q.body_text());
  for (const auto& d : body["docs"]) rows.push_back({{"ok", true}, {"id", d["_id"]}, {"rev", "1-x"}});
  return answer(201, rows.dump());
}

}  // namespace

TEST_CASE("transfer: a target restore created (fresh_targets) gets no _revs_diff; every revision is written; others are asked") {
  scripted_transport s;
  r::couch_client client(s, quick);
  auto rows = restore_rows("userdb-new", {"d1", "d2", "d3"});
  auto old_rows = restore_rows("userdb-old", {"e1", "e2"});
  rows.insert(rows.end(), old_rows.begin(), old_rows.end());
  // The existing target lacks one of its two documents.
  s.on("POST", "/userdb-old/_revs_diff", [&](const r::http_request& q) {
    const json asked = json::parse(q.body_text());
    CHECK(asked.size() == 2);
    return answer(200, json{{"e2", {{"missing", asked["e2"]}}}}.dump());
  });
  std::vector<std::string> written_new, written_old;
  s.on("POST", "/userdb-new/_bulk_docs", [&](const r::http_request& q) {
    const json body = json::parse(q.body_text());
    CHECK(body["new_edits"] == false);
    for (const auto& d : body["docs"]) written_new.push_back(d["_id"]);
    return all_written(q);
  });
  s.on("POST", "/userdb-old/_bulk_docs", [&](const r::http_request& q) {
    const json body = json::parse(q.body_text());
    for (const auto& d : body["docs"]) written_old.push_back(d["_id"]);
    return all_written(q);
  });
  const std::unordered_set<std::string> fresh{"userdb-new"};
  r::transfer_options opts;
  opts.fresh_targets = &fresh;
  opts.skip_stemmed_ancestors = true;
  r::protocol_caps caps;
  auto res = r::transfer(client, rows, opts, caps);
  CHECK(s.count("POST", "/userdb-new/_revs_diff") == 0);
  CHECK(s.count("POST", "/userdb-old/_revs_diff") == 1);
  CHECK(written_new == std::vector<std::string>{"d1", "d2", "d3"});
  CHECK(written_old == std::vector<std::string>{"e2"});
  CHECK(res.docs_written == 4);
  CHECK(res.written_by_unit["userdb-new"] == 3);
  CHECK(res.requests == 3);  // one _revs_diff, two _bulk_docs
  CHECK(s.count("POST", "_bulk_get") == 0);
  CHECK(s.unexpected().empty());
}

TEST_CASE("state_store: checkpoint resets and restore records of many databases are one request each; a refused row is reported") {
  scripted_transport s;
  r::couch_client client(s, quick);
  r::state_store st(client, "cg_state");
  const std::vector<std::string> dbs{"userdb-a", "userdb-b", "userdb-c"};

  // The records of an earlier run: one read.
  s.on("GET", "/cg_state/_all_docs",
       answer(200, R"({"rows":[{"id":"restore:userdb-c","doc":{"_id":"restore:userdb-c","_rev":"1-r","type":"restore","db":"userdb-c"}}]})"));
  auto under_way = st.load_restores();
  REQUIRE(under_way.ok());
  CHECK(under_way.value() == std::unordered_set<std::string>{"userdb-c"});

  // Recording two: one _bulk_docs.
  s.on("POST", "/cg_state/_bulk_docs", [&](const r::http_request& q) {
    const json docs = json::parse(q.body_text())["docs"];
    REQUIRE(docs.size() == 2);
    CHECK(docs[0]["_id"] == "restore:userdb-a");
    CHECK(docs[0]["restore"]["from"] == "central");
    return all_written(q);
  });
  CHECK(st.mark_restores({"userdb-a", "userdb-b"}, json{{"from", "central"}}).empty());

  // Resetting three checkpoints: one _bulk_docs; the one the server refuses is reported and kept
  // pending (the next flush writes it).
  s.on("POST", "/cg_state/_bulk_docs", [&](const r::http_request& q) {
    const json docs = json::parse(q.body_text())["docs"];
    REQUIRE(docs.size() == 3);
    json rows = json::array();
    for (const auto& d : docs) {
      CHECK(d["seq"] == 0);
      if (d["_id"] == "checkpoint:userdb-b") rows.push_back({{"id", d["_id"]}, {"error", "forbidden"}, {"reason", "no"}});
      else rows.push_back({{"ok", true}, {"id", d["_id"]}, {"rev", "2-z"}});
    }
    return answer(201, rows.dump());
  });
  auto not_reset = st.reset_checkpoints(dbs);
  CHECK(not_reset.size() == 1);
  CHECK(not_reset.count("userdb-b") == 1);
  CHECK(st.checkpoint("userdb-a") == json(0));
  CHECK(st.has_unflushed());  // userdb-b's reset

  // Removing the three records: one _bulk_docs, with the revisions known.
  s.on("POST", "/cg_state/_bulk_docs", [&](const r::http_request& q) {
    const json docs = json::parse(q.body_text())["docs"];
    REQUIRE(docs.size() == 3);
    for (const auto& d : docs) {
      CHECK(d["_deleted"] == true);
      CHECK(d.contains("_rev"));
    }
    CHECK(docs[2]["_rev"] == "1-r");
    return all_written(q);
  });
  CHECK(st.clear_restores(dbs).empty());
  CHECK(s.count("POST", "/cg_state/_bulk_docs") == 3);
  CHECK(s.count("GET", "/cg_state/restore") == 0);  // no per-record read
  CHECK(s.unexpected().empty());
}
