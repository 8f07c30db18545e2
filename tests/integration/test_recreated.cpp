// User databases deleted and created again while couchgate runs, against a real server, in both
// change detection modes (db_updates where the server has it, the sweep everywhere): the
// database is a fan-in source again at once and gets its owner's _security back, without a
// reconcile (reconcile_interval 0), also for a long user name whose database name is hashed and
// cannot be decoded; and the old database's checkpoint skips none of the new one's documents.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "policy/id_map.hpp"
#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
namespace policy = couchgate::policy;

namespace {

std::vector<std::string> detection_modes() {
  // pouchdb-server has no _db_updates: only the sweep runs there.
  if (env().pouchdb) return {"sweep"};
  return {"db_updates", "sweep"};
}

bool is_member(const std::string& db, const std::string& user) {
  auto sec = couch().get("/" + enc(db) + "/_security");
  if (sec.status != 200 || !sec.body.is_object()) return false;
  auto names = sec.body.value("members", json::object()).value("names", json::array());
  for (const auto& n : names) {
    if (n == user) return true;
  }
  return false;
}

std::string central_id(const std::string& owner, const std::string& id) {
  return *policy::to_central_id(policy::id_mode::namespaced, policy::owner{policy::owner::kind::user, owner}, id);
}

bool in_central(const names& n, const std::string& owner, const std::string& id) {
  return couch().get("/" + enc(n.central) + "/" + enc(central_id(owner, id))).status == 200;
}

json config_for(const names& n, const std::string& mode) {
  json cfg = base_config(n);
  cfg["provisioning"]["reconcile_interval"] = 0;  // never: only the created path can repair it
  cfg["fanin"]["detection"] = mode;
  return cfg;
}

}  // namespace

TEST_CASE("a long-name user's database deleted and created again: a source again at once, owner a member again") {
  for (const auto& mode : detection_modes()) {
    CAPTURE(mode);
    auto n = fresh_names("long");
    const std::string user = "long-" + std::string(140, 'x') + "-" + n.role;
    const std::string db = policy::user_db_name(n.prefix, user);
    REQUIRE(db.find('-', n.prefix.size()) != std::string::npos);  // the hashed form
    REQUIRE_FALSE(policy::user_from_db_name(n.prefix, db));
    REQUIRE(create_user(user, {n.role}, "pw-long-1").status == 201);
    couchgate_process cg(config_for(n, mode));
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
    REQUIRE(eventually([&] { return is_member(db, user); }, 30s));
    couch c;
    REQUIRE(c.put("/" + enc(db) + "/before", json{{"v", 1}}).status == 201);
    REQUIRE_MESSAGE(eventually([&] { return in_central(n, user, "before"); }, 30s), tail(cg.log()));

    REQUIRE(c.del("/" + enc(db)).status == 200);
    // Dropped from fan-in (the deletion was seen) ...
    REQUIRE_MESSAGE(eventually([&] { return !cg.admin_get("/status/users/" + enc(user)).body.contains("replication"); }, 30s),
                    tail(cg.log()));
    // ... and created again by hand, as CouchDB does it: admin-only _security.
    REQUIRE(c.put("/" + enc(db), json::object()).status == 201);
    CHECK_MESSAGE(eventually([&] { return is_member(db, user); }, 30s), tail(cg.log()));
    CHECK(eventually([&] { return couch(user, "pw-long-1").get("/" + enc(db)).status == 200; }, 10s));
    REQUIRE(c.put("/" + enc(db) + "/after", json{{"v", 2}}).status == 201);
    CHECK_MESSAGE(eventually([&] { return in_central(n, user, "after"); }, 30s), tail(cg.log()));
    CHECK(cg.admin_get("/status/users/" + enc(user)).body.contains("replication"));
    CHECK(cg.metric("couchgate_reconciles_total").value_or(0) == 1);  // only the first one ran
  }
}

TEST_CASE("a user database deleted and created again under the same name: the old checkpoint skips none of the new documents") {
  struct scenario {
    const char* what;
    bool wait_for_drop;  // recreate only after couchgate saw the database gone
    int docs;            // written into the new database (the old one had 5 and its _security)
  };
  for (const auto& mode : detection_modes()) {
    std::vector<scenario> scenarios{{"seen gone, then created again with more changes than before", true, 12},
                                    {"created again at once with fewer changes", false, 2}};
    // Created again at once with more changes: nothing in a sweep's db info tells (pouchdb-server's
    // instance_start_time is its own start time; CouchDB's has one-second resolution); the
    // `created` event of _db_updates does.
    if (mode == std::string("db_updates")) scenarios.push_back({"created again at once with more changes", false, 12});
    for (const auto& sc : scenarios) {
      CAPTURE(mode);
      CAPTURE(sc.what);
      auto n = fresh_names("recr");
      const std::string user = "recr-" + n.role;
      const std::string db = policy::user_db_name(n.prefix, user);
      REQUIRE(create_user(user, {n.role}).status == 201);
      couchgate_process cg(config_for(n, mode));
      cg.start();
      REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
      REQUIRE(eventually([&] { return is_member(db, user); }, 30s));
      couch c;
      for (int i = 0; i < 5; ++i) REQUIRE(c.put("/" + enc(db) + "/old-" + std::to_string(i), json{{"v", i}}).status == 201);
      REQUIRE_MESSAGE(eventually([&] { return in_central(n, user, "old-4"); }, 30s), tail(cg.log()));
      // Caught up: `behind` reaches 0 (CouchDB: couchgate's own _security write raised update_seq
      // without a _changes row, which kept it at 1 for ever).
      json status;
      CHECK_MESSAGE(eventually([&] {
        status = cg.admin_get("/status/users/" + enc(user)).body;
        return status.contains("replication") && status["replication"].value("behind", std::uint64_t(1)) == 0;
      }, 30s), status.dump());

      REQUIRE(c.del("/" + enc(db)).status == 200);
      if (sc.wait_for_drop) {
        REQUIRE_MESSAGE(eventually([&] { return !cg.admin_get("/status/users/" + enc(user)).body.contains("replication"); }, 30s),
                        tail(cg.log()));
      }
      REQUIRE(c.put("/" + enc(db), json::object()).status == 201);
      std::vector<json> docs;
      for (int i = 0; i < sc.docs; ++i) docs.push_back(json{{"_id", "new-" + std::to_string(i)}, {"v", i}});
      REQUIRE(c.post("/" + enc(db) + "/_bulk_docs", json{{"docs", docs}}).status == 201);
      bool all = eventually([&] {
        for (int i = 0; i < sc.docs; ++i) {
          if (!in_central(n, user, "new-" + std::to_string(i))) return false;
        }
        return true;
      }, 30s);
      CHECK_MESSAGE(all, tail(cg.log()));
      CHECK_MESSAGE(eventually([&] { return is_member(db, user); }, 30s), tail(cg.log()));
    }
  }
}
