// Identities against the real server: unique names and e-mail addresses under a race, and the
// reconciler's repair of every crash point (the steps are replayed here up to each point, as a
// crashed sign-up would have left them; the daemon-level kill -9 test is in test_signup.cpp).
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "gateway/identities.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/transport/http_pool.hpp"
#include "replicator/metrics.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/metric_value.hpp"

using namespace couchgate::test;
namespace g = couchgate::gateway;
namespace r = couchgate::replicator;
using namespace std::chrono_literals;

namespace {

struct fixture {
  r::http_pool pool;
  r::couch_client client{pool, r::timeouts{}};
  r::registry metrics;
  g::identities_config cfg;
  std::chrono::system_clock::time_point clock_now = std::chrono::system_clock::now();
  std::unique_ptr<g::identities> ids;

  // url: the server, or a fault proxy in front of it; user_ready: what the sign-up asks while it
  // waits for provisioning (called once at least, between the user's creation and done).
  explicit fixture(const std::string& stem, const std::string& url = env().url,
                   std::function<bool(const std::string&)> user_ready = nullptr)
      : pool(r::http_pool::options{url, env().user, env().password, 8, "couchgate-test"}) {
    cfg.enabled = true;
    cfg.db = unique(stem);
    cfg.provision_wait = 0s;
    cfg.profile_fields = {"display_name"};
    ids = std::make_unique<g::identities>(client, metrics, cfg, "_users", std::move(user_ready),
                                          [this] { return clock_now; });
    REQUIRE_FALSE(ids->ensure_db().has_value());
    REQUIRE_FALSE(ids->rekey_names().has_value());  // what start() does first
  }
  ~fixture() { couch().del("/" + enc(cfg.db)); }

  reply reservation(const std::string& id) const { return couch().get("/" + enc(cfg.db) + "/" + enc(id)); }
  // An intent's "created"/"updated" stamp (milliseconds since the epoch) `ago` before clock_now.
  std::string stamp(std::chrono::system_clock::duration ago = {}) const {
    return std::to_string(
        std::chrono::duration_cast<std::chrono::milliseconds>((clock_now - ago).time_since_epoch()).count());
  }
  // Every reservation in the database: id -> user.
  std::map<std::string, std::string> reservations() const {
    std::map<std::string, std::string> out;
    auto all = couch().get("/" + enc(cfg.db) + "/_all_docs?include_docs=true");
    REQUIRE(all.status == 200);
    for (const auto& row : all.body["rows"]) {
      const auto& doc = row["doc"];
      if (doc.value("type", "") == "reservation") out[doc["_id"]] = doc.value("user", "");
    }
    return out;
  }
};

json signup_body(const std::string& name, const std::string& email) {
  return json{{"name", name}, {"password", signup_password()}, {"email", email}};
}

}  // namespace

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

TEST_CASE("sign-up: creates the user with reservations; a taken name or address is a 409 naming it") {
  fixture f("ids-basic");
  const std::string name = unique("ann");
  const std::string email = unique("ann") + "@Example.org";
  json body = signup_body(name, "  " + email + " ");
  body["display_name"] = "Ann";
  auto a = f.ids->signup(body);
  REQUIRE_MESSAGE(a.status == 201, a.body.dump());
  CHECK(a.body["name"] == name);

  // The _users document: CouchDB hashed the password, the profile field and the address are there.
  auto user = couch().get("/_users/" + enc("org.couchdb.user:" + name));
  REQUIRE(user.status == 200);
  CHECK(user.body.value("email", "") == lower(email));
  CHECK(user.body.value("display_name", "") == "Ann");
  CHECK_FALSE(user.body.contains("password"));
  CHECK(couch(name, signup_password()).get("/_session").body["userCtx"]["name"] == name);
  CHECK(f.reservation("name/" + name).body.value("user", "") == name);
  CHECK(f.reservation("email/" + lower(email)).body.value("user", "") == name);

  // The same name in another case, and the same address: both named, nothing left behind.
  std::string upper_name = name;
  upper_name[0] = 'A';
  const auto before = f.reservations();
  auto b = f.ids->signup(signup_body(upper_name, lower(email)));
  CHECK(b.status == 409);
  CHECK(b.body["fields"] == json::array({"name", "email"}));
  CHECK(f.reservations() == before);
  CHECK(couch().get("/_users/" + enc("org.couchdb.user:" + upper_name)).status == 404);

  // Only the address taken: a new name is not kept reserved.
  const std::string other = unique("bob");
  auto c = f.ids->signup(signup_body(other, email));
  CHECK(c.status == 409);
  CHECK(c.body["fields"] == json::array({"email"}));
  CHECK(f.reservation("name/" + other).status == 404);

  // Availability.
  auto av = f.ids->available(upper_name, unique("free") + "@example.org");
  REQUIRE(av.status == 200);
  CHECK(av.body["name"]["available"] == false);
  CHECK(av.body["email"]["available"] == true);
  CHECK(f.ids->available("_bad", "").body["name"]["valid"] == false);

  // The name in full-width letters (U+FF41 ...: it looks the same) and the address with a
  // full-width '@' are the same name and address: both taken.
  std::string wide;
  for (const char ch : name) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte >= 'a' && byte <= 'z') {
      const unsigned cp = 0xFF41 + (byte - 'a');  // three UTF-8 bytes: EF BD 81..9A
      wide += static_cast<char>(0xE0 | (cp >> 12));
      wide += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      wide += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      wide += ch;
    }
  }
  REQUIRE(wide != name);
  std::string wide_at = lower(email);
  wide_at.replace(wide_at.find('@'), 1, "\xEF\xBC\xA0");  // U+FF20 FULLWIDTH COMMERCIAL AT
  auto w = f.ids->signup(signup_body(wide, wide_at));
  CHECK(w.status == 409);
  CHECK(w.body["fields"] == json::array({"name", "email"}));
  CHECK(f.ids->available(wide, "").body["name"]["available"] == false);

  couch().del("/_users/" + enc("org.couchdb.user:" + name) + "?rev=" + user.body["_rev"].get<std::string>());
}

