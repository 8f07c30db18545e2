// The provisioner's `_users` feed, driven by scripted exchanges (scripted_transport.hpp): it
// starts from the stored position, reconciles, then follows the longpoll, pipelined (issue #18):
// the next read goes out as soon as a page arrives, each user's database and `_security` are made
// while the feed goes on, and the stored position never passes a user who is not done: a user
// whose `_security` write fails is retried alone and holds the position back until it succeeds;
// positions of pages in quick succession are stored together.
#include <doctest/doctest.h>

#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gateway/provisioner.hpp"
#include "policy/security.hpp"
#include "replicator/state_store.hpp"
#include "replicator/transport/couch_client.hpp"
#include "tests/unit/scripted_transport.hpp"

namespace r = couchgate::replicator;
using namespace couchgate::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {
std::string users_page(const std::string& name, const std::string& seq) {
  const std::string id = "org.couchdb.user:" + name;
  return json{{"results",
               {{{"seq", seq},
                 {"id", id},
                 {"changes", {{{"rev", "1-a"}}}},
                 {"doc", {{"_id", id}, {"_rev", "1-a"}, {"name", name}, {"type", "user"}, {"roles", {"app"}}, {"password_scheme", "pbkdf2"}}}}}},
              {"last_seq", seq},
              {"pending", 0}}
      .dump();
}

// The targets of the requests, in order, that match one of `parts`.
std::vector<std::string> sequence(const scripted_transport& s, const std::vector<std::string>& parts) {
  std::vector<std::string> out;
  for (const auto& q : s.requests()) {
    for (const auto& p : parts) {
      if (q.target.find(p) != std::string::npos) {
        out.push_back(q.method + " " + q.target.substr(0, q.target.find('&')));
        break;
      }
    }
  }
  return out;
}

// The provisioner over scripted exchanges (default config) from the stored position 5-u, after a
// first reconcile that finds no user and no database.
struct users_feed {
  scripted_couch c;
  scripted_transport& s = c.server;
  couchgate::gateway::provisioning_config cfg;
  couchgate::gateway::provisioner p;
  explicit users_feed(std::size_t window = 16) : p{c.client, c.state, c.metrics, cfg, {}, window} {
    s.on("GET", "/cg_state/feed%3Ausers", answer(200, R"({"_id":"feed:users","_rev":"1-f","value":"5-u"})"));
    s.on("GET", "/_users/_all_docs", answer(200, R"({"total_rows":0,"offset":0,"rows":[]})"));
    s.on("GET", "/_all_dbs", answer(200, "[]"));
  }
};

// The feed positions the provisioner stores (its writes to the state database), in order, each
// with the number of _security writes sent before it.
class stored_positions {
 public:
  explicit stored_positions(scripted_transport& s) {
    s.on("POST", "/cg_state/_bulk_docs", [this, &s](const r::http_request& q) {
      const std::size_t secured = s.count("PUT", "/_security");
      std::lock_guard lk(mu_);
      positions_.push_back(json::parse(q.body_text())["docs"][0]["value"]);
      secured_.push_back(secured);
      return answer(201, R"([{"ok":true,"id":"feed:users","rev":"2-f"}])");
    }, -1);
  }
  std::vector<json> positions() const {
    std::lock_guard lk(mu_);
    return positions_;
  }
  std::vector<std::size_t> secured() const {
    std::lock_guard lk(mu_);
    return secured_;
  }
  json last() const {
    std::lock_guard lk(mu_);
    return positions_.empty() ? json() : positions_.back();
  }

 private:
  mutable std::mutex mu_;
  std::vector<json> positions_;
  std::vector<std::size_t> secured_;
};
}  // namespace

