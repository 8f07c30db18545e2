// Restore against a real server: user databases rebuilt from the central database match the
// originals exactly (ids, winning and conflict revisions, deletions, attachment digests);
// --dry-run writes nothing; an interrupted restore completes when rerun; non-empty targets are
// refused without --merge; and a restored database does not bounce back into the central one.
// Counted through a proxy: per database restore sends only what the restore ceiling does, plus
// its _security (issue #18).
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "policy/id_map.hpp"
#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;

namespace {

struct snapshot {
  leaf_map leaves;
  std::map<std::string, json> winners;  // id -> {_rev, _conflicts} for live docs
  std::string digest;
};

snapshot take(const std::string& db) {
  snapshot s;
  s.leaves = leaves(db);
  auto all = couch().get("/" + enc(db) + "/_all_docs?include_docs=true&conflicts=true");
  REQUIRE(all.status == 200);
  for (const auto& row : all.body["rows"]) {
    json d = row["doc"];
    s.winners[row["id"].get<std::string>()] = json{{"rev", d["_rev"]}, {"conflicts", d.value("_conflicts", json::array())}};
  }
  s.digest = attachment_digest(db, "with-attachment");
  return s;
}

bool same(const snapshot& a, const snapshot& b) { return a.leaves == b.leaves && a.winners == b.winners && a.digest == b.digest; }

std::string write_config(const json& cfg) {
  char tmpl[] = "/tmp/couchgate-restore-XXXXXX";
  std::string path = std::string(mkdtemp(tmpl)) + "/config.yaml";
  std::ofstream(path) << cfg.dump(2) << "\n";
  return path;
}

std::optional<std::uint64_t> central_seq(const std::string& central) {
  auto info = couch().get("/" + enc(central));
  if (info.status != 200) return std::nullopt;
  const json& s = info.body["update_seq"];
  if (s.is_number()) return s.get<std::uint64_t>();
  if (s.is_string()) return std::stoull(s.get<std::string>());
  return std::nullopt;
}

// The "restore:<db>" records in the state database (restores under way).
json restore_records(const std::string& state) {
  auto r = couch().get("/" + enc(state) + "/_all_docs?startkey=%22restore%3A%22&endkey=%22restore%3B%22");
  REQUIRE(r.status == 200);
  return r.body["rows"];
}

}  // namespace

