// Hostile data, what test_wire / test_recreated / test_provisioning do not already cover: user
// names with Unicode, emoji, '%', '/', quotes and 200+ bytes get their database with the right
// _security and are fanned in under their own namespace; a user database holding a 10 MB
// document, a document with 500 conflicting leaves, a revision history at the server's
// revs_limit, a design document and _local documents replicates exactly (the _local ones not at
// all: they never leave their database). Compared with tests/support/convergence.hpp.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
using couchgate::policy::user_db_name;

TEST_CASE("hostile user names and documents: provisioned, replicated exactly, no crash") {
  auto n = fresh_names("hostile");
  json cfg = base_config(n);
  cfg["log"]["level"] = "info";
  // (':' is not allowed in a CouchDB user name; CouchDB's _users refuses it.)
  const std::vector<std::string> stems{"ünïcødé-ü", "emoji-😀🎉", "pct%41%2F%", "sl/ash/", "quo\"te'back\\",
                                       std::string(200, 'l') + "-ø", "sp ace+plus&amp=eq?q#h"};
  std::map<std::string, std::string> db_owner;
  std::vector<std::string> users;
  int refused_by_server = 0;
  for (const auto& stem : stems) {
    const std::string u = stem + "-" + n.role;
    auto r = create_user(u, {n.role});
    if (r.status != 201) {  // the server's own rules; reported, not couchgate's to handle
      ++refused_by_server;
      MESSAGE("server refused user name " << u << ": " << r.raw);
      continue;
    }
    users.push_back(u);
    db_owner[user_db_name(n.prefix, u)] = u;
  }
  REQUIRE(users.size() >= 5);
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(120s), tail(cg.log()));
  std::string problem;
  CHECK_MESSAGE(eventually(
                    [&] {
                      problem.clear();
                      for (const auto& u : users)
                        if (auto p = user_db_problem(n.prefix, u); !p.empty()) problem += p + "\n";
                      return problem.empty();
                    },
                    90s),
                problem << tail(cg.log()));

  couch c;
  int hostile_docs = 0;
  for (const auto& [db, owner] : db_owner) {
    const std::string base = "/" + enc(db);
    REQUIRE(c.put(base + "/" + enc("doc with/slash%and ü"), json{{"owner", owner}}).status == 201);
    REQUIRE(c.put(base + "/_local/private", json{{"secret", "never leaves"}}).status == 201);
    ++hostile_docs;
  }
  // The heavy documents, in the first user's database.
  const std::string db = db_owner.begin()->first;
  const std::string base = "/" + enc(db);
  // 10 MB: above CouchDB's default max_document_size (8 MB), so the source itself may refuse it.
  auto big = c.put(base + "/big", json{{"blob", std::string(10u << 20, 'b')}});
  MESSAGE("a 10 MB document: the source answered " << big.status);
  hostile_docs += big.status == 201;
  // 500 conflicting leaves of one document.
  json leaves = json::array();
  for (int i = 0; i < 500; ++i) {
    const std::string h = "leaf" + std::to_string(i);
    leaves.push_back({{"_id", "many-leaves"}, {"_rev", "2-" + h}, {"i", i}, {"_revisions", {{"start", 2}, {"ids", {h, "root"}}}}});
  }
  REQUIRE(c.post(base + "/_bulk_docs", json{{"new_edits", false}, {"docs", leaves}}).status == 201);
  ++hostile_docs;
  // A history as long as the server keeps (revs_limit, 1000 by default).
  auto limit = c.get(base + "/_revs_limit");
  const int revs_limit = limit.status == 200 && limit.body.is_number() ? limit.body.get<int>() : 1000;
  json ids = json::array();
  for (int i = revs_limit; i >= 1; --i) ids.push_back("h" + std::to_string(i));
  REQUIRE(c.post(base + "/_bulk_docs",
                 json{{"new_edits", false},
                      {"docs", {{{"_id", "long-history"}, {"_rev", std::to_string(revs_limit) + "-h" + std::to_string(revs_limit)},
                                 {"_revisions", {{"start", revs_limit}, {"ids", ids}}}}}}})
              .status == 201);
  ++hostile_docs;
  REQUIRE(c.put(base + "/_design/app", json{{"views", {{"v", {{"map", "function(d){ emit(d._id); }"}}}}}}).status == 201);
  ++hostile_docs;

  db_state want;
  const std::string diff = wait_central_converged(n.central, db_owner, 180s, &want);
  const bool converged = diff.empty();
  CHECK_MESSAGE(converged, diff << tail(cg.log()));
  // 500 leaves arrived as 500 leaves.
  const std::string owner = db_owner.begin()->second;
  const std::string central_base = "/" + enc(n.central) + "/";
  CHECK(want[owner + ":many-leaves"].leaves.size() == 500);
  // The whole history arrived (central's revs_limit is the same server default).
  auto hist = c.get(central_base + enc(owner + ":long-history") + "?revs=true");
  REQUIRE(hist.status == 200);
  CHECK(hist.body["_revisions"]["ids"].size() == static_cast<std::size_t>(revs_limit));
  // No _local document left its database.
  for (const auto& [id, s] : central_state(n.central)) CHECK(id.find("_local/") == std::string::npos);
  MESSAGE(users.size() << " hostile user names provisioned and fanned in (" << refused_by_server
                       << " refused by the server itself), " << hostile_docs << " hostile documents replicated; lost: "
                       << std::string(converged ? "nothing" : "see above"));
  CHECK(cg.running());
  CHECK(cg.terminate() == 0);
}