TEST_CASE("sign-up: invalid input is a 400 naming every field, never echoing the password") {
  fixture f("ids-invalid");
  auto a = f.ids->signup(json{{"name", "a:b"}, {"password", "pw1"}, {"email", "nope"}, {"admin", true}});
  CHECK(a.status == 400);
  CHECK(a.body["problems"].contains("name"));
  CHECK(a.body["problems"].contains("password"));
  CHECK(a.body["problems"].contains("email"));
  CHECK(a.body["problems"].contains("admin"));  // not an allowed profile field
  CHECK(a.body.dump().find("pw1") == std::string::npos);
  CHECK(f.ids->signup(json::array()).status == 400);
  CHECK(f.ids->signup(json{{"name", 7}, {"password", "x"}, {"email", nullptr}}).status == 400);
  CHECK(f.reservations().empty());
}

TEST_CASE("sign-up race: 200 concurrent sign-ups for 50 names and 50 addresses, one winner each") {
  fixture f("ids-race");
  const std::string stem = unique("race");
  std::vector<std::string> names, emails;
  for (int i = 0; i < 50; ++i) {
    names.push_back(stem + "-n" + std::to_string(i));
    emails.push_back(stem + "-e" + std::to_string(i) + "@example.org");
  }
  // Attempt k wants name k % 50 and address (k * 7 + k / 50) % 50: every name and every address
  // is wanted by four attempts, in different pairs.
  std::mutex mu;
  std::vector<std::pair<int, g::identity_answer>> answers;
  std::atomic<int> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      for (int k; (k = next.fetch_add(1)) < 200;) {
        auto a = f.ids->signup(signup_body(names[k % 50], emails[(k * 7 + k / 50) % 50]));
        std::lock_guard lk(mu);
        answers.emplace_back(k, std::move(a));
      }
    });
  }
  for (auto& t : threads) t.join();

  std::map<std::string, std::string> name_winner, email_winner;  // value -> winning user
  int won = 0;
  for (const auto& [k, a] : answers) {
    const auto& name = names[k % 50];
    const auto& email = emails[(k * 7 + k / 50) % 50];
    if (a.status == 201) {
      ++won;
      CHECK_MESSAGE(name_winner.emplace(name, name).second, "two winners for " << name);
      CHECK_MESSAGE(email_winner.emplace(email, name).second, "two winners for " << email);
    } else {
      REQUIRE_MESSAGE(a.status == 409, a.body.dump());
      CHECK_FALSE(a.body["fields"].empty());
    }
  }
  CHECK(won > 0);
  // Every winner has its _users document (with its address) and both reservations; nothing else
  // is reserved.
  std::map<std::string, std::string> want;
  for (const auto& [email, user] : email_winner) {
    auto u = couch().get("/_users/" + enc("org.couchdb.user:" + user));
    REQUIRE(u.status == 200);
    CHECK(u.body.value("email", "") == email);
    want["name/" + user] = user;
    want["email/" + email] = user;
  }
  CHECK(f.reservations() == want);
  // No loser's _users document exists.
  for (const auto& n : names) {
    if (!name_winner.count(n)) CHECK(couch().get("/_users/" + enc("org.couchdb.user:" + n)).status == 404);
  }
  for (const auto& [n, _] : name_winner) {
    auto u = couch().get("/_users/" + enc("org.couchdb.user:" + n));
    couch().del("/_users/" + enc("org.couchdb.user:" + n) + "?rev=" + u.body["_rev"].get<std::string>());
  }
}