TEST_CASE("restore rebuilds user databases from the central database exactly") {
  auto n = fresh_names("restore");
  json cfg = base_config(n);
  const int users = 50;
  std::map<std::string, std::string> db_owner;
  std::vector<std::string> names;
  for (int i = 0; i < users; ++i) {
    std::string u = "rs" + std::to_string(i) + "-" + n.role;
    REQUIRE(create_user(u, {n.role}).status == 201);
    db_owner[couchgate::policy::user_db_name(n.prefix, u)] = u;
    names.push_back(u);
  }
  std::map<std::string, snapshot> original;
  {
    couchgate_process cg(cfg);
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(120s), cg.log());
    int salt = 1000;
    for (const auto& [db, owner] : db_owner) {
      REQUIRE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s));
      write_varied(db, ++salt);
    }
    leaf_map want = expected_central(db_owner);
    REQUIRE_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 120s),
                    describe_diff(central_user_docs(n.central), want) << tail(cg.log()));
    for (const auto& [db, owner] : db_owner) original[db] = take(db);
    CHECK(cg.terminate() == 0);
  }
  for (const auto& [db, owner] : db_owner) REQUIRE(couch().del("/" + enc(db)).status == 200);
  // Restore reads central in pages of fanin.batch_docs: small pages here, so users span pages
  // and each page's new users are prepared while the page before is written.
  cfg["fanin"]["batch_docs"] = 7;
  std::string path = write_config(cfg);

  {
    // --dry-run changes nothing.
    auto dry = run_couchgate({"restore", "--config", path, "--all", "--dry-run"});
    INFO(dry.out << dry.err);
    CHECK(dry.status == 0);
    CHECK(dry.out.find("dry run") != std::string::npos);
    for (const auto& [db, owner] : db_owner) CHECK(couch().get("/" + enc(db)).status == 404);

    // An interrupted restore (stopped after a few central changes) exits non-zero; the rerun
    // completes it without --merge and duplicates nothing.
    auto cut = run_couchgate({"restore", "--config", path, "--all", "--max-changes", "1"},
                             {});
    INFO(cut.out << cut.err);
    CHECK(cut.status != 0);
    auto full = run_couchgate({"restore", "--config", path, "--all"});
    INFO(full.out << full.err);
    CHECK(full.status == 0);
    for (const auto& [db, owner] : db_owner) {
      CAPTURE(db);
      CHECK(same(take(db), original[db]));
      // The restored database has the policy's _security, owner included.
      auto sec = couch().get("/" + enc(db) + "/_security").body;
      CHECK(sec["members"]["names"].dump().find(owner) != std::string::npos);
    }
    // The records that made the interrupted run resumable are gone.
    CHECK(restore_records(n.state).empty());
  }

  // A non-empty database is refused without --merge; --merge adds only what is missing.
  std::string one = names.front();
  std::string one_db = couchgate::policy::user_db_name(n.prefix, one);
  {
    auto refused = run_couchgate({"restore", "--config", path, "--user", one});
    INFO(refused.out << refused.err);
    CHECK(refused.status == 1);
    CHECK(refused.out.find("--merge") != std::string::npos);
    auto merged = run_couchgate({"restore", "--config", path, "--user", one, "--merge"});
    INFO(merged.out << merged.err);
    CHECK(merged.status == 0);
    CHECK(same(take(one_db), original[one_db]));
  }

  // restore --user for one deleted database.
  {
    REQUIRE(couch().del("/" + enc(one_db)).status == 200);
    auto r = run_couchgate({"restore", "--config", path, "--user", one});
    INFO(r.out << r.err);
    CHECK(r.status == 0);
    CHECK(same(take(one_db), original[one_db]));
  }

  // With the daemon running again, the restored databases do not bounce back into the central
  // database: fan-in catches up on them (their checkpoints were reset) and writes nothing.
  {
    auto before = central_seq(n.central);
    REQUIRE(before);
    leaf_map central_before = central_user_docs(n.central);
    couchgate_process cg(cfg);
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(120s), cg.log());
    CHECK_MESSAGE(eventually(
                      [&] {
                        for (const auto& u : names) {
                          auto st = cg.admin_get("/status/users/" + enc(u));
                          if (st.status != 200 || st.body["replication"].value("behind", json(1)) != json(0)) return false;
                        }
                        return true;
                      },
                      120s),
                  tail(cg.log()));
    CHECK(central_seq(n.central) == before);
    CHECK(central_user_docs(n.central) == central_before);
    // A new write to a restored database still arrives.
    REQUIRE(couch().put("/" + enc(one_db) + "/after-restore", json{{"x", 1}}).status == 201);
    CHECK(eventually([&] { return couch().get("/" + enc(n.central) + "/" + enc(one + ":after-restore")).status == 200; }, 60s));
    CHECK(cg.terminate() == 0);
  }
}

TEST_CASE("restore writes a user's design documents last, so their validate_doc_update cannot block it") {
  auto n = fresh_names("rs-ddoc");
  json cfg = base_config(n);
  // One change per restore page and per write: without design-documents-last, the function
  // below would be in force before the data documents arrive.
  cfg["fanin"]["batch_docs"] = 1;
  const std::string u = "strict-" + n.role;
  REQUIRE(create_user(u, {n.role}).status == 201);
  const std::string db = couchgate::policy::user_db_name(n.prefix, u);
  const std::string base = "/" + enc(db);
  std::vector<std::string> ids = {"_design/strict", "a", "b", "c"};
  snapshot original;
  {
    couchgate_process cg(cfg);
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
    REQUIRE(eventually([&] { return couch().get(base).status == 200; }, 60s));
    // The app's own rule: data is written by its users, never by an admin (CouchDB runs a
    // validate_doc_update for server admins too).
    auto ddoc = couch().put(base + "/_design/strict",
                            json{{"validate_doc_update",
                                  "function(n, o, u) { if (u.roles.indexOf('_admin') !== -1 && n._id.indexOf('_design/') !== 0)"
                                  " throw({forbidden: 'admins write no data here'}); }"}});
    REQUIRE_MESSAGE(ddoc.status == 201, ddoc.raw);
    auto by_admin = couch().put(base + "/by-admin", json{{"x", 0}});
    if (by_admin.status != 403) {
      MESSAGE("this server does not run validate_doc_update for admins (" << by_admin.status
                                                                           << "); the ordering is not observable here");
      CHECK(cg.terminate() == 0);
      return;
    }
    couch owner(u, "pw-123456");
    for (std::size_t i = 1; i < ids.size(); ++i) {
      auto w = owner.put(base + "/" + ids[i], json{{"i", i}});
      REQUIRE_MESSAGE(w.status == 201, w.raw);
    }
    REQUIRE_MESSAGE(eventually(
                        [&] {
                          for (const auto& id : ids) {
                            if (couch().get("/" + enc(n.central) + "/" + enc(u + ":" + id)).status != 200) return false;
                          }
                          return true;
                        },
                        60s),
                    tail(cg.log()));
    original = take(db);
    CHECK(cg.terminate() == 0);
  }
  REQUIRE(couch().del(base).status == 200);
  auto r = run_couchgate({"restore", "--config", write_config(cfg), "--user", u});
  INFO(r.out << r.err);
  CHECK(r.status == 0);
  CHECK(same(take(db), original));
  CHECK(original.leaves.size() == ids.size());
}

