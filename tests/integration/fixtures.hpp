#pragma once
// Data fixtures shared by the fan-in and restore tests: a varied document history per database
// and the leaf-revision maps the tests compare.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "policy/id_map.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/harness.hpp"

namespace couchgate::test {

namespace policy = couchgate::policy;
using leaf_map = std::map<std::string, std::set<std::string>>;  // id -> leaf revs (deleted included)

// Every document id with all its leaf revisions, from _changes?style=all_docs.
inline leaf_map leaves(const std::string& db) {
  leaf_map out;
  auto r = couch().get("/" + enc(db) + "/_changes?style=all_docs");
  REQUIRE_MESSAGE(r.status == 200, db << ": " << r.raw);
  for (const auto& row : r.body["results"]) {
    auto& revs = out[row["id"].get<std::string>()];
    for (const auto& c : row["changes"]) revs.insert(c["rev"].get<std::string>());
  }
  return out;
}

inline leaf_map expected_central(const std::map<std::string, std::string>& db_owner) {
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

inline leaf_map central_user_docs(const std::string& central) {
  leaf_map all = leaves(central);
  all.erase("_design/couchgate");
  return all;
}

// Writes a varied history into one database: creates, an update, a deletion, a conflict written
// with new_edits:false, an attachment, a design document and an odd id.
inline void write_varied(const std::string& db, int salt) {
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

inline std::string attachment_digest(const std::string& db, const std::string& id) {
  auto r = couch().get("/" + enc(db) + "/" + enc(id));
  if (r.status != 200 || !r.body.contains("_attachments")) return "";
  return r.body["_attachments"]["hello.txt"].value("digest", "");
}

// First few differences between two leaf maps, for failure messages.
inline std::string describe_diff(const leaf_map& got, const leaf_map& want) {
  std::string out;
  int shown = 0;
  for (const auto& [id, w] : want) {
    auto it = got.find(id);
    if (it == got.end()) out += "missing " + id + "\n";
    else if (it->second != w) out += "revs differ " + id + ": got " + join_revs(it->second) + "want " + join_revs(w) + "\n";
    else continue;
    if (++shown >= 10) return out;
  }
  for (const auto& [id, g] : got) {
    if (!want.count(id)) {
      out += "unexpected " + id + "\n";
      if (++shown >= 10) return out;
    }
  }
  return out;
}

// base_config with short timeouts, pointed at a fault proxy.
inline json fault_config(const names& n, const fault_proxy& proxy) {
  json cfg = base_config(n);
  cfg["couchdb"]["url"] = proxy.url();
  cfg["couchdb"]["request_timeout"] = "5s";
  cfg["couchdb"]["feed_timeout"] = "3s";
  cfg["couchdb"]["heartbeat"] = "1s";
  return cfg;
}

// A whole HTTP/1.1 answer with a JSON body, for fault_proxy::answer_next.
inline std::string http_answer(const std::string& status_line, const std::string& extra_headers, const std::string& body) {
  return "HTTP/1.1 " + status_line + "\r\n" + extra_headers + "Content-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

inline std::string tail(const std::string& s, std::size_t n = 4000) { return s.size() > n ? s.substr(s.size() - n) : s; }

// Whether couchgate's deletion of `user`'s database `db` (on_delete: delete) shows on the server
// within `deadline`. On pouchdb-server a request that passed express-pouchdb's "does the database
// exist" check (lib/utils.js setDBOnReq) just before the DELETE opens the database through the
// same queue afterwards, which creates it again, empty: a fan-in or sweep request in flight does
// that. couchgate did delete it when its log says so, and CouchDB has no such race; what matters
// for the user then is that they are not a member of what pouchdb-server made again.
inline bool deleted_by_couchgate(const std::string& db, const std::string& user, const couchgate_process& cg,
                                 std::chrono::milliseconds deadline) {
  const std::string path = "/" + enc(db);
  if (eventually([&] { return couch().get(path).status == 404; }, deadline)) return true;
  if (!env().pouchdb || cg.log().find("db=" + db + " deleted (on_delete: delete)") == std::string::npos) return false;
  MESSAGE("pouchdb-server recreated " << db << " after couchgate deleted it");
  const auto members = couch().get(path + "/_security").body.value("members", json::object()).value("names", json::array());
  return std::find(members.begin(), members.end(), json(user)) == members.end();
}

// Seeded chaos (kill -9 at random moments): COUCHGATE_CHAOS_SEED=<n> replays a run (tests print
// the seed), else a fresh one. COUCHGATE_FULL=1 runs `full` cycles instead of `quick`.
inline std::uint64_t chaos_seed() {
  if (const char* s = std::getenv("COUCHGATE_CHAOS_SEED"); s && *s) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}
inline int chaos_cycles(int quick = 3, int full = 20) {
  const char* f = std::getenv("COUCHGATE_FULL");
  return f && std::string(f) == "1" ? full : quick;
}

}  // namespace couchgate::test