TEST_CASE_FIXTURE(users_feed, "provisioner _users feed: from the stored position; a new user's database and _security before the position moves") {
  const std::string carol = p.db_for("carol");
  const std::string dave = p.db_for("dave");

  s.on("GET", "/_users/_changes?since=5-u", answer(200, users_page("carol", "6-u")));
  s.on("PUT", "/" + carol + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + carol + "/_security", answer(200, R"({"ok":true})"));
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:users","rev":"2-f"}])"), -1);
  // dave: the first _security write fails; the batch is applied again, then the position moves.
  s.on("GET", "/_users/_changes?since=6-u", answer(200, users_page("dave", "7-u")), 2);
  s.on("PUT", "/" + dave + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + dave + "/_security", answer(500, R"({"error":"internal_server_error","reason":"boom"})"));
  s.on("PUT", "/" + dave + "?q=1", answer(412, R"({"error":"file_exists","reason":"exists"})"));
  s.on("GET", "/" + dave + "/_security", answer(200, "{}"));
  s.on("PUT", "/" + dave + "/_security", answer(200, R"({"ok":true})"));

  s.park_quiet_feeds();  // the feed's wait on 7-u does not hold the provisioner's thread
  p.start();
  // dave's chain is retried on its own (after a backoff) while the feed waits on 7-u.
  REQUIRE_MESSAGE(s.wait_for([&] { return s.count("PUT", "/" + dave + "/_security") == 2; }, 15s), s.requests().size());
  REQUIRE(s.wait_for([&] { return p.user("dave") && p.user("dave")->done; }, 5s));
  CHECK(p.ready());
  s.close();
  p.stop();

  std::string seen;
  for (const auto& x : sequence(s, {"/_users/_changes", carol, dave})) seen += x + "\n";
  INFO(seen);
  // The feed was read on, never again from a position it had passed.
  CHECK(sequence(s, {"/_users/_changes"}) ==
        std::vector<std::string>{"GET /_users/_changes?since=5-u", "GET /_users/_changes?since=6-u", "GET /_users/_changes?since=7-u"});
  CHECK(sequence(s, {carol}) == std::vector<std::string>{"PUT /" + carol + "?q=1", "PUT /" + carol + "/_security"});
  // A chain's later steps go before other users' creates in the pool (http_request::follow_up).
  for (const auto& q : s.requests()) {
    if (q.target.find(carol) == std::string::npos && q.target.find(dave) == std::string::npos) continue;
    CHECK_MESSAGE(q.follow_up == (q.target.find("?q=1") == std::string::npos), q.method, " ", q.target);
  }
  CHECK(sequence(s, {dave}) == std::vector<std::string>{"PUT /" + dave + "?q=1", "PUT /" + dave + "/_security",
                                                        "PUT /" + dave + "?q=1", "GET /" + dave + "/_security",
                                                        "PUT /" + dave + "/_security"});
  // Each position is stored after the _security of the users it covers (the last one while the
  // next longpoll waits, or at the latest when stopping: see feed_position).
  std::vector<json> positions;
  std::size_t carol_done = 0;          // the request that finished carol
  std::size_t dave_security_sent = 0;  // dave's _security writes so far: the 1st fails, the 2nd succeeds
  const auto all = s.requests();
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& q = all[i];
    if (q.method == "PUT" && q.target == "/" + carol + "/_security") carol_done = i;
    if (q.method == "PUT" && q.target == "/" + dave + "/_security") ++dave_security_sent;
    if (q.target == "/cg_state/_bulk_docs") {
      positions.push_back(json::parse(q.body)["docs"][0]["value"]);
      // 6-u covers carol, 7-u both: never stored before their _security, nor past dave's failure
      // (7-u only after dave's second, successful, _security write).
      CHECK(carol_done > 0);
      CHECK(i > carol_done);
      if (positions.back() == "7-u") CHECK(dave_security_sent == 2);
    }
    if (q.method == "PUT" && q.target == "/" + carol + "/_security") {
      CHECK(json::parse(q.body) == couchgate::policy::render_security(cfg.security, "carol"));
    }
  }
  CHECK(positions == std::vector<json>{"6-u", "7-u"});
  REQUIRE(p.user("carol"));
  CHECK(p.user("carol")->done);
  REQUIRE(p.user("dave"));
  CHECK(p.user("dave")->done);
  CHECK(s.unexpected().empty());
}