TEST_CASE("reconciler: every state a crashed sign-up can leave is finished or rolled back") {
  fixture f("ids-repair");
  couch c;
  const std::string db = "/" + enc(f.cfg.db);
  const auto old = f.stamp(1h);
  struct crash {
    std::string state;
    bool reserved_name, reserved_email, user;
    bool expect_user;  // after the repair
  };
  // The points between each pair of steps: after the intent; after one or both reservations;
  // after moving to reserved; after the user; half-way through a rollback.
  const std::vector<crash> crashes{
      {"pending", false, false, false, false},  {"pending", true, false, false, false},
      {"pending", true, true, false, false},    {"reserved", true, true, false, false},
      {"reserved", true, true, true, true},     {"rolling_back", true, false, false, false},
      {"rolling_back", false, true, true, false}, {"rolled_back", false, false, true, false},
  };
  std::vector<std::tuple<std::string, std::string, crash>> made;
  for (std::size_t i = 0; i < crashes.size(); ++i) {
    const auto& k = crashes[i];
    const std::string name = unique("crash" + std::to_string(i));
    const std::string email = name + "@example.org";
    const std::string intent = "signup/" + unique("intent");
    REQUIRE(c.put(db + "/" + enc(intent), json{{"type", "signup"}, {"state", k.state}, {"name", name},
                                                {"name_key", name}, {"email", email}, {"created", old},
                                                {"updated", old}}).status == 201);
    auto res = [&](const std::string& id) {
      REQUIRE(c.put(db + "/" + enc(id), json{{"type", "reservation"}, {"user", name}, {"intent", intent}}).status == 201);
    };
    if (k.reserved_name) res("name/" + name);
    if (k.reserved_email) res("email/" + email);
    if (k.user) {
      REQUIRE(c.put("/_users/" + enc("org.couchdb.user:" + name),
                    json{{"name", name}, {"type", "user"}, {"roles", json::array()}, {"password", signup_password()},
                         {"email", email}, {"couchgate_intent", intent}}).status == 201);
    }
    made.emplace_back(name, intent, k);
  }
  // A young pending intent (a sign-up still running) is left alone.
  const std::string young = "signup/" + unique("young");
  const auto now_ms = f.stamp();
  REQUIRE(c.put(db + "/" + enc(young), json{{"type", "signup"}, {"state", "pending"}, {"name", "young"},
                                            {"name_key", "young"}, {"email", "y@example.org"},
                                            {"updated", now_ms}}).status == 201);
  REQUIRE(c.put(db + "/" + enc("name/young"), json{{"type", "reservation"}, {"user", "young"}, {"intent", young}}).status == 201);

  auto rep = f.ids->reconcile();
  CHECK(rep.failed == 0);
  CHECK(rep.seen == crashes.size() + 1);
  for (const auto& [name, intent, k] : made) {
    INFO(k.state, " name:", k.reserved_name, " email:", k.reserved_email, " user:", k.user);
    const bool user = c.get("/_users/" + enc("org.couchdb.user:" + name)).status == 200;
    CHECK(user == k.expect_user);
    // A user has both reservations; no user, none.
    CHECK((f.reservation("name/" + name).status == 200) == user);
    CHECK((f.reservation("email/" + name + "@example.org").status == 200) == user);
    CHECK(f.reservation(intent).body.value("state", "") == (user ? "done" : "rolled_back"));
    if (user) {
      auto u = c.get("/_users/" + enc("org.couchdb.user:" + name));
      c.del("/_users/" + enc("org.couchdb.user:" + name) + "?rev=" + u.body["_rev"].get<std::string>());
    }
  }
  CHECK(f.reservation(young).body.value("state", "") == "pending");
  CHECK(f.reservation("name/young").status == 200);
  // A second pass changes nothing; after the retention the finished intents are forgotten.
  CHECK(f.ids->reconcile().failed == 0);
  f.clock_now += 25h;
  auto later = f.ids->reconcile();
  CHECK(later.forgotten == crashes.size());
}

namespace {
// The live revisions of a document (GET ?open_revs=all, deleted ones left out): rev -> state.
std::map<std::string, std::string> live_states(const std::string& db, const std::string& id) {
  std::map<std::string, std::string> out;
  auto r = couch().get("/" + enc(db) + "/" + enc(id) + "?open_revs=all");
  REQUIRE(r.status == 200);
  REQUIRE(r.body.is_array());
  for (const auto& e : r.body) {
    if (!e.contains("ok") || e["ok"].value("_deleted", false)) continue;
    out[e["ok"]["_rev"].get<std::string>()] = e["ok"].value("state", "");
  }
  return out;
}

// One live revision of a forked intent: its state, "updated" stamp and history (newest first).
struct fork_leaf {
  const char* state;
  std::string updated;
  std::vector<std::string> ids;
};
// Posts an intent forked as replication leaves it (`_bulk_docs` with `new_edits: false`, each
// leaf with its history), `base` giving its id and fields.
void post_fork(const std::string& db, const json& base, const std::vector<fork_leaf>& leaves) {
  json docs = json::array();
  for (const auto& l : leaves) {
    json d = base;
    d["state"] = l.state;
    d["updated"] = l.updated;
    d["_rev"] = std::to_string(l.ids.size()) + "-" + l.ids.front();
    d["_revisions"] = json{{"start", l.ids.size()}, {"ids", l.ids}};
    docs.push_back(d);
  }
  auto put = couch().post(db + "/_bulk_docs", json{{"docs", docs}, {"new_edits", false}});
  REQUIRE_MESSAGE(put.status == 201, put.raw);
}
}  // namespace

