// Fan-in against a real server: every user database converges into the central database with
// exactly the same ids (namespaced) and leaf revisions, conflicts, deletions and attachments
// included, no design document becomes code there, kill -9 loses nothing, writes made while
// running arrive, and the process never holds more than max_connections sockets to the server
// for work, plus one for each change feed's longpoll (gateway/connection_budget.hpp).
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "policy/id_map.hpp"
#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
namespace policy = couchgate::policy;

namespace {

// Samples a process's connections to the server every 20 ms until stopped (or destroyed, so a
// failed REQUIRE does not leave a joinable thread behind).
class socket_sampler {
 public:
  explicit socket_sampler(std::atomic<pid_t>& pid) : pid_(pid), thread_([this] {
    while (running_) {
      int now = connections_to_server(pid_.load());
      if (now > peak_) peak_ = now;
      std::this_thread::sleep_for(20ms);
    }
  }) {}
  ~socket_sampler() { stop(); }
  int stop() {
    running_ = false;
    if (thread_.joinable()) thread_.join();
    return peak_;
  }

 private:
  std::atomic<pid_t>& pid_;
  std::atomic<bool> running_{true};
  std::atomic<int> peak_{0};
  std::thread thread_;
};

}  // namespace

TEST_CASE("fan-in: 200 user databases converge exactly into the central database, kill -9 included") {
  auto n = fresh_names("fanin");
  json cfg = base_config(n);
  cfg["fanin"]["max_connections"] = 6;
  cfg["fanin"]["detection"] = "auto";  // db_updates on CouchDB, the sweep on servers without it
  const int users = 200;
  std::map<std::string, std::string> db_owner;
  for (int i = 0; i < users; ++i) {
    std::string u = "f" + std::to_string(i) + "-" + n.role;
    REQUIRE(create_user(u, {n.role}).status == 201);
    db_owner[policy::user_db_name(n.prefix, u)] = u;
  }
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(120s), cg.log());

  // Sample connections from outside the process for the whole test.
  std::atomic<pid_t> watched{cg.pid()};
  socket_sampler sampler(watched);

  int salt = 0;
  for (const auto& [db, owner] : db_owner) {
    REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s), db);
    write_varied(db, ++salt);
    if (salt == users / 2) {
      cg.kill9();  // mid-run, without warning
      cg.start();
      watched = cg.pid();
    }
  }
  REQUIRE_MESSAGE(cg.wait_ready(120s), cg.log());
  leaf_map want = expected_central(db_owner);
  CHECK(want.size() == static_cast<std::size_t>(users) * 6);
  bool converged = eventually([&] { return central_user_docs(n.central) == want; }, 180s);
  CHECK_MESSAGE(converged, describe_diff(central_user_docs(n.central), want) << tail(cg.log()));

  // kill -9 again after convergence, restart: the same exact result, nothing duplicated.
  cg.kill9();
  cg.start();
  watched = cg.pid();
  REQUIRE(cg.wait_ready(120s));

  // Writes made while running arrive.
  std::string first_db = db_owner.begin()->first;
  couch c;
  REQUIRE(c.put("/" + enc(first_db) + "/late-write", json{{"late", true}}).status == 201);
  // ... and so do updates and deletions of documents the central database already holds.
  auto doc1 = c.get("/" + enc(first_db) + "/doc-1");
  REQUIRE(doc1.status == 200);
  doc1.body["v"] = 3;
  REQUIRE(c.put("/" + enc(first_db) + "/doc-1", doc1.body).status == 201);
  const std::string odd_path = "/" + enc(first_db) + "/" + enc("odd id:/%é");
  auto odd = c.get(odd_path);
  REQUIRE(odd.status == 200);
  REQUIRE(c.del(odd_path + "?rev=" + enc(odd.body["_rev"].get<std::string>())).status == 200);
  want = expected_central(db_owner);
  CHECK_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 60s), tail(cg.log()));
  // A new document's body and history arrive as written (taken from the _changes row itself
  // when the feed carried it: fanin.inline_docs), and so do an edited one's.
  for (const std::string id : {"late-write", "doc-1"}) {
    CAPTURE(id);
    auto s = c.get("/" + enc(first_db) + "/" + id + "?revs=true");
    auto d = c.get("/" + enc(n.central) + "/" + enc(db_owner.begin()->second + ":" + id) + "?revs=true");
    REQUIRE(s.status == 200);
    REQUIRE(d.status == 200);
    CHECK(d.body["_revisions"] == s.body["_revisions"]);
    s.body.erase("_id");
    d.body.erase("_id");
    CHECK(d.body == s.body);
  }

  // The cap: fanin.max_connections (6) for work, plus the _users and (on CouchDB) _db_updates
  // longpolls on sockets of their own (auto detection counts the latter wherever it might run).
  CHECK(cg.metric("couchgate_couchdb_connections_max") == 6.0 + 2.0);
  int peak = sampler.stop();
  MESSAGE("peak connections to the server: " << peak);
  CHECK(peak > 0);
  CHECK(peak <= 6 + 2);

  // No user design document became a design document centrally; the only one there may be is
  // couchgate's guard.
  auto ddocs = couch().get("/" + enc(n.central) + "/_all_docs?startkey=%22_design%2F%22&endkey=%22_design0%22");
  REQUIRE(ddocs.status == 200);
  const bool guarded = cfg["fanin"].value("central_guard", false);
  REQUIRE(ddocs.body["rows"].size() == (guarded ? 1u : 0u));
  if (guarded) CHECK(ddocs.body["rows"][0]["id"] == "_design/couchgate");
  std::string owner0 = db_owner.begin()->second;
  auto as_data = couch().get("/" + enc(n.central) + "/" + enc(owner0 + ":_design/evil"));
  CHECK(as_data.status == 200);

  // Conflicts: both branches present centrally, same winner.
  auto src = couch().get("/" + enc(first_db) + "/conflicted?conflicts=true");
  auto dst = couch().get("/" + enc(n.central) + "/" + enc(owner0 + ":conflicted") + "?conflicts=true");
  REQUIRE(src.status == 200);
  REQUIRE(dst.status == 200);
  CHECK(src.body["_rev"] == dst.body["_rev"]);
  CHECK(src.body["_conflicts"] == dst.body["_conflicts"]);
  // Attachments arrive with the same digest.
  std::string d1 = attachment_digest(first_db, "with-attachment");
  CHECK_FALSE(d1.empty());
  CHECK(d1 == attachment_digest(n.central, owner0 + ":with-attachment"));

  // The status API knows the user's replication state.
  auto st = cg.admin_get("/status/users/" + enc(owner0));
  CHECK(st.status == 200);
  CHECK(st.body["db"] == first_db);
  CHECK(st.body["replication"]["last_error"] == "");
  auto written = cg.metric("couchgate_replicated_docs_total");
  REQUIRE(written);
  CHECK(*written >= 1);
  // Most seeded documents are new ones, taken inline; conflicts, tombstones, attachments and
  // edits need the source's history.
  auto taken_inline = cg.metric("couchgate_replicated_inline_docs_total");
  REQUIRE(taken_inline);
  CHECK(*taken_inline >= 1);
  CHECK(*taken_inline < *written);
  CHECK(cg.terminate() == 0);
  // Checkpoints are kept in memory between writes (fanin.checkpoint_interval); a graceful stop
  // writes them all.
  for (const auto& [db, owner] : db_owner) {
    CAPTURE(db);
    auto cp = couch().get("/" + enc(n.state) + "/" + enc("checkpoint:" + db));
    REQUIRE(cp.status == 200);
    CHECK(cp.body["source"] == db);
    CHECK(cp.body["seq"] != json(0));
  }
}