TEST_CASE("restore sends per database only its creation, its _security and its _bulk_docs; the rest is batched") {
  auto n = fresh_names("rs-count");
  fault_proxy proxy;
  json cfg = fault_config(n, proxy);
  // Central's feed is read 5 changes a page, so most users' 3 documents span two pages: each
  // database still gets one _bulk_docs.
  cfg["fanin"]["batch_docs"] = 5;
  const int users = 12, per_user = 3;
  // One shard (q=1 on CouchDB; pouchdb-server ignores it): its feed lists a user's three
  // documents together (one _bulk_docs: CouchDB numbers them in id order, pouchdb-server in the
  // order given; a user's ids share their prefix). Two shards' feeds interleave in no set order,
  // and a user's documents two pages apart are written twice (only the page ahead is known).
  REQUIRE(couch().put("/" + enc(n.central) + "?q=1", json::object()).status == 201);
  json docs = json::array();
  std::vector<std::string> dbs;
  for (int i = 0; i < users; ++i) {
    const std::string u = "cnt" + std::to_string(i) + "-" + n.role;
    dbs.push_back(couchgate::policy::user_db_name(n.prefix, u));
    const std::string token = couchgate::policy::owner_token(couchgate::policy::owner{couchgate::policy::owner::kind::user, u});
    for (int k = 0; k < per_user; ++k) docs.push_back(json{{"_id", token + ":d" + std::to_string(k)}, {"v", k}});
  }
  REQUIRE(couch().post("/" + enc(n.central) + "/_bulk_docs", json{{"docs", docs}}).status == 201);
  std::string path = write_config(cfg);
  auto r = run_couchgate({"restore", "--config", path, "--all"}, proxy_env(proxy));
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  const auto requests = proxy.requests();
  for (const auto& db : dbs) {
    CAPTURE(db);
    CHECK(couch().get("/" + enc(db)).body.value("doc_count", 0) == per_user);
    std::vector<std::string> seen;
    for (const auto& q : requests) {
      const std::string base = "/" + enc(db);
      if (q.target == base || q.target.rfind(base + "/", 0) == 0 || q.target.rfind(base + "?", 0) == 0) {
        const std::string rest = q.target.substr(base.size());
        seen.push_back(q.method + " " + rest.substr(0, rest.find('?')));
      }
    }
    std::sort(seen.begin(), seen.end());
    // No _revs_diff (the database is new), no marker, no reads.
    CHECK(seen == std::vector<std::string>{"POST /_bulk_docs", "PUT ", "PUT /_security"});
  }
  // No _revs_diff, and no body read twice: the feed (include_docs) carried every revision.
  for (const auto& q : requests) {
    CHECK_MESSAGE(q.target.find("_revs_diff") == std::string::npos, q.target);
    CHECK_MESSAGE(q.target.find("_bulk_get") == std::string::npos, q.target);
  }
  // The rest (session, central's info, the state database's checkpoint resets and the records'
  // removal, here also creating the state database; per page of the feed its read and one
  // request recording its new users) does not grow with the number of databases.
  {
    const int pages = users * per_user / 5 + 1;
    std::string all;
    for (const auto& q : requests) all += q.method + " " + q.target + "\n";
    CHECK_MESSAGE(requests.size() <= static_cast<std::size_t>(3 * users + 2 * pages + 16), all);
  }
  CHECK(r.out.find(std::to_string(requests.size()) + " requests") != std::string::npos);
  CHECK(restore_records(n.state).empty());
  // The state database did not exist (couchgate never ran on this server): made, not "again".
  CHECK_MESSAGE((r.out + r.err).find("does not exist yet; creating it") != std::string::npos, r.out << r.err);
  CHECK((r.out + r.err).find("creating it again") == std::string::npos);
  CHECK((r.out + r.err).find("created again") == std::string::npos);
  // Each restored database's fan-in checkpoint starts again from 0.
  for (const auto& db : dbs) {
    auto cp = couch().get("/" + enc(n.state) + "/" + enc("checkpoint:" + db));
    CHECK(cp.status == 200);
    CHECK(cp.body.value("seq", json(1)) == json(0));
  }
}