// On a cluster, an intent moved through two nodes that did not see each other (each move
// answered 202) has two live revisions once the copies meet. The fork is made here as
// replication would leave it: `_bulk_docs` with `new_edits: false` and each branch's history.
TEST_CASE("reconciler: a forked intent keeps done while its user stands, whichever revision CouchDB shows") {
  fixture f("ids-fork");
  couch c;
  const std::string db = "/" + enc(f.cfg.db);
  const auto old = f.stamp(1h);
  struct fork_case {
    const char* what;
    bool user;                  // the user exists and carries the intent
    const char* young_state;    // the shorter branch's state
    bool young;                 // its leaf is younger than intent_timeout
    std::string expect_state;   // the one live revision left ("" = both kept)
  };
  const std::vector<fork_case> cases{
      {"done beside a rollback, the user stands", true, "done", false, "done"},
      {"done beside a rollback, no user", false, "done", false, "rolled_back"},
      {"old reserved beside a rollback, the user stands", true, "reserved", false, "reserved→done"},
      {"young reserved beside a rollback", false, "reserved", true, ""},
  };
  struct made_fork {
    fork_case k;
    std::string name, email, intent;
  };
  std::vector<made_fork> made;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& k = cases[i];
    const std::string name = unique("fork" + std::to_string(i));
    const std::string email = name + "@example.org";
    const std::string intent = "signup/" + unique("intent");
    const json base{{"_id", intent}, {"type", "signup"}, {"name", name}, {"name_key", name}, {"email", email},
                    {"created", old}};
    // 1-p pending → 2-r reserved, then 3-d (the sign-up's done) beside 3-b rolling_back → 4-c
    // rolled_back: CouchDB shows 4-c, the longer branch. A reserved leaf is 2-r itself, the
    // rollback's branch going on from 1-p instead.
    const std::string stamp = k.young ? f.stamp() : old;
    if (std::string(k.young_state) == "reserved") {
      post_fork(db, base, {{k.young_state, stamp, {"r", "p"}}, {"rolled_back", old, {"c", "b", "a", "p"}}});
    } else {
      post_fork(db, base, {{k.young_state, stamp, {"d", "r", "p"}}, {"rolled_back", old, {"c", "b", "r", "p"}}});
    }
    REQUIRE(live_states(f.cfg.db, intent).size() == 2);
    REQUIRE(c.get(db + "/" + enc(intent)).body.value("state", "") == "rolled_back");  // CouchDB's pick
    if (k.user) {
      REQUIRE(c.put("/_users/" + enc("org.couchdb.user:" + name),
                    json{{"name", name}, {"type", "user"}, {"roles", json::array()}, {"password", signup_password()},
                         {"email", email}, {"couchgate_intent", intent}}).status == 201);
    }
    made.push_back({k, name, email, intent});
  }

  auto rep = f.ids->reconcile();
  CHECK(rep.failed == 0);
  CHECK(rep.seen == cases.size());
  for (const auto& m : made) {
    INFO(m.k.what);
    const auto live = live_states(f.cfg.db, m.intent);
    const bool user = c.get("/_users/" + enc("org.couchdb.user:" + m.name)).status == 200;
    CHECK(user == m.k.user);  // a user answered 201 is never deleted
    if (m.k.expect_state.empty()) {
      CHECK(live.size() == 2);  // a sign-up may still be running: nothing decided
      continue;
    }
    REQUIRE(live.size() == 1);
    const std::string want = m.k.expect_state == "reserved→done" ? "done" : m.k.expect_state;
    CHECK(live.begin()->second == want);
    CHECK_FALSE(c.get(db + "/" + enc(m.intent) + "?conflicts=true").body.contains("_conflicts"));
    // The user's reservations name the intent; without a user there are none.
    for (const std::string& res : {"name/" + m.name, "email/" + m.email}) {
      auto r = f.reservation(res);
      CHECK((r.status == 200) == m.k.user);
      if (m.k.user) CHECK(r.body.value("intent", "") == m.intent);
    }
  }
  CHECK(metric_value(f.metrics, "couchgate_identity_intent_forks_total") == 3.0);
  // Settled: a second pass finds no fork. After the retention the young fork is old and decided
  // too (no user: the rollback), every intent is forgotten, and the users made by them stay.
  CHECK(f.ids->reconcile().failed == 0);
  CHECK(metric_value(f.metrics, "couchgate_identity_intent_forks_total") == 3.0);
  f.clock_now += 25h;
  const auto later = f.ids->reconcile();
  CHECK(later.failed == 0);
  CHECK(later.forgotten == cases.size());
  CHECK(metric_value(f.metrics, "couchgate_identity_intent_forks_total") == 4.0);
  for (const auto& m : made) {
    INFO(m.k.what);
    CHECK((c.get("/_users/" + enc("org.couchdb.user:" + m.name)).status == 200) == m.k.user);
    CHECK(f.reservation(m.intent).status == 404);
    if (m.k.user) delete_user(m.name);
  }
}