TEST_CASE("fan-in: a user cannot write the central database") {
  auto n = fresh_names("guard");
  json cfg = base_config(n);
  cfg["fanin"]["central_guard"] = true;
  std::string u = "writer-" + n.role;
  REQUIRE(create_user(u, {n.role}).status == 201);
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  const std::string guard_path = "/" + enc(n.central) + "/_design/couchgate";
  auto guard = couch().get(guard_path);
  REQUIRE(guard.status == 200);
  CHECK(guard.body.contains("validate_doc_update"));
  couch user(u, "pw-123456");
  auto r = user.put("/" + enc(n.central) + "/sneaky", json{{"x", 1}});
  CHECK((r.status == 401 || r.status == 403));
  auto r2 = user.post("/" + enc(n.central) + "/_bulk_docs", json{{"docs", {{{"_id", "sneaky2"}}}}});
  // pouchdb-server answers 201 with a per-document error for _bulk_docs; CouchDB 401/403.
  CHECK(couch().get("/" + enc(n.central) + "/sneaky").status == 404);
  CHECK(couch().get("/" + enc(n.central) + "/sneaky2").status == 404);
  // Readers: only admins.
  auto listing = user.get("/" + enc(n.central) + "/_all_docs");
  CHECK((listing.status == 401 || listing.status == 403));
  CHECK(cg.terminate() == 0);

  // central_guard: false removes couchgate's guard; _security alone keeps users out.
  json unguarded = cfg;
  unguarded["fanin"]["central_guard"] = false;
  couchgate_process cg2(unguarded);
  cg2.start();
  REQUIRE_MESSAGE(cg2.wait_ready(60s), cg2.log());
  CHECK(couch().get(guard_path).status == 404);
  auto r3 = user.put("/" + enc(n.central) + "/sneaky3", json{{"x", 1}});
  CHECK((r3.status == 401 || r3.status == 403));
  CHECK(couch().get("/" + enc(n.central) + "/sneaky3").status == 404);
  CHECK(cg2.terminate() == 0);
}

