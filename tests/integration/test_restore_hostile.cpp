// Restore against hostile central contents (issue 16): central ids that name no user are counted
// and named, never skipped silently; a --merge --dry-run counts exactly what the real run
// writes; and a document whose history the source stemmed (edited more than revs_limit times
// while couchgate was stopped) is listed in GET /failures by fan-in, and restore never writes the
// resulting central conflict back into the user's database.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <regex>

#include "policy/id_map.hpp"
#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
namespace policy = couchgate::policy;

namespace {

// "<gen>-<32 hex digits>" made from a tag: a revision id CouchDB takes with new_edits:false.
std::string rev(int gen, const std::string& tag) {
  char hex[33];
  const std::size_t h1 = std::hash<std::string>{}(tag), h2 = std::hash<std::string>{}(tag + "/2");
  std::snprintf(hex, sizeof hex, "%016zx%016zx", h1, h2);
  return std::to_string(gen) + "-" + hex;
}

// A document at revision `gen` of `tag`, whose history holds generations from..gen.
json doc_at(const std::string& id, int gen, int from, const std::string& tag, json body = json::object()) {
  json ids = json::array();
  for (int g = gen; g >= from; --g) ids.push_back(rev(g, tag + std::to_string(g)).substr(std::to_string(g).size() + 1));
  body["_id"] = id;
  body["_rev"] = std::to_string(gen) + "-" + ids[0].get<std::string>();
  body["_revisions"] = json{{"start", gen}, {"ids", ids}};
  return body;
}

void bulk(const std::string& db, const json& docs) {
  auto r = couch().post("/" + enc(db) + "/_bulk_docs", json{{"new_edits", false}, {"docs", docs}});
  REQUIRE_MESSAGE(r.status == 201, r.raw);
}

std::string write_config(const json& cfg) {
  char tmpl[] = "/tmp/couchgate-rsh-XXXXXX";
  std::string path = std::string(mkdtemp(tmpl)) + "/config.yaml";
  std::ofstream(path) << cfg.dump(2) << "\n";
  return path;
}

// The number in the summary line "  ok     <user> -> <db>: <n> written|to write".
std::optional<long> summary_count(const std::string& out, const std::string& user) {
  std::smatch m;
  const std::regex line(" " + std::regex_replace(user, std::regex(R"([.^$|()\[\]{}*+?\\-])"), R"(\$&)") +
                        R"( -> [^:]+: ([0-9]+) (written|to write))");
  if (!std::regex_search(out, m, line)) return std::nullopt;
  return std::stol(m[1]);
}

std::size_t leaf_count(const leaf_map& m) {
  std::size_t n = 0;
  for (const auto& [id, revs] : m) n += revs.size();
  return n;
}

}  // namespace

