// couchgate's targets disappearing under it, against a real server: the central database
// deleted while couchgate runs (readiness names it; it is created again and every document
// arrives again), the central database restored from an older backup (every document arrives
// again, with one warning), and the state database deleted while running (created again, a
// bounded number of log lines, fan-in goes on).
#include <doctest/doctest.h>

#include <map>
#include <string>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
namespace policy = couchgate::policy;

namespace {

// central_user_docs, but empty while the central database is missing (fixtures' leaves requires it).
leaf_map central_now(const std::string& central) {
  if (couch().get("/" + enc(central)).status != 200) return {};
  return central_user_docs(central);
}

std::size_t count_of(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

// Warning and error lines of a log (the text format: "<time> <level> [<logger>] ...").
std::size_t problem_lines(const std::string& log) { return count_of(log, " warning [") + count_of(log, " error [") + count_of(log, " critical ["); }

struct fleet {
  std::map<std::string, std::string> db_owner;
};

// `users` users whose databases hold write_varied's history.
fleet make_fleet(const names& n, int users, const std::string& stem) {
  fleet f;
  for (int i = 0; i < users; ++i) {
    std::string u = stem + std::to_string(i) + "-" + n.role;
    REQUIRE(create_user(u, {n.role}).status == 201);
    f.db_owner[policy::user_db_name(n.prefix, u)] = u;
  }
  return f;
}

void fill(const fleet& f) {
  int salt = 0;
  for (const auto& [db, owner] : f.db_owner) {
    REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s), db);
    write_varied(db, ++salt);
  }
}

void write_more(const fleet& f, const std::string& id) {
  for (const auto& [db, owner] : f.db_owner) REQUIRE(couch().put("/" + enc(db) + "/" + enc(id), json{{"more", id}}).status == 201);
}

// Starts couchgate, fills the fleet's databases, waits until the central database holds them.
leaf_map start_and_converge(couchgate_process& cg, const names& n, const fleet& f) {
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  fill(f);
  leaf_map want = expected_central(f.db_owner);
  REQUIRE_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 60s), tail(cg.log()));
  return want;
}

}  // namespace

TEST_CASE("central database deleted while running: /readyz names it, it is created again and every document arrives again") {
  auto n = fresh_names("cdel");
  json cfg = base_config(n);
  cfg["fanin"]["target_check_interval"] = "1s";
  auto f = make_fleet(n, 4, "cd");
  couchgate_process cg(cfg);
  leaf_map want = start_and_converge(cg, n, f);

  const std::size_t problems_before = problem_lines(cg.log());  // e.g. other tests' malformed users
  REQUIRE(couch().del("/" + enc(n.central)).status == 200);
  // Nothing is written meanwhile, so only couchgate's own look finds it.
  std::string why;
  bool not_ready = eventually([&] {
    auto r = cg.admin_get("/readyz");
    why = r.raw;
    return r.status == 503 && r.raw.find(n.central) != std::string::npos;
  }, 20s);
  CHECK_MESSAGE(not_ready, why << tail(cg.log()));
  CHECK(cg.metric("couchgate_central_missing").value_or(0) == 1);

  // Created again; everything sent before arrives again, and later writes too.
  write_more(f, "after-delete");
  want = expected_central(f.db_owner);
  CHECK_MESSAGE(eventually([&] { return central_now(n.central) == want; }, 60s),
                describe_diff(central_now(n.central), want) << tail(cg.log()));
  CHECK(eventually([&] { return cg.admin_get("/readyz").status == 200; }, 20s));
  CHECK(cg.metric("couchgate_central_missing").value_or(1) == 0);
  CHECK(cg.metric("couchgate_central_resets_total").value_or(0) == 1);
  // Its _security is admin-only again.
  auto sec = couch().get("/" + enc(n.central) + "/_security");
  REQUIRE(sec.status == 200);
  CHECK(sec.body["members"]["roles"] == json::array({"_admin"}));
  // One warning that it is missing, one that everything is read again: no storm.
  const std::string log = cg.log();
  CHECK_MESSAGE(count_of(log, "central database " + n.central + " is missing") == 1, tail(log));
  CHECK_MESSAGE(count_of(log, "sources are read again from the start") == 1, tail(log));
  CHECK_MESSAGE(problem_lines(log) - problems_before <= 4, tail(log));

  // The new checkpoints belong to the new central database: a restart reads nothing again.
  cg.kill9();
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  write_more(f, "after-restart");
  want = expected_central(f.db_owner);
  CHECK_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 60s), tail(cg.log()));
  CHECK(count_of(cg.log(), "read again from the start") == 1);
}