namespace {
// A `_changes` page of `docs` (included), the last at `seq`.
std::string changes_of(const std::vector<json>& docs, const std::string& seq) {
  json rows = json::array();
  for (const auto& d : docs) rows.push_back({{"seq", seq}, {"id", d["_id"]}, {"changes", {{{"rev", d["_rev"]}}}}, {"doc", d}});
  return json{{"results", rows}, {"last_seq", seq}, {"pending", 0}}.dump();
}
json user_doc_of(const std::string& name, json fields) {
  json d{{"_id", "org.couchdb.user:" + name}, {"_rev", "1-a"}, {"name", name}, {"type", "user"}, {"roles", {"app"}}};
  for (auto& [k, v] : fields.items()) {
    if (v.is_null()) d.erase(k);
    else d[k] = v;
  }
  return d;
}
}  // namespace

TEST_CASE("malformed _users documents: each logged and counted once however often reconcile and the feed read it; again once fixed and broken") {
  scripted_couch c;
  auto& s = c.server;
  captured_log log("provision");
  couchgate::gateway::provisioning_config cfg;
  // Every document the feed reads is told to the front door by name (user_changed), a
  // malformed one too when its id names the user; reconcile's listing is not a change.
  std::mutex changed_mu;
  std::vector<std::string> changed;
  couchgate::gateway::provisioner_hooks hooks;
  hooks.user_changed = [&](const std::string& name) {
    std::lock_guard lk(changed_mu);
    changed.push_back(name);
  };
  couchgate::gateway::provisioner p(c.client, c.state, c.metrics, cfg, std::move(hooks));
  const json no_name = user_doc_of("mal1", {{"name", nullptr}});
  const json type_7 = user_doc_of("mal2", {{"type", 7}});
  const json roles_text = user_doc_of("mal3", {{"roles", "app"}});
  const json fixed = user_doc_of("mal2", {{"_rev", "2-b"}});
  const json broken_again = user_doc_of("mal2", {{"_rev", "3-c"}, {"type", 7}});
  json listing = json::array();
  for (const auto& d : {no_name, type_7, roles_text}) listing.push_back({{"id", d["_id"]}, {"key", d["_id"]}, {"value", {{"rev", d["_rev"]}}}, {"doc", d}});
  listing.push_back({{"id", "_design/_auth"}, {"key", "_design/_auth"}, {"value", {{"rev", "1-d"}}}, {"doc", {{"_id", "_design/_auth"}, {"_rev", "1-d"}}}});
  s.on("GET", "/_users/_all_docs", answer(200, json{{"total_rows", 4}, {"offset", 0}, {"rows", listing}}.dump()), -1);
  s.on("GET", "/_all_dbs", answer(200, "[]"), -1);
  s.on("GET", "/cg_state/feed%3Ausers", answer(200, R"({"_id":"feed:users","_rev":"1-f","value":"5-u"})"));
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:users","rev":"2-f"}])"), -1);
  // The feed: mal1 as it was and mal2 fixed (provisioned), then mal2 broken again.
  s.on("GET", "/_users/_changes?since=5-u", answer(200, changes_of({no_name, fixed}, "6-u")));
  s.on("PUT", "/" + p.db_for("mal2") + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + p.db_for("mal2") + "/_security", answer(200, R"({"ok":true})"));
  s.on("GET", "/_users/_changes?since=6-u", answer(200, changes_of({broken_again}, "7-u")));

  CHECK(p.reconcile());
  CHECK(p.reconcile());
  CHECK(metric_value(c.metrics, "couchgate_malformed_user_docs_total") == 3);
  p.start();  // a third reconcile, then the feed
  REQUIRE_MESSAGE(s.wait_for([&] { return s.count("GET", "/_users/_changes?since=7-u") == 1; }, 15s), s.requests().size());
  s.close();
  p.stop();
  INFO(log.all());
  CHECK(s.count("GET", "/_users/_all_docs") == 3);
  // mal1, mal2, mal3 once each, and mal2 once more when it was broken again after its fix.
  CHECK(metric_value(c.metrics, "couchgate_malformed_user_docs_total") == 4);
  CHECK(log.count("skipping user document") == 4);
  CHECK(log.count("org.couchdb.user:mal1:") == 1);
  CHECK(log.count("org.couchdb.user:mal2:") == 2);
  CHECK(log.count("org.couchdb.user:mal3:") == 1);
  REQUIRE(p.user("mal2"));
  CHECK(s.unexpected().empty());
  std::lock_guard lk(changed_mu);
  CHECK(changed == std::vector<std::string>{"mal1", "mal2", "mal2"});
}