TEST_CASE("reconciler: a forked address change keeps done and claims its new address again; a sign-up fork counts a user an address change marked since as its own") {
  fixture f("ids-fork2");
  couch c;
  const std::string db = "/" + enc(f.cfg.db);
  const auto old = f.stamp(1h);
  // An address change whose done met a rollback that released the new address: the user has it.
  const std::string u = unique("moved"), change = "change/" + unique("intent");
  const std::string old_email = u + "@old.example.org", new_email = u + "@new.example.org";
  REQUIRE(c.put(db + "/" + enc("email/" + old_email), json{{"type", "reservation"}, {"user", u}}).status == 201);
  REQUIRE(c.put(db + "/" + enc("name/" + u), json{{"type", "reservation"}, {"user", u}, {"email", old_email}}).status == 201);
  post_fork(db, json{{"_id", change}, {"type", "change"}, {"name", u}, {"email", new_email}, {"old_email", old_email}},
            {{"done", old, {"d", "r", "p"}}, {"rolled_back", old, {"c", "b", "r", "p"}}});
  REQUIRE(c.put("/_users/" + enc("org.couchdb.user:" + u),
                json{{"name", u}, {"type", "user"}, {"roles", json::array()}, {"password", signup_password()},
                     {"email", new_email}, {"couchgate_intent", change}}).status == 201);
  // A sign-up whose done met a rollback, its user since given another address through couchgate.
  const std::string v = unique("signed"), signup = "signup/" + unique("intent");
  const std::string v_email = v + "@example.org", v_now = v + "@now.example.org";
  post_fork(db, json{{"_id", signup}, {"type", "signup"}, {"name", v}, {"name_key", v}, {"email", v_email}},
            {{"done", old, {"d", "r", "p"}}, {"rolled_back", old, {"c", "b", "r", "p"}}});
  REQUIRE(c.put("/_users/" + enc("org.couchdb.user:" + v),
                json{{"name", v}, {"type", "user"}, {"roles", json::array()}, {"password", signup_password()},
                     {"email", v_now}, {"couchgate_intent", "change/" + unique("later")},
                     {"couchgate_signup", signup}}).status == 201);

  auto rep = f.ids->reconcile();
  CHECK(rep.failed == 0);
  CHECK(metric_value(f.metrics, "couchgate_identity_intent_forks_total") == 2.0);
  for (const auto& id : {change, signup}) {
    INFO(id);
    const auto live = live_states(f.cfg.db, id);
    REQUIRE(live.size() == 1);
    CHECK(live.begin()->second == "done");
  }
  // The change: its new address claimed again, the old one released, the name records the new one.
  CHECK(f.reservation("email/" + new_email).body.value("user", "") == u);
  CHECK(f.reservation("email/" + new_email).body.value("intent", "") == change);
  CHECK(f.reservation("email/" + old_email).status == 404);
  CHECK(f.reservation("name/" + u).body.value("email", "") == new_email);
  // The sign-up: its user stays, its name claimed again recording the address the user has now;
  // the sign-up's own address, changed since, is not claimed (the change holds the new one).
  CHECK(c.get("/_users/" + enc("org.couchdb.user:" + v)).status == 200);
  CHECK(f.reservation("name/" + v).body.value("intent", "") == signup);
  CHECK(f.reservation("name/" + v).body.value("email", "") == v_now);
  CHECK(f.reservation("email/" + v_email).status == 404);
  delete_user(u);
  delete_user(v);
}

// A sign-up's move to done answered 202 (the proxy rewrites the 201, as a cluster answers a write
// fewer copies than its quorum stored) while a rollback written through another node stands
// beside it (made with new_edits: false between the user's creation and the move). The sign-up
// reads the intent's revisions: with its user standing, its done stays, the rollback goes and the
// reservations it released are claimed again; with the user gone (the rollback's release deleted
// it), the rollback stands, the done is withdrawn and the sign-up answers 503.
TEST_CASE("reconciler: an address change rolled back puts the old address back and the user names its sign-up again") {
  fixture f("ids-chgback");
  couch c;
  const std::string db = "/" + enc(f.cfg.db);
  const auto old = f.stamp(1h);
  const std::string u = unique("back"), change = "change/" + unique("intent"), signup = "signup/" + unique("intent");
  const std::string old_email = u + "@old.example.org", new_email = u + "@new.example.org";
  REQUIRE(c.put(db + "/" + enc(change), json{{"type", "change"}, {"state", "rolling_back"}, {"name", u},
                                             {"email", new_email}, {"old_email", old_email}, {"created", old},
                                             {"updated", old}}).status == 201);
  REQUIRE(c.put(db + "/" + enc("email/" + new_email), json{{"type", "reservation"}, {"user", u}, {"intent", change}}).status == 201);
  REQUIRE(c.put("/_users/" + enc("org.couchdb.user:" + u),
                json{{"name", u}, {"type", "user"}, {"roles", json::array()}, {"password", signup_password()},
                     {"email", new_email}, {"couchgate_intent", change}, {"couchgate_signup", signup}}).status == 201);
  auto rep = f.ids->reconcile();
  CHECK(rep.failed == 0);
  CHECK(rep.rolled_back == 1);
  const auto user = c.get("/_users/" + enc("org.couchdb.user:" + u));
  CHECK(user.body.value("email", "") == old_email);
  CHECK(user.body.value("couchgate_intent", "") == signup);
  CHECK_FALSE(user.body.contains("couchgate_signup"));
  CHECK(f.reservation("email/" + new_email).status == 404);
  CHECK(f.reservation(change).body.value("state", "") == "rolled_back");
  delete_user(u);
}