TEST_CASE("restore: a _security the server refuses fails that database alone; its record stays and a rerun finishes it") {
  auto n = fresh_names("rs-sec");
  fault_proxy proxy;
  json cfg = fault_config(n, proxy);
  cfg["fanin"]["batch_docs"] = 4;  // pages of 4 changes: the refusal lands mid-run
  const int users = 6, per_user = 2;
  REQUIRE(couch().put("/" + enc(n.central) + "?q=1", json::object()).status == 201);
  json docs = json::array();
  std::vector<std::string> names;
  for (int i = 0; i < users; ++i) {
    names.push_back("sec" + std::to_string(i) + "-" + n.role);
    const std::string token = couchgate::policy::owner_token(couchgate::policy::owner{couchgate::policy::owner::kind::user, names.back()});
    for (int k = 0; k < per_user; ++k) docs.push_back(json{{"_id", token + ":d" + std::to_string(k)}, {"v", k}});
  }
  REQUIRE(couch().post("/" + enc(n.central) + "/_bulk_docs", json{{"docs", docs}}).status == 201);
  const std::string bad_user = names[3];
  const std::string bad_db = couchgate::policy::user_db_name(n.prefix, bad_user);
  // That database's _security is refused (once: a server error is not retried).
  proxy.answer_next(1, http_answer("500 Internal Server Error", "", R"({"error":"unknown_error","reason":"injected"})"),
                    "/" + enc(bad_db) + "/_security");
  const std::string path = write_config(cfg);
  auto r = run_couchgate({"restore", "--config", path, "--all"}, proxy_env(proxy));
  INFO(r.out << r.err);
  CHECK(r.status != 0);
  CHECK((r.out + r.err).find("cannot write _security of " + bad_db) != std::string::npos);
  for (const auto& u : names) {
    const std::string db = couchgate::policy::user_db_name(n.prefix, u);
    CAPTURE(db);
    // Nothing is written into a database before its _security is in place; the others are
    // restored with theirs.
    CHECK(couch().get("/" + enc(db)).body.value("doc_count", -1) == (u == bad_user ? 0 : per_user));
    if (u == bad_user) continue;
    auto sec = couch().get("/" + enc(db) + "/_security");
    REQUIRE(sec.status == 200);
    CHECK(sec.body.dump().find(u) != std::string::npos);
  }
  auto records = restore_records(n.state);
  REQUIRE(records.size() == 1);
  CHECK(records[0]["id"] == "restore:" + bad_db);
  // The rerun (no more refusals) resumes into it without --merge and gives it its _security.
  auto again = run_couchgate({"restore", "--config", path, "--user", bad_user}, proxy_env(proxy));
  INFO(again.out << again.err);
  CHECK(again.status == 0);
  auto sec = couch().get("/" + enc(bad_db) + "/_security");
  REQUIRE(sec.status == 200);
  CHECK(sec.body.dump().find(bad_user) != std::string::npos);
  CHECK(couch().get("/" + enc(bad_db)).body.value("doc_count", 0) == per_user);
  CHECK(restore_records(n.state).empty());
}