TEST_CASE_FIXTURE(users_feed, "provisioner _users feed: batches in quick succession store their position once, after their users") {
  const std::vector<std::string> names{"carol", "dave", "erin", "fred"};

  for (std::size_t i = 0; i < names.size(); ++i) {
    s.on("GET", "/_users/_changes?since=" + std::to_string(5 + i) + "-u", answer(200, users_page(names[i], std::to_string(6 + i) + "-u")));
    s.on("PUT", "/" + p.db_for(names[i]) + "?q=1", answer(201, R"({"ok":true})"));
    s.on("PUT", "/" + p.db_for(names[i]) + "/_security", answer(200, R"({"ok":true})"));
  }
  stored_positions stored(s);

  s.park_quiet_feeds();
  p.start();
  // The feed waits on 9-u (no rule answers it) while the position is stored once due.
  const bool reached = s.wait_for([&] { return s.count("GET", "/_users/_changes?since=9-u") == 1; }, 15s);
  REQUIRE(s.wait_for([&] { return stored.last() == "9-u"; }, 5s));
  s.close();
  p.stop();
  REQUIRE(reached);
  // The four pages came at once: their users were provisioned together and their positions
  // stored together: at most two writes (the first may come before the last user is done)
  // where there were four pages, the last one 9-u, stored while the feed waits.
  const auto at = stored.positions();
  const auto secured = stored.secured();
  CHECK(at.size() <= 2);
  CHECK(at.back() == "9-u");
  for (std::size_t i = 0; i < at.size(); ++i) {
    // N-u covers the users before it: N - 5 of them.
    const auto covered = static_cast<std::size_t>(std::stoi(at[i].get<std::string>()) - 5);
    CHECK(secured[i] >= covered);
  }
  for (const auto& n : names) {
    REQUIRE(p.user(n));
    CHECK(p.user(n)->done);
  }
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(users_feed, "provisioner _users feed: a position write the server is slow to answer holds up no user") {
  const std::string carol = p.db_for("carol");
  const std::string dave = p.db_for("dave");
  s.on("GET", "/_users/_changes?since=5-u", answer(200, users_page("carol", "6-u")));
  s.on("PUT", "/" + carol + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + carol + "/_security", answer(200, R"({"ok":true})"));
  // The first position write (6-u, once carol is done) is held like a slow server's answer.
  s.hold("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:users","rev":"2-f"}])"));
  stored_positions stored(s);
  // dave is written once that write is on its way: until then the feed finds nothing new.
  s.on("GET", "/_users/_changes?since=6-u", [&](const r::http_request&) {
    if (s.held() == 0) return answer(200, R"({"results":[],"last_seq":"6-u","pending":0})");
    return answer(200, users_page("dave", "7-u"));
  }, -1);
  s.on("PUT", "/" + dave + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + dave + "/_security", answer(200, R"({"ok":true})"));

  s.park_quiet_feeds();
  p.start();
  // dave is provisioned while the write of carol's position still waits for its answer.
  const bool dave_while_held = s.wait_for([&] { return s.count("PUT", "/" + dave + "/_security") == 1; }, 10s);
  const std::size_t held_then = s.held();
  s.release_held();
  // Then 7-u is written, after the write in flight has ended.
  const bool stored_7 = s.wait_for([&] { return stored.last() == "7-u"; }, 5s);
  s.close();
  p.stop();
  CHECK(dave_while_held);
  CHECK(held_then == 1);
  CHECK(stored_7);
  REQUIRE(p.user("dave"));
  CHECK(p.user("dave")->done);
  CHECK(s.count("POST", "/cg_state/_bulk_docs") == 2);  // 6-u (held), then 7-u: one write at a time
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(users_feed, "provisioner _users feed: a position write answered with an error row is written again, not taken as stored") {
  const std::string carol = p.db_for("carol");
  s.on("GET", "/_users/_changes?since=5-u", answer(200, users_page("carol", "6-u")));
  s.on("PUT", "/" + carol + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + carol + "/_security", answer(200, R"({"ok":true})"));
  // The first write of 6-u: answered 201 with the document's row refused.
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"id":"feed:users","error":"forbidden","reason":"not now"}])"));
  stored_positions stored(s);

  s.park_quiet_feeds();
  p.start();
  // The feed waits on 6-u (nothing moves the position again): 6-u is written a second time.
  const bool again = s.wait_for([&] { return stored.last() == "6-u"; }, 10s);
  s.close();
  p.stop();
  CHECK(again);
  CHECK(s.count("POST", "/cg_state/_bulk_docs") == 2);
  CHECK(s.unexpected().empty());
}