TEST_CASE("restore: central ids naming no user are counted and named; --merge --dry-run counts what the real run writes") {
  auto n = fresh_names("rs-odd");
  json cfg = base_config(n);
  const std::string u = "odd-" + n.role;
  const std::string db = policy::user_db_name(n.prefix, u);
  const std::string token = policy::owner_token(policy::owner{policy::owner::kind::user, u});
  REQUIRE(couch().put("/" + enc(n.central), json::object()).status == 201);
  // Three ids that name no user first, then the user's documents: 7 leaves in 6 documents (one
  // with two conflicting leaves, one deleted).
  bulk(n.central, json::array({doc_at("%FF:doc", 1, 1, "x"), doc_at(":doc", 1, 1, "y"), doc_at("nocolon", 1, 1, "z"),
                               doc_at("_design/central-own", 1, 1, "w")}));
  json docs = json::array({doc_at(token + ":a", 1, 1, "a"), doc_at(token + ":b", 2, 1, "b"), doc_at(token + ":b", 2, 1, "b-other"),
                           doc_at(token + ":d", 1, 1, "d"), doc_at(token + ":e", 3, 1, "e"), doc_at(token + ":f", 1, 1, "f")});
  json gone = doc_at(token + ":c", 2, 1, "c");
  gone["_deleted"] = true;
  docs.push_back(gone);
  bulk(n.central, docs);
  leaf_map central = central_user_docs(n.central);
  std::size_t want_leaves = 0;
  for (const auto& [id, revs] : central) {
    if (id.rfind(token + ":", 0) == 0) want_leaves += revs.size();
  }
  REQUIRE(want_leaves == 7);
  // The user's database exists and already has one of the seven.
  REQUIRE(couch().put("/" + enc(db), json::object()).status == 201);
  json have = doc_at("a", 1, 1, "a");
  bulk(db, json::array({have}));
  REQUIRE(leaf_count(leaves(db)) == 1);
  const std::string path = write_config(cfg);

  auto dry = run_couchgate({"restore", "--config", path, "--user", u, "--merge", "--dry-run"});
  INFO("dry run: " << dry.out << dry.err);
  CHECK(dry.status == 0);
  CHECK(summary_count(dry.out, u) == 6);  // it said 7: every central leaf, missing or not
  CHECK(leaf_count(leaves(db)) == 1);     // and wrote nothing
  // The ids naming no user: counted in the summary, the first named once while running.
  CHECK(dry.out.find("3 central document(s) not restored") != std::string::npos);
  // Which of the three comes first is the server's `_changes` order (on CouchDB, with more than
  // one shard, not the order written): the first is named, in the summary and once while running.
  const std::vector<std::string> odd{"%FF:doc", ":doc", "nocolon"};
  std::size_t named_in_out = 0, named_in_err = 0;
  std::string first;
  for (const auto& id : odd) {
    const bool in_out = dry.out.find("first " + id) != std::string::npos;
    named_in_out += in_out ? 1 : 0;
    if (in_out) first = id;
    named_in_err += dry.err.find("document " + id + " names no user") != std::string::npos ? 1 : 0;
  }
  CHECK(named_in_out == 1);
  CHECK(named_in_err == 1);  // once per run, not once per document
  CHECK(dry.err.find("document " + first + " names no user") != std::string::npos);
  CHECK(dry.out.find("central-own") == std::string::npos);  // central's own design document is not a user's

  auto real = run_couchgate({"restore", "--config", path, "--user", u, "--merge"});
  INFO("real run: " << real.out << real.err);
  CHECK(real.status == 0);
  CHECK(summary_count(real.out, u) == 6);
  CHECK(real.out.find("3 central document(s) not restored") != std::string::npos);
  CHECK(leaf_count(leaves(db)) == 7);

  auto again = run_couchgate({"restore", "--config", path, "--user", u, "--merge", "--dry-run"});
  INFO("dry run after: " << again.out << again.err);
  CHECK(summary_count(again.out, u) == 0);

  // A dry run of a database that does not exist counts all seven (it is created by the real run).
  REQUIRE(couch().del("/" + enc(db)).status == 200);
  auto fresh = run_couchgate({"restore", "--config", path, "--user", u, "--dry-run"});
  INFO("dry run, no database: " << fresh.out << fresh.err);
  CHECK(fresh.status == 0);
  CHECK(summary_count(fresh.out, u) == 7);
  CHECK(couch().get("/" + enc(db)).status == 404);
}