TEST_CASE("sign-up: a done answered 202 beside a rollback from another node keeps the user it created, or yields") {
  for (const bool user_deleted_by_rollback : {false, true}) {
    INFO("the rollback deleted the user: " << user_deleted_by_rollback);
    fault_proxy proxy;
    couch c;
    std::string db;  // set once the fixture named it
    const std::string name = unique("late");
    const std::string email = name + "@example.org";
    int forked = 0;
    // Called once the user is created, before the move to done.
    auto user_ready = [&](const std::string& who) {
      if (who != name || forked++ > 0) return false;
      auto all = c.get(db + "/_all_docs?include_docs=true");
      json intent;
      for (const auto& row : all.body["rows"]) {
        if (row["doc"].value("type", "") == "signup") intent = row["doc"];
      }
      REQUIRE(intent.value("state", "") == "reserved");
      const auto revs = c.get(db + "/" + enc(intent["_id"].get<std::string>()) + "?revs=true");
      const std::string first = revs.body["_revisions"]["ids"].back().get<std::string>();
      // Another node's reconciler: 1 → rolling_back → rolled_back, its release done.
      json rb = intent;
      rb["state"] = "rolled_back";
      rb["_rev"] = "3-ffffffffffffffffffffffffffffffff";
      rb["_revisions"] = json{{"start", 3}, {"ids", {"ffffffffffffffffffffffffffffffff", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", first}}};
      REQUIRE(c.post(db + "/_bulk_docs", json{{"docs", {rb}}, {"new_edits", false}}).status == 201);
      for (const std::string& res : {std::string("name/") + name, "email/" + email}) {
        auto got = c.get(db + "/" + enc(res));
        REQUIRE(got.status == 200);
        REQUIRE(c.del(db + "/" + enc(res) + "?rev=" + got.body["_rev"].get<std::string>()).status == 200);
      }
      if (user_deleted_by_rollback) REQUIRE(delete_user(name).status == 200);
      proxy.rewrite_status(1, "PUT", "signup%2F", 201, 202);  // the move to done
      return false;
    };
    fixture f("ids-202", proxy.url(), user_ready);
    db = "/" + enc(f.cfg.db);
    auto a = f.ids->signup(json{{"name", name}, {"password", signup_password()}, {"email", email}});
    CHECK(forked == 1);
    CHECK(proxy.rewritten() == 1);
    CHECK(metric_value(f.metrics, "couchgate_identity_intent_moves_unconfirmed_total") == 1.0);
    CHECK(metric_value(f.metrics, "couchgate_identity_intent_forks_total") == 1.0);
    json intent_id;
    const auto listing = c.get(db + "/_all_docs");
    for (const auto& row : listing.body["rows"]) {
      if (row["id"].get<std::string>().rfind("signup/", 0) == 0) intent_id = row["id"];
    }
    REQUIRE(intent_id.is_string());
    const auto live = live_states(f.cfg.db, intent_id.get<std::string>());
    REQUIRE(live.size() == 1);
    if (!user_deleted_by_rollback) {
      CHECK_MESSAGE(a.status == 201, a.body.dump());
      CHECK(live.begin()->second == "done");
      CHECK(c.get("/_users/" + enc("org.couchdb.user:" + name)).status == 200);
      for (const std::string& res : {std::string("name/") + name, "email/" + email}) {
        CHECK(f.reservation(res).body.value("intent", "") == intent_id.get<std::string>());
      }
      delete_user(name);
    } else {
      CHECK(a.status == 503);
      CHECK(live.begin()->second == "rolled_back");
      // Nothing claimed again for a rollback that stands, no user made again.
      CHECK(c.get("/_users/" + enc("org.couchdb.user:" + name)).status == 404);
      CHECK(f.reservation("name/" + name).status == 404);
      CHECK(f.reservation("email/" + email).status == 404);
    }
  }
}

// The reconciler's own move to rolled_back answered 202, while a done written through another
// node and the user it made come in (both added while the reconciler reads the revisions, held
// by the proxy): its rollback gives way, and the reservations it had just released are claimed
// again before its revision goes.
TEST_CASE("reconciler: its rollback answered 202 beside a done from another node gives way; the reservations are claimed again") {
  fault_proxy proxy;
  fixture f("ids-202r", proxy.url());
  couch c;
  const std::string db = "/" + enc(f.cfg.db);
  const std::string name = unique("slow");
  const std::string email = name + "@example.org";
  const std::string intent = "signup/" + unique("intent");
  const auto old = f.stamp(1h);
  auto made = c.put(db + "/" + enc(intent), json{{"type", "signup"}, {"state", "rolling_back"}, {"name", name},
                                                 {"name_key", name}, {"email", email}, {"created", old},
                                                 {"updated", old}});
  REQUIRE(made.status == 201);
  const std::string first = made.body["rev"].get<std::string>();
  for (const std::string& res : {std::string("name/") + name, "email/" + email}) {
    REQUIRE(c.put(db + "/" + enc(res), json{{"type", "reservation"}, {"user", name}, {"intent", intent}}).status == 201);
  }
  proxy.rewrite_status(1, "PUT", "signup%2F", 201, 202);
  proxy.hold("open_revs=all");
  g::identities::reconcile_report rep;
  std::thread pass([&] { rep = f.ids->reconcile(); });
  const bool held = eventually([&] { return proxy.held() == 1; }, 20s);
  if (held) {
    // The other node's done (from the intent's first revision) and the user it made.
    json done{{"_id", intent}, {"type", "signup"}, {"state", "done"}, {"name", name}, {"name_key", name},
              {"email", email}, {"created", old}, {"updated", old}, {"_rev", "2-dddddddddddddddddddddddddddddddd"},
              {"_revisions", {{"start", 2}, {"ids", {"dddddddddddddddddddddddddddddddd", first.substr(first.find('-') + 1)}}}}};
    CHECK(c.post(db + "/_bulk_docs", json{{"docs", {done}}, {"new_edits", false}}).status == 201);
    CHECK(c.put("/_users/" + enc("org.couchdb.user:" + name),
                json{{"name", name}, {"type", "user"}, {"roles", json::array()}, {"password", signup_password()},
                     {"email", email}, {"couchgate_intent", intent}}).status == 201);
  }
  proxy.hold({});
  pass.join();
  REQUIRE(held);
  CHECK(proxy.rewritten() == 1);
  CHECK(rep.failed == 1);  // its move lost: this pass did not finish the intent
  const auto live = live_states(f.cfg.db, intent);
  REQUIRE(live.size() == 1);
  CHECK(live.begin()->second == "done");
  for (const std::string& res : {std::string("name/") + name, "email/" + email}) {
    CHECK(f.reservation(res).body.value("intent", "") == intent);
  }
  CHECK(metric_value(f.metrics, "couchgate_identity_intent_forks_total") == 1.0);
  // The next pass finds a done intent whose user stands: nothing to do.
  CHECK(f.ids->reconcile().failed == 0);
  CHECK(c.get("/_users/" + enc("org.couchdb.user:" + name)).status == 200);
  delete_user(name);
}

TEST_CASE("a reservation left by a rolled-back or vanished intent is taken by a new sign-up; one whose user exists is not") {
  fixture f("ids-stale");
  couch c;
  const std::string db = "/" + enc(f.cfg.db);
  // A reservation whose PUT landed after its sign-up was rolled back (a slow answer): the intent
  // says rolled_back, no user of that name exists, and nothing else would ever release it.
  const std::string late = unique("late");
  const std::string late_intent = "signup/" + unique("intent");
  REQUIRE(c.put(db + "/" + enc(late_intent), json{{"type", "signup"}, {"state", "rolled_back"}, {"name", late},
                                                   {"name_key", late}, {"email", late + "@example.org"}}).status == 201);
  for (const auto& id : {"name/" + late, "email/" + late + "@example.org"}) {
    REQUIRE(c.put(db + "/" + enc(id), json{{"type", "reservation"}, {"user", late}, {"intent", late_intent}}).status == 201);
  }
  auto a = f.ids->signup(signup_body(late, late + "@example.org"));
  CHECK_MESSAGE(a.status == 201, a.body.dump());
  CHECK(f.reservation("name/" + late).body.value("intent", "") != late_intent);
  CHECK(f.reservation("email/" + late + "@example.org").body.value("user", "") == late);

  // Its intent gone altogether (forgotten), no user: stale too.
  const std::string gone = unique("gone");
  REQUIRE(c.put(db + "/" + enc("name/" + gone), json{{"type", "reservation"}, {"user", gone},
                                                     {"intent", "signup/" + unique("never")}}).status == 201);
  auto b = f.ids->signup(signup_body(gone, gone + "@example.org"));
  CHECK_MESSAGE(b.status == 201, b.body.dump());

  // A rolled-back intent's reservation whose user exists (made since, without couchgate): held.
  const std::string held = unique("held");
  const std::string held_intent = "signup/" + unique("intent");
  REQUIRE(c.put(db + "/" + enc(held_intent), json{{"type", "signup"}, {"state", "rolled_back"}, {"name", held},
                                                   {"name_key", held}, {"email", held + "@example.org"}}).status == 201);
  REQUIRE(c.put(db + "/" + enc("name/" + held), json{{"type", "reservation"}, {"user", held}, {"intent", held_intent}}).status == 201);
  REQUIRE(create_user(held, {}).status / 100 == 2);
  auto d = f.ids->signup(signup_body(held, unique("other") + "@example.org"));
  CHECK(d.status == 409);
  CHECK(f.reservation("name/" + held).body.value("intent", "") == held_intent);

  // A reservation of a sign-up still running (pending): held.
  const std::string running = unique("running");
  const std::string running_intent = "signup/" + unique("intent");
  REQUIRE(c.put(db + "/" + enc(running_intent), json{{"type", "signup"}, {"state", "pending"}, {"name", running},
                                                      {"name_key", running}, {"email", running + "@example.org"}}).status == 201);
  REQUIRE(c.put(db + "/" + enc("name/" + running), json{{"type", "reservation"}, {"user", running}, {"intent", running_intent}}).status == 201);
  CHECK(f.ids->signup(signup_body(running, unique("other") + "@example.org")).status == 409);

  for (const auto& n : {late, gone, held}) {
    auto u = c.get("/_users/" + enc("org.couchdb.user:" + n));
    if (u.status == 200) c.del("/_users/" + enc("org.couchdb.user:" + n) + "?rev=" + u.body["_rev"].get<std::string>());
  }
}

TEST_CASE("reconciler: forgetting a rolled-back intent releases a reservation that landed after its rollback") {
  fixture f("ids-forget");
  couch c;
  const std::string db = "/" + enc(f.cfg.db);
  const auto old = f.stamp(1h);
  const std::string name = unique("late");
  const std::string email = name + "@example.org";
  const std::string intent = "signup/" + unique("intent");
  REQUIRE(c.put(db + "/" + enc(intent), json{{"type", "signup"}, {"state", "rolled_back"}, {"name", name},
                                              {"name_key", name}, {"email", email}, {"updated", old}}).status == 201);
  REQUIRE(c.put(db + "/" + enc("email/" + email), json{{"type", "reservation"}, {"user", name}, {"intent", intent}}).status == 201);
  // Another user's reservation of the same name (not this intent's): left alone.
  REQUIRE(c.put(db + "/" + enc("name/" + name), json{{"type", "reservation"}, {"user", name}}).status == 201);
  CHECK(f.ids->reconcile().forgotten == 0);  // young enough: kept
  CHECK(f.reservation("email/" + email).status == 200);
  f.clock_now += 25h;
  auto rep = f.ids->reconcile();
  CHECK(rep.failed == 0);
  CHECK(rep.forgotten == 1);
  CHECK(f.reservation(intent).status == 404);
  CHECK(f.reservation("email/" + email).status == 404);
  CHECK(f.reservation("name/" + name).status == 200);
}

TEST_CASE("reconciler: an address change that crashed after the user was written is finished; deleting the user frees the new address") {
  fixture f("ids-change-crash");
  couch c;
  const std::string db = "/" + enc(f.cfg.db);
  const std::string name = unique("mover");
  const std::string e0 = name + "@old.example.org";
  const std::string e1 = name + "@new.example.org";
  REQUIRE(f.ids->signup(signup_body(name, e0)).status == 201);
  // What change:after_user leaves: the intent reserved, the new address reserved by it, the user
  // carrying it; the old address and the name reservation's record not yet moved.
  const auto old = f.stamp(1h);
  const std::string intent = "change/" + unique("intent");
  REQUIRE(c.put(db + "/" + enc(intent), json{{"type", "change"}, {"state", "reserved"}, {"name", name}, {"email", e1},
                                              {"old_email", e0}, {"created", old}, {"updated", old}}).status == 201);
  REQUIRE(c.put(db + "/" + enc("email/" + e1), json{{"type", "reservation"}, {"field", "email"}, {"user", name},
                                                     {"intent", intent}}).status == 201);
  auto user = c.get("/_users/" + enc("org.couchdb.user:" + name));
  REQUIRE(user.status == 200);
  json doc = user.body;
  doc["email"] = e1;
  doc["couchgate_intent"] = intent;
  REQUIRE(c.put("/_users/" + enc("org.couchdb.user:" + name), doc).status == 201);
  CHECK(f.reservation("name/" + name).body.value("email", "") == e0);

  auto rep = f.ids->reconcile();
  CHECK(rep.failed == 0);
  CHECK(rep.finished == 1);
  CHECK(f.reservation(intent).body.value("state", "") == "done");
  CHECK(f.reservation("email/" + e0).status == 404);
  CHECK(f.reservation("name/" + name).body.value("email", "") == e1);

  // The user deleted: its name and its new address are free again.
  user = c.get("/_users/" + enc("org.couchdb.user:" + name));
  REQUIRE(c.del("/_users/" + enc("org.couchdb.user:" + name) + "?rev=" + user.body["_rev"].get<std::string>()).status == 200);
  CHECK(f.ids->release_deleted(name));
  CHECK(f.reservation("email/" + e1).status == 404);
  CHECK(f.reservation("name/" + name).status == 404);
}

TEST_CASE("changing an e-mail address: two users racing for one address, one wins; the old one is freed") {
  fixture f("ids-change");
  const std::string a = unique("chga"), b = unique("chgb");
  REQUIRE(f.ids->signup(signup_body(a, a + "@example.org")).status == 201);
  REQUIRE(f.ids->signup(signup_body(b, b + "@example.org")).status == 201);
  const std::string target = unique("both") + "@example.org";
  g::identity_answer ra, rb;
  std::thread ta([&] { ra = f.ids->change_email(a, json{{"email", target}}); });
  std::thread tb([&] { rb = f.ids->change_email(b, json{{"email", target}}); });
  ta.join();
  tb.join();
  CHECK(((ra.status == 200) != (rb.status == 200)));
  CHECK(((ra.status == 409) != (rb.status == 409)));
  const std::string winner = ra.status == 200 ? a : b, loser = ra.status == 200 ? b : a;
  CHECK(f.reservation("email/" + target).body.value("user", "") == winner);
  CHECK(f.reservation("email/" + winner + "@example.org").status == 404);  // freed
  CHECK(f.reservation("email/" + loser + "@example.org").body.value("user", "") == loser);
  const auto won = couch().get("/_users/" + enc("org.couchdb.user:" + winner));
  CHECK(won.body.value("email", "") == target);
  // The user names its change now, and still the sign-up that made it (a fork of that sign-up's
  // intent, seen later, is decided with the user as its own).
  CHECK(won.body.value("couchgate_intent", "").rfind("change/", 0) == 0);
  CHECK(won.body.value("couchgate_signup", "").rfind("signup/", 0) == 0);
  CHECK(couch().get("/_users/" + enc("org.couchdb.user:" + loser)).body.value("email", "") == loser + "@example.org");
  for (const auto& n : {a, b}) {
    auto u = couch().get("/_users/" + enc("org.couchdb.user:" + n));
    couch().del("/_users/" + enc("org.couchdb.user:" + n) + "?rev=" + u.body["_rev"].get<std::string>());
  }
}