namespace {
struct users_feed_one_at_a_time : users_feed {
  users_feed_one_at_a_time() : users_feed(1) {}
};
}  // namespace

TEST_CASE_FIXTURE(users_feed_one_at_a_time, "provisioner _users feed: no next read while a window's worth of rows waits for the chains in flight") {
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:users","rev":"2-f"}])"), -1);
  const std::vector<std::string> names{"carol", "dave", "erin"};
  json rows = json::array();
  for (const auto& n : names) {
    const std::string id = "org.couchdb.user:" + n;
    rows.push_back({{"seq", "6-u"}, {"id", id}, {"changes", {{{"rev", "1-a"}}}},
                    {"doc", {{"_id", id}, {"_rev", "1-a"}, {"name", n}, {"type", "user"}, {"roles", {"app"}}}}});
  }
  s.on("GET", "/_users/_changes?since=5-u", answer(200, json{{"results", rows}, {"last_seq", "6-u"}, {"pending", 0}}.dump()));
  s.hold("PUT", "/" + p.db_for("carol") + "?q=1", answer(201, R"({"ok":true})"));
  for (const auto& n : names) {
    if (n != "carol") s.on("PUT", "/" + p.db_for(n) + "?q=1", answer(201, R"({"ok":true})"));
    s.on("PUT", "/" + p.db_for(n) + "/_security", answer(200, R"({"ok":true})"));
  }

  s.park_quiet_feeds();
  p.start();
  REQUIRE(s.wait_for([&] { return s.held() == 1; }, 10s));
  // carol's create is in flight, dave and erin wait: the feed is not read on meanwhile (it was
  // decided before carol's create went out, in the same pass).
  CHECK(s.count("GET", "/_users/_changes?since=6-u") == 0);
  s.release_held();
  REQUIRE(s.wait_for([&] { return s.count("GET", "/_users/_changes?since=6-u") == 1; }, 10s));
  s.close();
  p.stop();
  // The next read went out once the last waiting row (erin) had started.
  const auto seq = sequence(s, {"/_users/_changes?since=6-u", p.db_for("erin") + "?q=1"});
  CHECK(seq == std::vector<std::string>{"PUT /" + p.db_for("erin") + "?q=1", "GET /_users/_changes?since=6-u"});
  for (const auto& n : names) {
    REQUIRE(p.user(n));
    CHECK(p.user(n)->done);
  }
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(users_feed_one_at_a_time, "provisioner _users feed: a user the server keeps refusing does not hold up the users behind it") {
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:users","rev":"2-f"}])"), -1);
  json rows = json::array();
  for (const std::string n : {"bad", "good"}) {
    const std::string id = "org.couchdb.user:" + n;
    rows.push_back({{"seq", "6-u"}, {"id", id}, {"changes", {{{"rev", "1-a"}}}},
                    {"doc", {{"_id", id}, {"_rev", "1-a"}, {"name", n}, {"type", "user"}, {"roles", {"app"}}}}});
  }
  s.on("GET", "/_users/_changes?since=5-u", answer(200, json{{"results", rows}, {"last_seq", "6-u"}, {"pending", 0}}.dump()));
  s.on("PUT", "/" + p.db_for("bad") + "?q=1", answer(500, R"({"error":"internal_server_error","reason":"boom"})"), -1);
  s.on("PUT", "/" + p.db_for("good") + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + p.db_for("good") + "/_security", answer(200, R"({"ok":true})"));

  s.park_quiet_feeds();
  p.start();
  // The window holds one user: good is provisioned while bad waits for its retries.
  const bool good_done = s.wait_for([&] { return p.user("good") && p.user("good")->done; }, 10s);
  const bool bad_retried = s.wait_for([&] { return s.count("PUT", "/" + p.db_for("bad") + "?q=1") >= 2; }, 10s);
  s.close();
  p.stop();
  CHECK(good_done);
  CHECK(bad_retried);
  REQUIRE(p.user("bad"));
  CHECK(!p.user("bad")->done);
  // The position stays before bad: 6-u covers it, so it is never stored.
  for (const auto& q : s.requests()) {
    if (q.target == "/cg_state/_bulk_docs") CHECK(json::parse(q.body)["docs"][0]["value"] != "6-u");
  }
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(users_feed, "provisioner _users feed: a user whose creation keeps failing is not retried once a newer revision (its deletion) arrives") {
  const std::string dave = p.db_for("dave");
  const std::string id = "org.couchdb.user:dave";
  const std::string deleted_page =
      json{{"results",
            {{{"seq", "7-u"}, {"id", id}, {"deleted", true}, {"changes", {{{"rev", "2-b"}}}},
              {"doc", {{"_id", id}, {"_rev", "2-b"}, {"_deleted", true}}}}}},
           {"last_seq", "7-u"},
           {"pending", 0}}
          .dump();

  s.on("GET", "/_users/_changes?since=5-u", answer(200, users_page("dave", "6-u")));
  s.on("GET", "/_users/_changes?since=6-u", answer(200, deleted_page));
  // dave's database cannot be made (every attempt fails): the chain would be retried forever.
  s.on("PUT", "/" + dave + "?q=1", answer(500, R"({"error":"internal_server_error","reason":"boom"})"), -1);
  // The deletion (on_delete: keep) takes the owner out of the database's _security: it has none.
  s.on("GET", "/" + dave + "/_security", answer(404, R"({"error":"not_found","reason":"Database does not exist."})"));
  stored_positions stored(s);

  s.park_quiet_feeds();
  p.start();
  // The deletion supersedes the failing creation: the position passes both rows; before, the creation was retried with backoff and held it at 5-u.
  const bool passed = s.wait_for([&] { return stored.last() == "7-u"; }, 10s);
  const auto attempts = s.count("PUT", "/" + dave + "?q=1");
  s.close();
  p.stop();
  CHECK_MESSAGE(passed, "stored: ", stored.last().dump(), ", creation attempts: ", attempts);
  CHECK(attempts >= 1);
  CHECK(attempts <= 3);
  REQUIRE(p.user("dave"));
  CHECK(p.user("dave")->done);
  CHECK(s.count("GET", "/" + dave + "/_security") == 1);
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(users_feed, "provisioner _users feed: a policy reload's reconcile waits for the chains in flight, so the new _security is the last written") {
  const std::string carol = p.db_for("carol");
  const std::string id = "org.couchdb.user:carol";
  auto reloaded = cfg;
  reloaded.security.member_roles = {"support"};
  const json old_want = couchgate::policy::render_security(cfg.security, "carol");
  const json new_want = couchgate::policy::render_security(reloaded.security, "carol");
  REQUIRE(old_want != new_want);

  std::mutex mu;
  json current = json::object();  // carol's _security as the server holds it
  // The first reconcile (at start) found nobody (users_feed); the reload's finds carol and her database.
  s.on("GET", "/_users/_all_docs",
       answer(200, json{{"total_rows", 1}, {"offset", 0},
                        {"rows", {{{"id", id}, {"key", id}, {"value", {{"rev", "1-a"}}},
                                   {"doc", {{"_id", id}, {"_rev", "1-a"}, {"name", "carol"}, {"type", "user"}, {"roles", {"app"}}}}}}}}
                       .dump()));
  s.on("GET", "/_all_dbs", answer(200, json::array({carol}).dump()));
  s.on("GET", "/_users/_changes?since=5-u", answer(200, users_page("carol", "6-u")));
  // carol's creation is answered late (held), after the reload.
  s.hold("PUT", "/" + carol + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + carol + "?q=1", answer(412, R"({"error":"file_exists","reason":"exists"})"), -1);
  s.on("GET", "/" + carol + "/_security", [&](const r::http_request&) {
    std::lock_guard lk(mu);
    return answer(200, current.dump());
  }, -1);
  s.on("PUT", "/" + carol + "/_security", [&](const r::http_request& q) {
    std::lock_guard lk(mu);
    current = json::parse(q.body_text());
    return answer(200, R"({"ok":true})");
  }, -1);
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:users","rev":"2-f"}])"), -1);

  s.park_quiet_feeds();
  p.start();
  REQUIRE(s.wait_for([&] { return s.held() == 1; }, 10s));
  p.update_policy(reloaded);  // while carol's chain (made with the old policy) waits for its create
  s.release_held();
  // The reload's reconcile lists the users again; then carol ends with the new policy.
  const bool reconciled = s.wait_for([&] {
    std::lock_guard lk(mu);
    return s.count("GET", "/_users/_all_docs") == 2 && current == new_want;
  }, 10s);
  REQUIRE(s.wait_for([&] { return p.user("carol") && p.user("carol")->done; }, 5s));
  s.close();
  p.stop();
  {
    std::lock_guard lk(mu);
    CHECK_MESSAGE(reconciled, "carol's _security: ", current.dump());
    CHECK(current == new_want);
  }
  // The reconcile came after the chain's own _security write (with the old policy), not before it.
  const auto seq = sequence(s, {"/_users/_all_docs", "/" + carol + "/_security"});
  std::size_t chain_write = seq.size(), second_listing = seq.size(), listings = 0;
  for (std::size_t i = 0; i < seq.size(); ++i) {
    if (seq[i] == "PUT /" + carol + "/_security" && chain_write == seq.size()) chain_write = i;
    if (seq[i].starts_with("GET /_users/_all_docs") && ++listings == 2) second_listing = i;
  }
  std::string seen;
  for (const auto& x : seq) seen += x + "\n";
  INFO(seen);
  CHECK(chain_write < second_listing);
  CHECK(s.unexpected().empty());
}