namespace {

// A document edited more than revs_limit times while couchgate was stopped: fan-in lists the
// stemmed history in /failures, restore writes back only the leaf the user had. With
// `attachment`, every revision of the document carries one: such revisions take the
// attachment path (fetched without attachment bodies first, again with them under
// fanin.max_bytes_in_flight), which must make the same checks.
// `body` with an attachment "a.txt" whose content names revision `gen`, when `attachment`.
json with_attachment(json body, bool attachment, int gen) {
  if (attachment)
    body["_attachments"] = json{{"a.txt", {{"content_type", "text/plain"}, {"data", b64("attachment of generation " + std::to_string(gen))}}}};
  return body;
}

void stemmed_history_case(bool attachment) {
  auto n = fresh_names(attachment ? "rs-stema" : "rs-stem");
  json cfg = base_config(n);
  const std::string u = "stem-" + n.role;
  REQUIRE(create_user(u, {n.role}).status == 201);
  const std::string db = policy::user_db_name(n.prefix, u);
  const std::string base = "/" + enc(db);
  const std::string central_id = u + ":d";
  const int limit = 5;
  const int fillers = 5;
  std::string old_leaf, new_leaf;
  {
    couchgate_process cg(cfg);
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
    REQUIRE(eventually([&] { return couch().get(base).status == 200; }, 60s));
    auto w = couch().put(base + "/d", with_attachment(json{{"v", 1}}, attachment, 1));
    REQUIRE(w.status == 201);
    old_leaf = w.body["rev"].get<std::string>();
    // A few more documents, so that the checkpoint lies beyond the first seqs of the database
    // that stands in for the stemmed one below (couchgate tells a database created again by its
    // seq falling below the checkpoint).
    for (int i = 0; i < fillers; ++i) REQUIRE(couch().put(base + "/filler-" + std::to_string(i), json{{"i", i}}).status == 201);
    REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(n.central) + "/" + enc(u + ":filler-4")).status == 200; }, 60s),
                    tail(cg.log()));
    // (a revision with attachments is copied after those without, in the same round or later)
    REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(n.central) + "/" + enc(central_id)).status == 200; }, 60s),
                    tail(cg.log()));
    CHECK(cg.terminate() == 0);
  }
  // While couchgate is stopped, the document is edited more than revs_limit times.
  const bool revs_limit = couch().put(base + "/_revs_limit", json(limit)).status == 200;
  if (revs_limit) {
    std::string cur = old_leaf;
    for (int i = 2; i <= 3 * limit; ++i) {
      auto w = couch().put(base + "/d", with_attachment(json{{"_rev", cur}, {"v", i}}, attachment, i));
      REQUIRE(w.status == 201);
      cur = w.body["rev"].get<std::string>();
    }
    new_leaf = cur;
    // CouchDB stems on compaction at the latest.
    couch().post(base + "/_compact", json::object());
    REQUIRE(eventually(
        [&] {
          auto h = couch().get(base + "/d?revs=true");
          return h.status == 200 && h.body["_revisions"]["ids"].size() <= std::size_t(limit);
        },
        60s));
  } else {
    // pouchdb-server has no PUT /db/_revs_limit (400). What the source looks like after
    // stemming is made instead: the database again, holding only the document's newest
    // revision with its last `limit` generations (a database deleted and created again is a new
    // source, read from its start).
    MESSAGE("this server has no PUT /db/_revs_limit; the stemmed source is written directly");
    REQUIRE(couch().del(base).status == 200);
    REQUIRE(couch().put(base, json::object()).status == 201);
    json d = doc_at("d", 3 * limit, 2 * limit + 1, "stemmed", with_attachment(json{{"v", 3 * limit}}, attachment, 3 * limit));
    bulk(db, json::array({d}));
    new_leaf = d["_rev"].get<std::string>();
  }
  REQUIRE(leaves(db)["d"] == std::set<std::string>{new_leaf});
  {
    couchgate_process cg(cfg);
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
    // Central ends with both leaves (nothing lost; CouchDB's replicator does the same) ...
    REQUIRE_MESSAGE(eventually([&] { return leaves(n.central)[central_id].count(new_leaf) == 1; }, 60s), tail(cg.log()));
    CHECK(leaves(n.central)[central_id] == std::set<std::string>{old_leaf, new_leaf});
    // ... and fan-in says so in the failures listing.
    json entry;
    CHECK_MESSAGE(eventually(
                      [&] {
                        auto f = cg.admin_get("/failures");
                        if (f.status != 200) return false;
                        for (const auto& e : f.body["refused_docs"]) {
                          if (e.value("error", "") == "stemmed_history" && e.value("id", "") == "d") entry = e;
                        }
                        return !entry.is_null();
                      },
                      30s),
                  tail(cg.log()));
    CHECK(entry.value("rev", "") == new_leaf);
    CHECK(entry.value("reason", "").find(old_leaf) != std::string::npos);
    CHECK(cg.metric("couchgate_stemmed_histories_total") == 1.0);
    CHECK(cg.terminate() == 0);
    // Said once in the log, a single line (it names the leaf central keeps beside the new one).
    CHECK_MESSAGE(count_lines(cg.log(), "stemmed history") == 1, tail(cg.log()));
    CHECK(count_lines(cg.log(), "doc=d rev=" + new_leaf + ": stemmed history: ") == 1);
  }
  // The user's database is lost; restore brings back the one leaf the user had.
  REQUIRE(couch().del(base).status == 200);
  const std::string path = write_config(cfg);
  auto dry = run_couchgate({"restore", "--config", path, "--user", u, "--dry-run"});
  INFO("dry run: " << dry.out << dry.err);
  // (the fillers, and of the document only its newest leaf)
  const auto want = fillers + 1;
  CHECK(summary_count(dry.out, u) == want);
  auto r = run_couchgate({"restore", "--config", path, "--user", u});
  INFO("restore: " << r.out << r.err);
  CHECK(r.status == 0);
  CHECK(summary_count(r.out, u) == want);
  CHECK(r.out.find("1 leaf revision(s) not written") != std::string::npos);
  CHECK(leaves(db)["d"] == std::set<std::string>{new_leaf});
  auto d = couch().get(base + "/d?conflicts=true");
  REQUIRE(d.status == 200);
  CHECK_FALSE(d.body.contains("_conflicts"));
  CHECK(d.body["v"] == 3 * limit);
  if (attachment) CHECK_MESSAGE(d.body["_attachments"].contains("a.txt"), d.raw);
}

}  // namespace

TEST_CASE("stemmed history: fan-in lists it in /failures; restore writes no conflict the user never had") {
  stemmed_history_case(false);
}

TEST_CASE("stemmed history of a document with attachments: listed in /failures; restore writes no conflict") {
  stemmed_history_case(true);
}
