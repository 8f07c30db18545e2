// Fan-in against a real server: every user database converges into the central database with
// exactly the same ids (namespaced) and leaf revisions, conflicts, deletions and attachments
// included, no design document becomes code there, kill -9 loses nothing, writes made while
// running arrive, and the process never holds more than max_connections sockets to the server.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "policy/id_map.hpp"
#include "policy/naming.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
namespace policy = couchgate::policy;

namespace {

using leaf_map = std::map<std::string, std::set<std::string>>;  // id -> leaf revs (deleted included)

// Every document id with all its leaf revisions, from _changes?style=all_docs.
leaf_map leaves(const std::string& db) {
  leaf_map out;
  auto r = couch().get("/" + enc(db) + "/_changes?style=all_docs");
  REQUIRE_MESSAGE(r.status == 200, db << ": " << r.raw);
  for (const auto& row : r.body["results"]) {
    auto& revs = out[row["id"].get<std::string>()];
    for (const auto& c : row["changes"]) revs.insert(c["rev"].get<std::string>());
  }
  return out;
}

leaf_map expected_central(const std::map<std::string, std::string>& db_owner) {
  leaf_map out;
  for (const auto& [db, owner] : db_owner) {
    for (auto& [id, revs] : leaves(db)) {
      auto central = policy::to_central_id(policy::id_mode::namespaced, policy::owner{policy::owner::kind::user, owner}, id);
      REQUIRE(central);
      out[*central] = revs;
    }
  }
  return out;
}

leaf_map central_user_docs(const std::string& central) {
  leaf_map all = leaves(central);
  all.erase("_design/couchgate");
  return all;
}

std::string b64(const std::string& s) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < s.size(); i += 3) {
    unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8 | (unsigned char)s[i + 2];
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == s.size()) {
    unsigned v = (unsigned char)s[i] << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == s.size()) {
    unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8;
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

// Writes a varied history into one database: creates, an update, a deletion, a conflict written
// with new_edits:false, an attachment, a design document and an odd id.
void write_varied(const std::string& db, int salt) {
  couch c;
  std::string base = "/" + enc(db);
  auto r1 = c.put(base + "/doc-1", json{{"v", 1}, {"salt", salt}});
  REQUIRE_MESSAGE(r1.status == 201, r1.raw);
  auto r2 = c.put(base + "/doc-1", json{{"v", 2}, {"_rev", r1.body["rev"]}});
  REQUIRE_MESSAGE(r2.status == 201, r2.raw);
  auto r3 = c.put(base + "/to-delete", json{{"v", 1}});
  REQUIRE(r3.status == 201);
  REQUIRE(c.del(base + "/to-delete?rev=" + enc(r3.body["rev"].get<std::string>())).status == 200);
  // Two conflicting branches of one document.
  auto conflict = c.post(base + "/_bulk_docs",
                         json{{"new_edits", false},
                              {"docs",
                               {{{"_id", "conflicted"}, {"_rev", "2-aaaa" + std::to_string(salt)}, {"side", "a"},
                                 {"_revisions", {{"start", 2}, {"ids", {"aaaa" + std::to_string(salt), "root"}}}}},
                                {{"_id", "conflicted"}, {"_rev", "2-bbbb" + std::to_string(salt)}, {"side", "b"},
                                 {"_revisions", {{"start", 2}, {"ids", {"bbbb" + std::to_string(salt), "root"}}}}}}}});
  REQUIRE_MESSAGE(conflict.status == 201, conflict.raw);
  auto att = c.put(base + "/with-attachment",
                   json{{"_attachments",
                         {{"hello.txt", {{"content_type", "text/plain"}, {"data", b64("hello " + std::to_string(salt))}}}}}});
  REQUIRE_MESSAGE(att.status == 201, att.raw);
  REQUIRE(c.put(base + "/" + enc("odd id:/%é"), json{{"odd", true}}).status == 201);
  // User code: rejects every write by a non-admin. In the central database it must stay data.
  auto ddoc = c.put(base + "/_design/evil",
                    json{{"validate_doc_update",
                          "function(n, o, u){ if (u.roles.indexOf('_admin') === -1) throw({forbidden:'user code'}); }"},
                         {"views", {{"all", {{"map", "function(d){ emit(d._id); }"}}}}}});
  REQUIRE_MESSAGE(ddoc.status == 201, ddoc.raw);
}

std::string attachment_digest(const std::string& db, const std::string& id) {
  auto r = couch().get("/" + enc(db) + "/" + enc(id));
  if (r.status != 200 || !r.body.contains("_attachments")) return "";
  return r.body["_attachments"]["hello.txt"].value("digest", "");
}

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
  CHECK_MESSAGE(converged, cg.log().substr(0, 4000));

  // kill -9 again after convergence, restart: the same exact result, nothing duplicated.
  cg.kill9();
  cg.start();
  watched = cg.pid();
  REQUIRE(cg.wait_ready(120s));

  // Writes made while running arrive.
  std::string first_db = db_owner.begin()->first;
  couch c;
  REQUIRE(c.put("/" + enc(first_db) + "/late-write", json{{"late", true}}).status == 201);
  want = expected_central(db_owner);
  CHECK_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 60s), cg.log().substr(0, 4000));

  int peak = sampler.stop();
  MESSAGE("peak connections to the server: " << peak);
  CHECK(peak > 0);
  CHECK(peak <= 6);

  // No user design document became a design document centrally; the only one is couchgate's guard.
  auto ddocs = couch().get("/" + enc(n.central) + "/_all_docs?startkey=%22_design%2F%22&endkey=%22_design0%22");
  REQUIRE(ddocs.status == 200);
  REQUIRE(ddocs.body["rows"].size() == 1);
  CHECK(ddocs.body["rows"][0]["id"] == "_design/couchgate");
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
  CHECK(cg.terminate() == 0);
}

TEST_CASE("fan-in: a user cannot write the central database") {
  auto n = fresh_names("guard");
  json cfg = base_config(n);
  std::string u = "writer-" + n.role;
  REQUIRE(create_user(u, {n.role}).status == 201);
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  couch user(u, "pw-123456");
  auto r = user.put("/" + enc(n.central) + "/sneaky", json{{"x", 1}});
  CHECK((r.status == 401 || r.status == 403));
  auto r2 = user.post("/" + enc(n.central) + "/_bulk_docs", json{{"docs", {{{"_id", "sneaky2"}}}}});
  // pouchdb-server answers 201 with a per-document error for _bulk_docs; CouchDB 401/403.
  CHECK(couch().get("/" + enc(n.central) + "/sneaky").status == 404);
  CHECK(couch().get("/" + enc(n.central) + "/sneaky2").status == 404);
  // Readers: only admins.
  CHECK((user.get("/" + enc(n.central) + "/_all_docs").status == 401 || user.get("/" + enc(n.central) + "/_all_docs").status == 403));
  CHECK(cg.terminate() == 0);
}

TEST_CASE("fan-in: the sweep path is used when forced, and the db_updates path where the server has it") {
  for (std::string mode : {"sweep", "db_updates"}) {
    CAPTURE(mode);
    bool has_db_updates = couch().get("/_db_updates?limit=1").status == 200 || couch().get("/_db_updates?limit=1").status == 404;
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