TEST_CASE("provisioner: a caller the policy does not select costs no request while CouchDB's roles say the same; given the role, the database is made") {
  scripted_couch c;
  auto& s = c.server;
  couchgate::gateway::provisioning_config cfg;
  cfg.select.roles_any = {"member"};
  couchgate::gateway::provisioner p(c.client, c.state, c.metrics, cfg, {});
  const std::string carol = p.db_for("carol");
  s.on("GET", "/cg_state/feed%3Ausers", answer(200, R"({"_id":"feed:users","_rev":"1-f","value":"5-u"})"));
  s.on("GET", "/_users/_all_docs", answer(200, R"({"total_rows":0,"offset":0,"rows":[]})"));
  s.on("GET", "/_all_dbs", answer(200, "[]"));
  // carol (roles: app) is not selected: her database, if any, loses its owner; she has none.
  s.on("GET", "/_users/_changes?since=5-u", answer(200, users_page("carol", "6-u")));
  s.on("GET", "/" + carol + "/_security", answer(404, R"({"error":"not_found","reason":"Database does not exist."})"));
  s.on("POST", "/cg_state/_bulk_docs", answer(201, R"([{"ok":true,"id":"feed:users","rev":"2-f"}])"), -1);
  s.park_quiet_feeds();
  p.start();
  REQUIRE(s.wait_for([&] { return p.user("carol") && p.user("carol")->done; }, 10s));
  CHECK(p.user("carol")->action == couchgate::policy::user_action::revoke_owner);
  CHECK_FALSE(p.caller_ready("carol"));

  // Her requests through the front door: CouchDB's _session says roles [app], still not selected.
  couchgate::policy::token_user_action decided{};
  for (int i = 0; i < 3; ++i) CHECK(p.ensure_caller({"carol", {"app"}, "cookie"}, decided));
  CHECK(s.count("GET", "/_users/org.couchdb.user") == 0);
  CHECK(s.count("PUT", "/" + carol) == 0);

  // Given the selected role (the feed has not brought that revision yet): read and applied now.
  s.on("GET", "/_users/org.couchdb.user",
       answer(200, json{{"_id", "org.couchdb.user:carol"}, {"_rev", "2-b"}, {"name", "carol"}, {"type", "user"}, {"roles", {"app", "member"}}}.dump()));
  s.on("PUT", "/" + carol + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + carol + "/_security", answer(200, R"({"ok":true})"));
  CHECK(p.ensure_caller({"carol", {"app", "member"}, "cookie"}, decided));
  CHECK(s.count("GET", "/_users/org.couchdb.user") == 1);
  CHECK(s.count("PUT", "/" + carol + "/_security") == 1);
  CHECK(p.caller_ready("carol"));
  s.close();
  p.stop();
  CHECK(s.unexpected().empty());
}