TEST_CASE("central database restored from an older backup: every source is read again, with one warning") {
  auto n = fresh_names("cold");
  json cfg = base_config(n);
  auto f = make_fleet(n, 3, "co");
  couchgate_process cg(cfg);
  leaf_map want = start_and_converge(cg, n, f);

  // The "backup": a file copy holds the marker as it was then, and some of the documents.
  couch c;
  auto marker = c.get("/" + enc(n.central) + "/_local/couchgate-epoch");
  REQUIRE_MESSAGE(marker.status == 200, marker.raw);
  REQUIRE(marker.body["epoch"].is_string());
  const auto& first = *f.db_owner.begin();
  const std::string kept_id = first.second + ":doc-1";
  auto kept = c.get("/" + enc(n.central) + "/" + enc(kept_id) + "?revs=true");
  REQUIRE(kept.status == 200);

  // Later writes move the checkpoints (and the marker's generation) past the backup.
  write_more(f, "after-backup");
  want = expected_central(f.db_owner);
  REQUIRE_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 60s), tail(cg.log()));
  REQUIRE(eventually([&] {
    auto m = c.get("/" + enc(n.central) + "/_local/couchgate-epoch");
    return m.status == 200 && m.body["generation"].get<std::uint64_t>() > marker.body["generation"].get<std::uint64_t>();
  }, 20s));
  REQUIRE(cg.terminate() == 0);

  SUBCASE("the backup carries the older marker") {
    REQUIRE(c.del("/" + enc(n.central)).status == 200);
    REQUIRE(c.put("/" + enc(n.central), json::object()).status == 201);
    json old_marker{{"epoch", marker.body["epoch"]}, {"generation", marker.body["generation"]}, {"created", marker.body["created"]}};
    REQUIRE(c.put("/" + enc(n.central) + "/_local/couchgate-epoch", old_marker).status == 201);
  }
  SUBCASE("the backup has no _local documents (made by replication)") {
    REQUIRE(c.del("/" + enc(n.central)).status == 200);
    REQUIRE(c.put("/" + enc(n.central), json::object()).status == 201);
  }
  auto put_back = c.post("/" + enc(n.central) + "/_bulk_docs", json{{"new_edits", false}, {"docs", json::array({kept.body})}});
  REQUIRE_MESSAGE(put_back.status == 201, put_back.raw);
  REQUIRE(central_user_docs(n.central).size() == 1);

  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  CHECK_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 60s),
                describe_diff(central_user_docs(n.central), want) << tail(cg.log()));
  CHECK_MESSAGE(count_of(cg.log(), "sources are read again from the start") == 1, tail(cg.log()));
  CHECK(cg.metric("couchgate_central_resets_total").value_or(0) == 1);
}

TEST_CASE("state database deleted while running: created again, checkpoints written back, no error storm") {
  auto n = fresh_names("sdel");
  json cfg = base_config(n);
  cfg["fanin"]["target_check_interval"] = "1s";
  auto f = make_fleet(n, 3, "sd");
  couchgate_process cg(cfg);
  leaf_map want = start_and_converge(cg, n, f);
  const std::size_t problems_before = problem_lines(cg.log());

  couch c;
  REQUIRE(c.del("/" + enc(n.state)).status == 200);
  // Created again by couchgate's own look (nothing is written meanwhile), with every
  // checkpoint held in memory.
  auto checkpoints = [&] {
    auto r = c.get("/" + enc(n.state) + "/_all_docs?startkey=%22checkpoint:%22&endkey=%22checkpoint;%22");
    return r.status == 200 ? r.body["rows"].size() : std::size_t(0);
  };
  CHECK_MESSAGE(eventually([&] { return checkpoints() == f.db_owner.size(); }, 20s), tail(cg.log()));
  auto sec = c.get("/" + enc(n.state) + "/_security");
  REQUIRE(sec.status == 200);
  CHECK(sec.body["members"]["roles"] == json::array({"_admin"}));

  // Fan-in and provisioning go on.
  write_more(f, "after-state-delete");
  const std::string late_user = "sd-late-" + n.role;
  REQUIRE(create_user(late_user, {n.role}).status == 201);
  want = expected_central(f.db_owner);
  CHECK_MESSAGE(eventually([&] { return central_user_docs(n.central) == want; }, 60s), tail(cg.log()));
  CHECK(eventually([&] { return c.get("/" + enc(policy::user_db_name(n.prefix, late_user))).status == 200; }, 30s));
  CHECK(eventually([&] { return c.get("/" + enc(n.state) + "/feed:users").status == 200; }, 30s));
  CHECK(cg.admin_get("/readyz").status == 200);
  // A few seconds more (several checkpoint intervals and looks): the lines stay bounded.
  const auto until = std::chrono::steady_clock::now() + 3s;
  eventually([&] { return std::chrono::steady_clock::now() >= until; }, 5s);
  const std::string log = cg.log();
  CHECK_MESSAGE(count_of(log, "state database " + n.state + " is missing") == 1, tail(log));
  CHECK_MESSAGE(problem_lines(log) - problems_before <= 3, tail(log));
  // Nothing is read again: the checkpoints were written back as they were.
  CHECK(log.find("read again from the start") == std::string::npos);
}