TEST_CASE("fan-in: the sweep path is used when forced, and the db_updates path where the server has it") {
  for (std::string mode : {"sweep", "db_updates"}) {
    CAPTURE(mode);
    // CouchDB 3.x answers 404 while _global_changes is missing (couchgate creates it); pouchdb 400.
    const int db_updates_status = couch().get("/_db_updates?limit=1").status;
    const bool has_db_updates = db_updates_status == 200 || db_updates_status == 404;
    if (mode == "db_updates" && env().pouchdb) {
      MESSAGE("pouchdb-server has no _db_updates (HTTP 400); the db_updates path runs against CouchDB only "
              "(COUCHDB_URL=...); its parsing is unit-tested on recorded CouchDB 3.5 exchanges");
      continue;
    }
    if (mode == "db_updates" && !has_db_updates) continue;
    auto n = fresh_names("mode-" + mode);
    json cfg = base_config(n);
    cfg["fanin"]["detection"] = mode;
    std::string u = "m-" + n.role;
    REQUIRE(create_user(u, {n.role}).status == 201);
    couchgate_process cg(cfg);
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
    std::string db = policy::user_db_name(n.prefix, u);
    REQUIRE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 30s));
    REQUIRE(couch().put("/" + enc(db) + "/d1", json{{"x", 1}}).status == 201);
    std::string cid = u + ":d1";
    CHECK_MESSAGE(eventually([&] { return couch().get("/" + enc(n.central) + "/" + enc(cid)).status == 200; }, 30s), cg.log());
    auto st = cg.admin_get("/status");
    REQUIRE(st.status == 200);
    CHECK(st.body["fanin"]["detection"] == mode);
    CHECK(cg.terminate() == 0);
  }
}

TEST_CASE("the shared database: its role may read and write, and it is fanned in under %shared") {
  auto n = fresh_names("shared");
  json cfg = base_config(n);
  std::string shared_db = "t" + unique("shared") + "-mutual";
  cfg["shared"] = {{"enabled", true}, {"db", shared_db}, {"member_roles", {"mutual-" + n.role}}};
  std::string member = "member-" + n.role, outsider = "outsider-" + n.role;
  REQUIRE(create_user(member, {"mutual-" + n.role}).status == 201);
  REQUIRE(create_user(outsider, {"unrelated"}).status == 201);
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());

  couch m(member, "pw-123456"), o(outsider, "pw-123456");
  auto w = m.put("/" + enc(shared_db) + "/note-1", json{{"text", "hello"}});
  CHECK_MESSAGE(w.status == 201, w.raw);
  CHECK(m.get("/" + enc(shared_db) + "/note-1").status == 200);
  auto denied = o.get("/" + enc(shared_db) + "/note-1");
  CHECK((denied.status == 401 || denied.status == 403));

  std::string central_id = "%shared:note-1";
  CHECK_MESSAGE(eventually([&] { return couch().get("/" + enc(n.central) + "/" + enc(central_id)).status == 200; }, 60s),
                tail(cg.log()));
  CHECK(couch().get("/" + enc(n.central) + "/" + enc(central_id)).body["text"] == "hello");
  CHECK(cg.terminate() == 0);
}

TEST_CASE("fan-in: a source read again from a lost checkpoint writes nothing central already has") {
  auto n = fresh_names("reread");
  json cfg = base_config(n);
  const std::string user = "reread-" + n.role;
  REQUIRE(create_user(user, {n.role}).status == 201);
  const std::string db = policy::user_db_name(n.prefix, user);
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s), cg.log());
  json docs = json::array();
  for (int i = 0; i < 30; ++i) docs.push_back({{"_id", "doc-" + std::to_string(i)}, {"i", i}});
  REQUIRE(couch().post("/" + enc(db) + "/_bulk_docs", json{{"docs", docs}}).status == 201);
  std::map<std::string, std::string> db_owner{{db, user}};
  const leaf_map want = expected_central(db_owner);
  REQUIRE(want.size() == 30);
  REQUIRE_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 60s), tail(cg.log()));
  CHECK(cg.metric("couchgate_replicated_docs_total").value_or(0) >= 30);
  REQUIRE(cg.terminate() == 0);

  // The checkpoint lost: the source is read from the start again; _revs_diff finds every
  // revision already central, and nothing is written again.
  const std::string cp_path = "/" + enc(n.state) + "/" + enc("checkpoint:" + db);
  auto cp = couch().get(cp_path);
  REQUIRE(cp.status == 200);
  REQUIRE(couch().del(cp_path + "?rev=" + enc(cp.body["_rev"].get<std::string>())).status == 200);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  REQUIRE_MESSAGE(eventually([&] {
                    auto again = couch().get(cp_path);
                    return again.status == 200 && again.body.value("seq", json(0)) != json(0);
                  }, 60s),
                  tail(cg.log()));
  CHECK(cg.metric("couchgate_replicated_docs_total") == 0.0);
  CHECK(central_user_docs(n.central) == want);
  CHECK(cg.terminate() == 0);
}