TEST_CASE("provisioner reconcile: a listed database's _security is read first, no create asked; one gone since is made again") {
  scripted_couch c;
  auto& s = c.server;
  couchgate::gateway::provisioning_config cfg;
  couchgate::gateway::provisioner p(c.client, c.state, c.metrics, cfg, {});
  const auto want = [&](const std::string& name) { return couchgate::policy::render_security(cfg.security, name).dump(); };
  json listing = json::array();
  for (const std::string name : {"ann", "bob", "cy", "dee"}) {
    const json d = user_doc_of(name, json::object());
    listing.push_back({{"id", d["_id"]}, {"key", d["_id"]}, {"value", {{"rev", d["_rev"]}}}, {"doc", d}});
  }
  s.on("GET", "/_users/_all_docs", answer(200, json{{"total_rows", 4}, {"offset", 0}, {"rows", listing}}.dump()));
  // ann's and bob's databases are listed, and cy's (deleted before its _security is read); dee's is not.
  s.on("GET", "/_all_dbs", answer(200, json::array({p.db_for("ann"), p.db_for("bob"), p.db_for("cy")}).dump()));
  s.on("GET", "/" + p.db_for("ann") + "/_security", answer(200, want("ann")));
  s.on("GET", "/" + p.db_for("bob") + "/_security", answer(200, R"({"members":{"names":["someone"]}})"));
  s.on("PUT", "/" + p.db_for("bob") + "/_security", answer(200, R"({"ok":true})"));
  s.on("GET", "/" + p.db_for("cy") + "/_security", answer(404, R"({"error":"not_found","reason":"Database does not exist."})"));
  s.on("PUT", "/" + p.db_for("cy") + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + p.db_for("cy") + "/_security", answer(200, R"({"ok":true})"));
  s.on("PUT", "/" + p.db_for("dee") + "?q=1", answer(201, R"({"ok":true})"));
  s.on("PUT", "/" + p.db_for("dee") + "/_security", answer(200, R"({"ok":true})"));

  CHECK(p.reconcile());
  CHECK(s.unexpected().empty());
  CHECK(s.pending() == 0);  // every scripted answer was asked for
  CHECK(s.count("PUT", "/" + p.db_for("ann") + "?") == 0);
  CHECK(s.count("PUT", "/" + p.db_for("bob") + "?") == 0);
  for (const std::string name : {"ann", "bob", "cy", "dee"}) {
    CAPTURE(name);
    REQUIRE(p.user(name));
    CHECK(p.user(name)->done);
  }
  CHECK(metric_value(c.metrics, "couchgate_security_writes_total") == 3);  // bob repaired; cy and dee made
}
